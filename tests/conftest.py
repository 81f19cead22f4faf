import pytest

from service import create_app
from service.config import Settings


@pytest.fixture
def app():
    """The app for tests that are not about authentication: AVH_CDS_AUTH=off, stated explicitly.

    Authentication is tested in tests/test_security*.py with an issuer file and generated keys.
    """
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}))


@pytest.fixture
def client(app):
    return app.test_client()
