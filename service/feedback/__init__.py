"""The store of issued cards and feedback entries (SQLite or PostgreSQL), and the reports drawn from it.

May import clinical (topics), ops (metrics) and the shared root modules; never api or fhir.
"""
