"""Fixtures of the web-app tests: the app in-process (TestClient) and a real server (uvicorn subprocess).

Both serve the session's tiny model (``tiny_model`` in tests/conftest.py) with small limits,
so any request the limits allow finishes in well under a second.
"""

from __future__ import annotations

import os
import signal

import pytest
from serve_helpers import SERVER_ARGS, TEST_LIMITS, ServerProcess

NEEDS = "the web app and its tests need fastapi, uvicorn, httpx and gradio: pip install 'unclip[serve]'"


@pytest.fixture(scope="session")
def served_pipe(tiny_model):
    from unclip import UnCLIP

    return UnCLIP.load(tiny_model)


@pytest.fixture(scope="session")
def api_app(served_pipe):
    """The JSON API in-process (no UI: the UI is driven by the browser tests against a real server)."""
    for module in ("fastapi", "httpx"):
        pytest.importorskip(module, reason=NEEDS)
    from unclip.apps.serve import Limits, create_app

    return create_app({"tiny": served_pipe}, workers=1, queue_size=2, limits=Limits(**TEST_LIMITS), ui=False)


@pytest.fixture(scope="session")
def client(api_app):
    from fastapi.testclient import TestClient

    with TestClient(api_app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def screenshot_mode() -> bool:
    return os.environ.get("UNCLIP_WRITE_SCREENSHOTS") == "1"


@pytest.fixture(scope="session")
def live_server(tiny_model, tmp_path_factory, screenshot_mode):
    """A real server (UI and API) shared by the load and browser tests; stopped with SIGINT at the
    end, which must exit 0 without a traceback (the clean Ctrl-C path).

    With ``UNCLIP_WRITE_SCREENSHOTS=1`` it serves the shipped ``shapes`` model instead, so that
    the screenshots in docs/app/ show recognisable pictures.
    """
    for module in ("fastapi", "uvicorn", "httpx", "gradio"):
        pytest.importorskip(module, reason=NEEDS)
    model = ["--model", "shapes"] if screenshot_mode else ["--model", f"tiny={tiny_model}"]
    extra = ["--max-steps", "25"] if screenshot_mode else SERVER_ARGS
    server = ServerProcess(
        model, [*extra, "--workers", "1", "--queue-size", "4"], tmp_path_factory.mktemp("serve") / "server.log"
    )
    yield server
    status = server.stop(signal.SIGINT)
    log = server.log()
    assert status == 0, log
    assert "Traceback" not in log, log
