"""The pathway as pure functions: FHIR resources -> PatientRecord -> Facts -> Decisions -> cards, and the
content it reads: the value sets and the card library (cards/, loaded once at start-up).

Imports nothing from api, fhir, feedback, security or ops; only the shared root helpers (lru, nesting, uuids),
and no I/O library (tests/test_architecture.py). Beyond loading its content, nothing here does I/O: read it top
to bottom beside pathway.md.
"""
