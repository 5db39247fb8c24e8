"""The JSON API through FastAPI's TestClient: every route, every limit, every refusal."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from PIL import Image
from serve_helpers import TEST_LIMITS, b64, png_bytes

STEPS = {"steps": 2}


def _image(data: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    assert im.format == "PNG"
    return im


def _refused(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert body["error"].startswith(f"{field}:"), body
    return body


# ----------------------------------------------------------------------------- routes


def test_health_and_models(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["models"] == ["tiny"]
    assert body["queues"]["tiny"]["workers"] == 1 and body["queues"]["tiny"]["queue_size"] == 2
    models = client.get("/api/models").json()
    assert models["default"] == "tiny"
    (m,) = models["models"]
    assert m["sizes"] == [16] and m["priors"] == ["diffusion", "text-embed", "none"] and m["context_length"] == 20
    assert models["limits"]["max_steps"] == TEST_LIMITS["max_steps"]


def test_generate_returns_seeded_pngs_and_a_manifest(client):
    body = {
        "prompts": ["a red circle", "a blue square"],
        "num_images": 2,
        "seed": 7,
        "prior": "text-embed",
        "size": 16,
        **STEPS,
    }
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(im["prompt"], im["seed"], im["index"]) for im in out["images"]] == [
        ("a red circle", 7, 0),
        ("a red circle", 7, 1),
        ("a blue square", 7, 0),
        ("a blue square", 7, 1),
    ]
    assert all(_image(im["png_base64"]).size == (16, 16) for im in out["images"])
    assert [im["file"] for im in out["manifest"]["images"]] == ["000.png", "001.png", "002.png", "003.png"]
    assert (
        out["manifest"]["model"] == "tiny"
        and out["settings"]["prior"] == "text-embed"
        and out["settings"]["steps"] == 2
    )
    again = client.post("/api/generate", json=body).json()  # same seed, same images
    assert [im["png_base64"] for im in again["images"]] == [im["png_base64"] for im in out["images"]]


def test_generate_defaults_cap_steps_at_the_limit(client):
    out = client.post("/api/generate", json={"prompts": ["a green star"]}).json()
    assert (
        out["settings"]["steps"] == TEST_LIMITS["max_steps"]
        and out["settings"]["prior_steps"] == TEST_LIMITS["max_steps"]
    )
    assert len(out["images"]) == 1


def test_vary_gives_the_reconstruction_and_the_latent(client):
    r = client.post(
        "/api/vary",
        json={"image": b64(png_bytes()), "eta": 0.5, "num_images": 3, "seed": 1, "return_latent": True, **STEPS},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == 3 and [e["eta"] for e in out["manifest"]["images"]] == [0.5] * 3
    assert _image(out["reconstruction"]["png_base64"]).size == (16, 16)
    latent = base64.b64decode(out["latents"]["latent"])
    import json
    import tempfile

    from safetensors import safe_open

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(latent)
        f.flush()
        with safe_open(f.name, framework="pt") as st:
            meta = json.loads(st.metadata()["unclip"])
            assert set(st.keys()) == {"image_embed", "noise"}
    assert meta["model"] == "tiny" and meta["steps"] == 2  # the served name, never the server's path
    assert "latents" not in client.post("/api/vary", json={"image": b64(png_bytes()), "num_images": 1, **STEPS}).json()


def test_vary_accepts_jpeg_and_data_urls(client):
    jpeg = png_bytes(fmt="JPEG")
    r = client.post("/api/vary", json={"image": "data:image/jpeg;base64," + b64(jpeg), "num_images": 1, **STEPS})
    assert r.status_code == 200, r.text


def test_interpolate_both_noise_paths(client):
    a, b = b64(png_bytes((200, 30, 30))), b64(png_bytes((30, 30, 200)))
    for noise, latents in (("slerp", {"latent_a", "latent_b"}), ("fixed", set())):
        r = client.post(
            "/api/interpolate",
            json={"image_a": a, "image_b": b, "frames": 3, "noise": noise, "return_latent": True, **STEPS},
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert [e["theta"] for e in out["manifest"]["images"]] == [0.0, 0.5, 1.0]
        assert set(out["latents"]) == latents


def test_textdiff_and_invert(client):
    img = b64(png_bytes())
    r = client.post(
        "/api/textdiff",
        json={
            "image": img,
            "from_text": "a red square",
            "to_text": "a blue square",
            "max_theta": 0.4,
            "frames": 3,
            **STEPS,
        },
    )
    assert r.status_code == 200, r.text
    assert [e["theta"] for e in r.json()["manifest"]["images"]] == [0.0, 0.2, 0.4]
    r = client.post("/api/invert", json={"image": img, **STEPS})
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out["psnr_db"], float) and "latent" in out["latents"] and len(out["images"]) == 1


def test_openapi_lists_every_route(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {
        "/api/health",
        "/api/models",
        "/api/generate",
        "/api/vary",
        "/api/interpolate",
        "/api/textdiff",
        "/api/invert",
    } <= set(paths)
    assert (
        "prompts"
        in paths["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )


# ----------------------------------------------------------------------------- limits and refusals


@pytest.mark.parametrize(
    "body,field",
    [
        ({"prompts": ["a red circle"], "num_images": 5}, "num_images"),
        ({"prompts": ["a red circle"] * 2, "num_images": 3}, "num_images"),  # 6 images > 4
        ({"prompts": ["a red circle"] * 5}, "prompts"),
        ({"prompts": []}, "prompts"),
        ({"prompts": ["  "]}, "prompts[0]"),
        ({"prompts": ["a red circle", "word " * 19]}, "prompts[1]"),  # 19 words > the context's 18
        ({"prompts": ["x" * 1001]}, "prompts[0]"),
        ({"prompts": ["a"], "steps": 4}, "steps"),
        ({"prompts": ["a"], "steps": 0}, "steps"),
        ({"prompts": ["a"], "prior_steps": 99}, "prior_steps"),
        ({"prompts": ["a"], "seed": -1}, "seed"),
        ({"prompts": ["a"], "seed": 2**64}, "seed"),
        ({"prompts": ["a"], "decoder_guidance": 21.0}, "decoder_guidance"),
        ({"prompts": ["a"], "prior": "magic"}, "prior"),
        ({"prompts": ["a"], "prior": "ar"}, "prior"),  # a real mode this model lacks
        ({"prompts": ["a"], "size": 64}, "size"),
        ({"prompts": ["a"], "model": "other"}, "model"),
        ({"prompts": ["a"], "model": "../../etc"}, "model"),
        ({"prompts": ["a"], "num_images": "2"}, "num_images"),  # strict types: no silent coercion
        ({"prompts": ["a"], "num_images": 2.0}, "num_images"),
        ({"prompts": "a red circle"}, "prompts"),
        ({"prompts": ["a"], "path": "/etc/passwd"}, "path"),  # unknown fields refused
        ({}, "prompts"),
    ],
)
def test_generate_limits(client, body, field):
    _refused(client.post("/api/generate", json=body), 400, field)


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("vary", {"num_images": 5}, "num_images"),
        ("vary", {"eta": 2.5}, "eta"),
        ("vary", {"eta": -0.1}, "eta"),
        ("vary", {"steps": 4}, "steps"),
        ("vary", {"guidance": 1e9}, "guidance"),
        ("vary", {"size": 32}, "size"),
        ("interpolate", {"frames": 5}, "frames"),
        ("interpolate", {"frames": 1}, "frames"),
        ("interpolate", {"noise": "perlin"}, "noise"),
        ("textdiff", {"frames": 9}, "frames"),
        ("textdiff", {"max_theta": 1.5}, "max_theta"),
        ("textdiff", {"to_text": ""}, "to_text"),
        ("textdiff", {"from_text": "word " * 30}, "from_text"),
        ("invert", {"steps": 1000}, "steps"),
    ],
)
def test_manipulation_limits(client, route, body, field):
    img = b64(png_bytes())
    base = {
        "vary": {"image": img},
        "interpolate": {"image_a": img, "image_b": img},
        "textdiff": {"image": img, "to_text": "a blue circle"},
        "invert": {"image": img},
    }[route]
    _refused(client.post(f"/api/{route}", json={**base, **body}), 400, field)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(
    "data,status,why",
    [
        (b64(_gif()), 400, "GIF is not PNG or JPEG"),
        (b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 400, "not an image"),
        (b64(b"%PDF-1.4 not an image"), 400, "not an image"),
        (b64(png_bytes()[:60]), 400, "truncated PNG"),
        ("not base64!!", 400, "bad base64"),
        ("", 400, "empty"),
        ("data:image/png,rawtext", 400, "data URL not base64"),
        (b64(png_bytes(size=(257, 256))), 413, "too many pixels"),
        (b64(b"\x89PNG" + b"0" * (64 * 1024)), 413, "too many bytes"),
    ],
)
def test_image_type_and_size(client, data, status, why):
    _refused(client.post("/api/vary", json={"image": data}), status, "image")


def test_pixel_limit_reads_the_header_only(client):
    """A 'decompression bomb' (tiny file, huge declared size) is refused by its header, as 413."""
    big = Image.new("1", (4000, 4000))  # a 1-bit image: compresses to a few kB
    buf = io.BytesIO()
    big.save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < TEST_LIMITS["max_upload_bytes"]
    body = _refused(client.post("/api/invert", json={"image": b64(buf.getvalue())}), 413, "image")
    assert "4000x4000" in body["error"]


def test_second_image_is_named(client):
    _refused(
        client.post("/api/interpolate", json={"image_a": b64(png_bytes()), "image_b": b64(_gif())}), 400, "image_b"
    )


def test_body_size_content_type_and_json(client, api_app):
    limit = api_app.state.limits.max_body_bytes
    _refused(
        client.post("/api/vary", content=b"{" + b" " * limit + b"}", headers={"content-type": "application/json"}),
        413,
        "body",
    )
    _refused(
        client.post("/api/generate", content=b'{"prompts": ["a"]}', headers={"content-type": "text/plain"}),
        415,
        "content-type",
    )
    _refused(client.post("/api/generate", content=b"{nope", headers={"content-type": "application/json"}), 400, "body")
    _refused(client.post("/api/generate", json=[1, 2]), 400, "body")
    assert client.get("/api/generate").status_code == 405
    assert client.post("/api/nothing", json={}).status_code == 404


def test_queue_full_is_refused_at_once_with_retry_after(client, api_app):
    """Fill the model's one worker and its queue of 2 with blocked jobs: the next request gets 503
    with a Retry-After hint at once; once they finish the server serves again."""
    pool = api_app.state.registry.models["tiny"].pool
    release = threading.Event()
    blockers = [pool.submit(release.wait, 30)]
    try:
        for _ in range(500):  # until the worker has taken the first blocker off the queue
            if pool.stats()["running"] == 1:
                break
            time.sleep(0.01)
        blockers += [pool.submit(release.wait, 30) for _ in range(2)]
        assert (pool.stats()["running"], pool.stats()["waiting"]) == (1, 2)
        r = client.post("/api/generate", json={"prompts": ["a red circle"], **STEPS})
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_s"] == int(r.headers["retry-after"])
        assert "full" in r.json()["error"]
        assert client.get("/api/health").json()["queues"]["tiny"]["waiting"] == 2  # health still answers
    finally:
        release.set()
    assert all(f.result(timeout=30) for f in blockers)
    assert client.post("/api/generate", json={"prompts": ["a red circle"], **STEPS}).status_code == 200


def test_unexpected_errors_are_500_without_internals(client, api_app, monkeypatch):
    from unclip.apps.serve import jobs

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /srv/models")

    monkeypatch.setitem(jobs.RUNNERS, "generate", boom)
    r = client.post("/api/generate", json={"prompts": ["a red circle"], **STEPS})
    assert r.status_code == 500 and "secret" not in r.text and r.json()["field"] is None


def test_trusted_hosts(served_pipe):
    from fastapi.testclient import TestClient

    from unclip.apps.serve import create_app
    from unclip.apps.serve.server import allowed_hosts_for

    app = create_app({"tiny": served_pipe}, ui=False, allowed_hosts=allowed_hosts_for("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:7860") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"host": "evil.example:7860"}).status_code == 400  # DNS rebinding
    assert allowed_hosts_for("0.0.0.0") is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(client, literal):
    raw = f'{{"prompts": ["a red circle"], "decoder_guidance": {literal}}}'.encode()
    response = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    _refused(response, 400, "decoder_guidance")


def test_steps_are_capped_by_the_models_timesteps(served_pipe):
    """Beyond the server's limit, steps cannot exceed the model's diffusion timesteps (100 for the
    tiny model; fewer for inversions, which stop at alpha-bar 2e-3): refused up front, naming the field."""
    from fastapi.testclient import TestClient

    from unclip.apps.serve import Limits, create_app

    app = create_app({"tiny": served_pipe}, limits=Limits(max_steps=1000), ui=False)
    with TestClient(app) as c:
        (m,) = c.get("/api/models").json()["models"]
        assert m["max_decoder_steps"] == 100 and m["max_prior_steps"] == 100 and 90 < m["max_manipulation_steps"] < 100
        for field in ("steps", "prior_steps"):
            body = _refused(c.post("/api/generate", json={"prompts": ["a"], field: 101}), 400, field)
            assert "timesteps" in body["error"]
        body = {"image": b64(png_bytes()), "steps": m["max_manipulation_steps"] + 1}
        _refused(c.post("/api/invert", json=body), 400, "steps")
