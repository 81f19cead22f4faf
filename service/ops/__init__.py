"""Operations: liveness and readiness probes, and the Prometheus metrics.

Imports nothing of service/ but the shared root modules (today none); fhir, security, api and the app import it
(clinical never does). Layers: docs/architecture.md, held by tests/test_architecture.py.
"""
