"""Property-based tests (Hypothesis): random and malformed JSON bodies and command lines get a
clear error, never a traceback or an HTTP 500.

Bounded and fast: a few dozen examples each, no example database written to the tree, and
the small test limits keep any body that happens to be valid to a fraction of a second.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from serve_helpers import b64, png_bytes  # noqa: E402

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ROUTES = ["generate", "vary", "interpolate", "textdiff", "invert"]
PNG = b64(png_bytes())

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# values aimed at the real fields: near the limits, wrong types, odd strings and images
field_values = (
    json_values
    | st.integers(-3, 10)
    | st.sampled_from(
        [
            "diffusion",
            "ar",
            "text-embed",
            "none",
            "slerp",
            "fixed",
            "tiny",
            "",
            "a red circle",
            PNG,
            "data:image/png;base64," + PNG,
            b64(b"GIF89a"),
            "/etc/passwd",
            "../model",
        ]
    )
    | st.lists(st.sampled_from(["a red circle", "", "word " * 25, "\u00e9\u00e8 \u2603", "x" * 1001]), max_size=6)
)
VALID = {
    "generate": {"prompts": ["a red circle"], "num_images": 1, "steps": 1, "prior_steps": 1},
    "vary": {"image": PNG, "num_images": 1, "steps": 1},
    "interpolate": {"image_a": PNG, "image_b": PNG, "frames": 2, "steps": 1},
    "textdiff": {"image": PNG, "to_text": "a blue circle", "frames": 2, "steps": 1},
    "invert": {"image": PNG, "steps": 1},
}
FIELDS = sorted(
    {k for body in VALID.values() for k in body}
    | {
        "model",
        "seed",
        "prior",
        "size",
        "eta",
        "noise",
        "from_text",
        "max_theta",
        "guidance",
        "decoder_guidance",
        "return_latent",
        "prompts",
    }
)


def _post(client, route: str, body) -> object:
    """POST ``body`` as JSON text; non-finite floats go out as Python writes them (NaN, Infinity)."""
    return client.post(f"/api/{route}", content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def _check(response) -> None:
    assert response.status_code in (200, 400, 413, 415, 503), (response.status_code, response.text[:500])
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body["error"], str) and body["error"] and "Traceback" not in body["error"]
        assert body["field"] is None or body["error"].startswith(f"{body['field']}:")


@FAST
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_any_json_body_is_answered_cleanly(client, route, body):
    _check(_post(client, route, body))


@FAST
@given(route=st.sampled_from(ROUTES), data=st.data())
def test_mutated_valid_bodies_are_answered_cleanly(client, route, data):
    body = dict(VALID[route])
    for key in data.draw(st.lists(st.sampled_from(FIELDS), max_size=3), label="changed"):
        body[key] = data.draw(field_values, label=key)
    for key in data.draw(st.lists(st.sampled_from(sorted(body)), max_size=1), label="dropped"):
        body.pop(key, None)
    _check(_post(client, route, body))


@settings(max_examples=25, deadline=None, database=None)
@given(
    route=st.sampled_from(ROUTES),
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
)
def test_raw_bytes_are_answered_cleanly(client, route, raw, ctype):
    _check(client.post(f"/api/{route}", content=raw, headers={"content-type": ctype} if ctype else {}))


# ----------------------------------------------------------------------------- the command line

SERVE_FLAGS = [
    "--model",
    "--host",
    "--port",
    "--device",
    "--workers",
    "--queue-size",
    "--max-images",
    "--max-steps",
    "--max-frames",
    "--max-upload-mb",
    "--max-pixels",
    "--shutdown-timeout",
    "--no-ui",
    "-h",
    "--bogus",
]
ARG_VALUES = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "7860",
        "65536",
        "99999999999",
        "1e3",
        "nan",
        "inf",
        "0.5",
        "",
        "x",
        "tiny",
        "a=b",
        "bad name=/x",
        "=",
        "shapes",
        "127.0.0.1",
        "::1",
        "-",
        "--",
    ]
) | st.text(max_size=8)


@contextlib.contextmanager
def _captured():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield err


def _run_cli(argv: list[str]) -> tuple[int, str]:
    """``unclip.apps.cli.main.main(argv)`` -> (exit status, stderr); any exception but SystemExit fails the test."""
    from unclip.apps.cli.main import main

    with _captured() as err:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: 2 for a usage error, 0 for -h
            status = exc.code if isinstance(exc.code, int) else 1
    return status, err.getvalue()


@pytest.fixture
def no_server(monkeypatch):
    """Stand-ins for the parts of `unclip serve` that would load models, bind a port and run."""
    from unclip.apps import serve as serve_pkg
    from unclip.apps.serve import server

    calls = []
    monkeypatch.setattr(server, "check_port", lambda host, port: None)
    monkeypatch.setattr(server, "load_models", lambda specs, device="cpu": {name: object() for name in specs})
    monkeypatch.setattr(serve_pkg, "create_app", lambda models, **kw: calls.append((models, kw)) or "app")
    monkeypatch.setattr(server, "serve", lambda app, host, port, **kw: calls.append((host, port, kw)) or 0)
    return calls


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.sampled_from(SERVE_FLAGS) | ARG_VALUES, max_size=8))
def test_serve_arguments_never_traceback(no_server, args):
    status, err = _run_cli(["serve", *args])
    assert status in (0, 1, 2), (args, status, err)
    assert "Traceback" not in err, err
    if status != 0:
        assert err.strip(), f"exit {status} without a message for {args}"


def test_serve_arguments_reach_the_app(no_server):
    status, err = _run_cli(
        [
            "serve",
            "--model",
            "a=/m/one",
            "--model",
            "b=/m/two",
            "--port",
            "0",
            "--workers",
            "2",
            "--queue-size",
            "3",
            "--max-images",
            "5",
            "--max-upload-mb",
            "0.5",
            "--no-ui",
        ]
    )
    assert status == 0, err
    (models, kw), (host, port, _) = no_server
    assert list(models) == ["a", "b"] and kw["workers"] == 2 and kw["queue_size"] == 3 and kw["ui"] is False
    assert kw["limits"].max_images == 5 and kw["limits"].max_upload_bytes == 2**19 and kw["allowed_hosts"] is not None
    assert (host, port) == ("127.0.0.1", 0)  # loopback unless told otherwise


def test_serve_refuses_a_busy_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        status, err = _run_cli(["serve", "--model", "/nonexistent/model", "--port", str(s.getsockname()[1])])
    assert status == 1 and "--port" in err and "Traceback" not in err


OTHER = {
    "generate": (
        ["PROMPT"],
        ["-n", "--seed", "--prior", "--size", "--steps", "--prior-guidance", "--decoder", "--best-of"],
    ),
    "vary": (["IMAGE"], ["--eta", "-n", "--seed", "--steps", "--guidance", "--refine", "--size"]),
    "interpolate": (["A", "B"], ["--frames", "--noise", "--seed", "--steps", "--size"]),
    "textdiff": (["IMAGE"], ["--from", "--to", "--max-theta", "--frames", "--steps"]),
    "invert": (["IMAGE"], ["--steps", "--guidance", "--reconstruct", "--size"]),
}


@settings(max_examples=40, deadline=None, database=None)
@given(command=st.sampled_from(sorted(OTHER)), data=st.data())
def test_other_commands_argument_errors_never_traceback(command, data, tmp_path_factory):
    """Random arguments to model commands, with a model that does not exist: a usage error (2) or a
    message naming the model (1), never a traceback, and nothing is written."""
    positional, flags = OTHER[command]
    args = data.draw(
        st.lists(st.sampled_from(flags + ["-h", "--bogus"]) | ARG_VALUES | st.sampled_from(positional), max_size=7)
    )
    out = tmp_path_factory.mktemp("cli") / "out"
    status, err = _run_cli([command, *args, "--model", "/nonexistent/unclip-model", "--out", str(out)])
    assert status in (0, 1, 2) and "Traceback" not in err, (args, err)
    if status == 1:
        assert "/nonexistent/unclip-model" in err or "error:" in err
    assert not out.exists()


def test_json_fixture_is_valid():
    """The property tests' starting bodies are themselves accepted (else they would test nothing)."""
    for route, body in VALID.items():
        json.dumps(body)
        assert set(body) <= set(FIELDS)
