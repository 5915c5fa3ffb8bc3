import pytest

from tests.conftest import start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model_ready):
    """One real server for the API tests, with a small upload limit to test 413."""
    srv = start_server(tmp_path_factory.mktemp("api") / "data", "--max-upload-bytes", "300000")
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return server.client()
