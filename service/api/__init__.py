"""The CDS Hooks face: routes, the hook services and their registry, the engine (the pathway wired to one hook
call, remembering charts seen), order-hook evaluation, the answer, the human-readable pages, the access line and
the request/response JSON schemas.

May import every lower home (fhir, feedback, security, clinical, ops) and the shared root modules; never the app
(create_app, cli, wsgi). Layers: docs/architecture.md, held by tests/test_architecture.py.
"""
