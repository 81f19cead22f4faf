import pytest

from service import create_app
from service.config import Settings


@pytest.fixture
def app(tmp_path):
    return create_app(Settings.from_env({"AVH_CDS_AUTH": "off"}, sqlite_path=tmp_path / "avh-cds.sqlite3"))


@pytest.fixture
def client(app):
    return app.test_client()
