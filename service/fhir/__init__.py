"""Getting the patient's data: prefetch resolution, FHIR search, the fixture endpoint and fixtures, the
loader and replay tools, and fault injection for tests.

May import clinical (to know what the pathway reads), ops (metrics) and the shared root modules; never api.
"""
