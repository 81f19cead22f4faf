import pytest

from service import create_app
from service.config import Settings


@pytest.fixture
def app():
    return create_app(Settings.from_env({}))


@pytest.fixture
def client(app):
    return app.test_client()
