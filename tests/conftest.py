import os

import pytest

from service import create_app
from service.config import Settings


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory(tmp_path_factory):
    """An app built with default settings keeps its SQLite feedback store in the working directory
    (./avh-cds.sqlite3): run the tests elsewhere, so no test run leaves a database in the tree."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture
def app(tmp_path):
    """The app for tests that are not about authentication: AVH_CDS_AUTH=off, stated explicitly.

    Authentication is tested in tests/test_security*.py with an issuer file and generated keys.
    """
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "avh-cds.sqlite3"))


@pytest.fixture
def client(app):
    return app.test_client()


from tests.browser import browser, page  # noqa: E402,F401  (fixtures for the headless-browser page tests)
