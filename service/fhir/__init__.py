"""Getting the patient's data: prefetch resolution, FHIR search, the fixture endpoint and fixtures, the
loader and replay tools, and fault injection for tests.

May import clinical (record.subject_id), ops (metrics) and the shared root modules (config); never api, feedback,
security or the app (the CLI hands replay the app it calls). Layers: docs/architecture.md.
"""
