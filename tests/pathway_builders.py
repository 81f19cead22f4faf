"""Moved to tests/fhir_records.py; kept until the tests of pathway v2 import from there (then deleted)."""
from tests.fhir_records import *  # noqa: F401,F403
