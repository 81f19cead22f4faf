"""The store of issued cards and feedback entries (SQLite or PostgreSQL), and the reports drawn from it.

May import clinical, ops and the shared root modules (today it uses errors only); never api, fhir, security or
the app. Layers: docs/architecture.md, held by tests/test_architecture.py.
"""
