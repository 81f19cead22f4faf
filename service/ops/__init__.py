"""Operations: liveness and readiness probes, and the Prometheus metrics.

Imports only the shared root modules (config, errors); every other home may import it.
"""
