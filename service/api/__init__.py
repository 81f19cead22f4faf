"""The CDS Hooks face: routes, the hook services and their registry, order-hook evaluation, the answer,
the human-readable pages, the access line and the request/response JSON schemas.

May import every other home (clinical, fhir, feedback, security, ops) and the shared root modules.
"""
