"""The pathway as pure functions: FHIR resources -> PatientRecord -> Facts -> Decisions.

Nothing in this package does I/O; it can be read top to bottom beside pathway.md and the seed.
"""
