import os
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from service import create_app
from service.config import Settings
from service.feedback.store import database_url

class ClosingClient(FlaskClient):
    """Flask's test client, each answer's body read and the answer closed before it is returned, as a WSGI server
    does (PEP 3333: close() once the last byte is written). Flask's own leaves it open unless asked (werkzeug's
    `buffered=False`), and the app's bookkeeping after the answer (service/api/aftersend.py: the access line, the
    request histogram, the card counters, the issued cards) would not have run when a test reads it."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)


Flask.test_client_class = ClosingClient      # every app's test_client() in the suite

POSTGRES_URL = os.environ.get("AVH_CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/avh_orders")


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory(tmp_path_factory):
    """An app built with default settings keeps its SQLite feedback store in the working directory
    (./avh-cds.sqlite3): run the tests elsewhere, so no test run leaves a database in the tree."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="session")
def postgres_url():
    """A database of this test session's own on the real server, dropped at the end.

    Its own, so that two test runs on one server (two developers, or CI beside a developer) never see
    each other's rows. No server is a failure, not a skip.
    """
    info = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"))
    name = f"{info.get('dbname', 'avh_orders')}_{os.getpid()}"
    admin_info = {**info, "dbname": "postgres"}
    try:
        with psycopg.connect(**admin_info, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL for the storage tests is not reachable at {info.get('host')}:{info.get('port', 5432)} "
                    f"({type(exc).__name__}: {str(exc).strip()[:200]}). Start it, or point AVH_CDS_TEST_POSTGRES_URL "
                    "at one (CI starts PostgreSQL before the tests).", pytrace=False)
    yield database_url(make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), Path())
    with psycopg.connect(**admin_info, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
