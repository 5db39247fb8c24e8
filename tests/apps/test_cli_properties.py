"""Property-based tests (Hypothesis) of every ``unclip`` command: success or a clean error, never a traceback.

Each test draws command lines (numbers of every sign and size, NaN, inf, unicode, very
long strings, ``--out`` paths that are new, existing files, foreign or earlier-output
folders, unwritable or unnamable) or corrupt inputs (model folders, training states,
latents), runs them through ``unclip.apps.cli.main`` and checks the contract of issue 18:
exit 0, or exit 1/2 with an ``error:`` line; and that no input or user file changed.

Cheap commands run for real on the session's tiny model (1-2 sampling steps). The
expensive ones (training, bench, report, demo, eval) run their argument parsing and
pre-flight checks for real, with the long library call replaced by a stub that checks
the values it is handed are finite and in range; their own tests run them for real.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from cli_fuzz import LIMITS, assert_clean, digest, floats_text, numbers, run_cli, texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

# CI: a fixed, bounded set of examples (about a minute in all). Set UNCLIP_FUZZ_EXAMPLES=N for a longer,
# randomised search on a workstation.
_STRESS = int(os.environ.get("UNCLIP_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=_STRESS or 30,
    deadline=None,
    derandomize=not _STRESS,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """Inputs shared by the examples: the model, an image, a latent, a user's folder and file, an earlier output set."""
    root = tmp_path_factory.mktemp("cli_props")
    image = root / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image)
    latent = root / "photo.safetensors"
    status, err = run_cli(["invert", str(image), "--model", tiny_model, "--steps", "2", "--out", str(latent)])
    assert status == 0, err
    user = root / "user_folder"
    user.mkdir()
    (user / "000.png").write_bytes(b"my own picture")
    user_file = root / "notes.png"
    user_file.write_bytes(b"my notes")
    return {
        "root": root,
        "model": tiny_model,
        "image": str(image),
        "latent": str(latent),
        "user": user,
        "file": user_file,
    }


def _out(world, kind: str) -> str:
    root = Path(world["root"])
    if kind == "new":
        return str(root / f"out-{uuid.uuid4().hex[:8]}")
    if kind == "nested":
        return str(root / f"deep-{uuid.uuid4().hex[:8]}" / "a" / "b")
    if kind == "file":
        return str(world["file"])
    if kind == "foreign":
        return str(world["user"])
    if kind == "input":
        return world["image"]
    if kind == "unwritable":
        return "/proc/unclip-cannot-write-here"
    if kind == "under_file":
        return str(world["file"] / "sub")
    if kind == "long":
        return str(root / ("x" * 300))
    if kind == "nul":
        return str(root / "a\x00b")
    if kind == "unicode":
        return str(root / f"ü∂ñ-{uuid.uuid4().hex[:6]}")
    return ""


OUT_KINDS = st.sampled_from(
    ["new", "new", "nested", "file", "foreign", "input", "unwritable", "under_file", "long", "nul", "unicode", "empty"]
)
SAMPLE = ["--steps", "1"]


def _commands(world) -> dict[str, tuple[list[str], dict[str, st.SearchStrategy[str]]]]:
    """Per command: a cheap valid base command line and the options to fuzz with their strategies."""
    m, img, lat = world["model"], world["image"], world["latent"]
    common = {
        "--model": st.sampled_from([m, "shapes-nope", "", str(world["file"])]),
        "--device": st.sampled_from(["cpu", "banana", "cuda", "cuda:7", "", "meta"]),
    }
    return {
        "generate": (
            ["generate", "a red circle", "--model", m, "-n", "1", "--prior-steps", "1", *SAMPLE],
            {
                "-n": numbers(2, LIMITS["images"]),
                "--seed": numbers(2**70, 2**63),
                "--steps": numbers(2, LIMITS["steps"]),
                "--prior-steps": numbers(2, LIMITS["steps"]),
                "--best-of": numbers(2, LIMITS["best_of"]),
                "--size": numbers(16, LIMITS["size"]),
                "--prior-guidance": floats_text(),
                "--decoder-guidance": floats_text(),
                "--upsampler-steps": numbers(2, LIMITS["steps"]),
                "--prior": st.sampled_from(["ar", "none", "text-embed", "x"]),
                "--decoder": st.sampled_from(["decoder_text_only", "decoder"]),
                **common,
            },
        ),
        "vary": (
            ["vary", img, "--model", m, "-n", "1", *SAMPLE],
            {
                "--eta": floats_text(),
                "-n": numbers(2, LIMITS["images"]),
                "--seed": numbers(2**70, 2**63),
                "--steps": numbers(2, LIMITS["steps"]),
                "--guidance": floats_text(),
                "--refine": numbers(1, LIMITS["refine"]),
                "--size": numbers(16, LIMITS["size"]),
                **common,
            },
        ),
        "interpolate": (
            ["interpolate", img, lat, "--model", m, "--frames", "2", *SAMPLE],
            {
                "--frames": numbers(3, LIMITS["frames"]),
                "--noise": st.sampled_from(["fixed", "slerp", "?"]),
                "--seed": numbers(2**70, 2**63),
                "--guidance": floats_text(),
                **common,
            },
        ),
        "textdiff": (
            [
                "textdiff",
                lat,
                "--from",
                "a red circle",
                "--to",
                "a blue square",
                "--model",
                m,
                "--frames",
                "2",
                *SAMPLE,
            ],
            {
                "--max-theta": floats_text(),
                "--frames": numbers(3, LIMITS["frames"]),
                "--from": texts(),
                "--to": texts(),
                **common,
            },
        ),
        "invert": (
            ["invert", img, "--model", m, *SAMPLE],
            {
                "--steps": numbers(2, LIMITS["steps"]),
                "--refine": numbers(1, LIMITS["refine"]),
                "--size": numbers(16, LIMITS["size"]),
                **common,
            },
        ),
        "probe-pca": (
            ["probe-pca", img, "--model", m, "--fit-n", "40", "--dims", "2", "--steps", "1"],
            {
                "--dims": st.one_of(texts(), st.sampled_from(["2,4", "0", "-1", "1000000", "2,,4", "nan"])),
                "--fit-n": numbers(40, LIMITS["fit_n"]),
                "--split": st.sampled_from(["val", "nope"]),
                **common,
            },
        ),
        "data shards": (
            ["data", "shards", "shapes", "-n", "3", "--size", "16", "--shard-size", "2"],
            {
                "-n": numbers(3, LIMITS["samples"]),
                "--shard-size": numbers(3, LIMITS["samples"]),
                "--size": numbers(16, LIMITS["size"]),
                "--seed": numbers(2**70, 2**63),
            },
        ),
        "embed": (
            ["embed", "shapes", "--clip", m, "-n", "3", "--no-progress"],
            {
                "-n": numbers(3, LIMITS["samples"]),
                "--batch-size": numbers(3, LIMITS["batch_size"]),
                "--part-size": numbers(3, LIMITS["samples"]),
                "--clip": st.sampled_from(["", "open_clip:x", "hf:/nope", img]),
                "--device": common["--device"],
            },
        ),
        "data": (
            ["data", "shapes", "-n", "2", "--size", "16"],
            {
                "-n": numbers(2, LIMITS["samples"]),
                "--size": numbers(16, LIMITS["size"]),
                "--seed": numbers(2**70, 2**63),
                "--split": st.sampled_from(["val", "x"]),
            },
        ),
    }


def _apply(base: list[str], options: dict[str, str]) -> list[str]:
    argv = list(base)
    for flag, value in options.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


@st.composite
def command_lines(draw, world):
    commands = _commands(world)
    name = draw(st.sampled_from(sorted(commands)))
    base, fuzz = commands[name]
    flags = draw(st.lists(st.sampled_from(sorted(fuzz)), max_size=3, unique=True))
    options = {f: draw(fuzz[f]) for f in flags}
    kind = draw(OUT_KINDS)
    flag = "--out"
    return (
        name,
        _apply(base, options)
        + [flag, _out(world, kind) if not (name == "invert" and kind == "new") else _out(world, kind) + ".safetensors"],
        kind,
    )


def _protected(world) -> dict[str, str]:
    """Digests of the inputs and user files, and the working directory's listing (nothing may land there)."""
    # the user's own files; commands that add to a folder (data shards, embed) may write beside them
    found = {str(p): digest(p) for p in (world["image"], world["latent"], world["user"] / "000.png", world["file"])}
    return {**found, "cwd": "\n".join(sorted(os.listdir(".")))}


@SETTINGS
@given(data=st.data())
def test_sampling_commands_end_in_success_or_a_clean_error(world, data):
    before = _protected(world)
    name, argv, kind = data.draw(command_lines(world))
    status, err = run_cli(argv)
    assert_clean(status, err, argv)
    assert _protected(world) == before, f"an input or a user's file changed: {argv}"
    additive = name in ("data shards", "embed")  # they add their own files to a folder, keeping what is there
    if kind in ("file", "input", "unwritable", "under_file", "nul", "empty") or (kind == "foreign" and not additive):
        assert status != 0, argv


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _stub(return_value):
    """A stand-in for a long library call: every number it receives must be finite."""

    def fake(*args, **kwargs):
        for v in [*args, *kwargs.values()]:
            assert _finite(v), (args, kwargs)
            if isinstance(v, int) and not isinstance(v, bool):
                assert -(2**63) <= v < 2**63, (args, kwargs)
        return return_value

    return fake


@SETTINGS
@given(
    command=st.sampled_from(["train", "bench", "report", "demo", "eval"]),
    stage=st.sampled_from(["all", "clip", "prior", "decoder", "ar-prior", "upsampler", "bogus"]),
    flags=st.dictionaries(
        st.sampled_from(
            [
                "--steps",
                "--seed",
                "--batch-size",
                "--time-limit",
                "--low-res",
                "--high-res",
                "--threads",
                "-n",
                "--seeds",
                "--guidance",
                "--size",
                "--preset",
                "--device",
            ]
        ),
        st.one_of(numbers(), floats_text()),
        max_size=3,
    ),
    extra=st.lists(
        st.sampled_from(["--resume", "--overwrite", "--quick", "--json", "--text-only"]), max_size=2, unique=True
    ),
    kind=OUT_KINDS,
)
def test_long_commands_parse_and_check_cleanly(world, command, stage, flags, extra, kind):
    allowed = {
        "train": {
            "--steps",
            "--seed",
            "--batch-size",
            "--time-limit",
            "--low-res",
            "--high-res",
            "--preset",
            "--device",
            "--resume",
            "--overwrite",
            "--text-only",
        },
        "bench": {"--threads", "--device", "--quick", "--json"},
        "report": {"--seed", "--device", "--quick"},
        "demo": {"--seed", "-n", "--size", "--device"},
        "eval": {"--seeds", "--guidance", "--size", "--device", "--json"},
    }[command]
    argv = [command] + ([stage] if command == "train" else [])
    argv += [x for k, v in flags.items() if k in allowed for x in (k, v)] + [e for e in extra if e in allowed]
    before = _protected(world)
    if command != "bench":
        argv += ["--out", _out(world, kind)]
    with ExitStack() as stack:
        for target, value in [
            ("unclip.train.components.train_all", {}),
            ("unclip.train.components.train_component", {}),
            ("unclip.apps.bench_efficiency.run_bench_command", 0),
            ("unclip.apps.report.run_report", Path("x")),
            ("unclip.apps.demo.run_demo", Path("x")),
            ("unclip.eval.text_to_image.evaluate_model", {}),
        ]:
            stack.enter_context(mock.patch(target, _stub(value)))
        status, err = run_cli(argv)
    assert_clean(status, err, argv)
    assert _protected(world) == before, argv


# ----------------------------------------------------------------------------- corrupt model folders

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


@SETTINGS
@given(
    target=st.sampled_from(
        [
            "model.json",
            "clip/config.json",
            "decoder/config.json",
            "prior_diffusion/config.json",
            "decoder/weights.safetensors",
            "clip/weights.safetensors",
            "prior_diffusion/weights.safetensors",
        ]
    ),
    mutation=st.sampled_from(["json", "field", "flip", "truncate", "delete", "nan", "dir"]),
    value=JSON_VALUES,
    where=st.floats(min_value=0, max_value=1),
)
def test_corrupt_model_folders_are_clean_errors(world, target, mutation, value, where):
    model = Path(tempfile.mkdtemp(dir=world["root"])) / "model"
    src = Path(world["model"])
    model.mkdir()
    for part in ("model.json", "clip", "decoder", "prior_diffusion"):
        (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, model / part)
    path = model / target
    data = path.read_bytes()
    if mutation == "json":
        path.write_text(json.dumps(value))
    elif mutation == "field" and target.endswith(".json"):
        payload = json.loads(data)
        inner = payload.get("config", payload)
        key = sorted(inner)[int(where * (len(inner) - 1))] if inner else "x"
        inner[key] = value
        path.write_text(json.dumps(payload))
    elif mutation == "flip":
        pos = int(where * (len(data) - 1))
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
    elif mutation == "truncate":
        path.write_bytes(data[: int(where * len(data))])
    elif mutation == "delete":
        path.unlink()
    elif mutation == "dir":
        path.unlink()
        path.mkdir()
    elif mutation == "nan" and target.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
        key = sorted(state)[int(where * (len(state) - 1))]
        state[key] = torch.full_like(state[key], float("nan")) if state[key].is_floating_point() else state[key]
        save_file(state, str(path))
    argv = [
        "generate",
        "a red circle",
        "--model",
        str(model),
        "-n",
        "1",
        "--prior-steps",
        "1",
        "--steps",
        "1",
        "--out",
        str(model.parent / "out"),
    ]
    status, err = run_cli(argv)
    assert_clean(status, err, argv)
    if mutation in ("flip", "nan") and target.endswith(".safetensors"):
        assert status == 1 and ("damaged" in err or "non-finite" in err or "could not read" in err), err


# ----------------------------------------------------------------------------- corrupt training states

STATE_KEYS = ["step", "optimizer", "rng", "log", "files", "config", "stage", "sha256", "format_version", "scaler"]


@settings(SETTINGS, max_examples=_STRESS or 15)
@given(
    key=st.sampled_from(STATE_KEYS),
    value=st.one_of(JSON_VALUES, st.just("<delete>")),
    other=st.sampled_from(["none", "swap", "flip", "train_state_file"]),
)
def test_corrupt_training_states_are_clean_errors(world, key, value, other):
    out = Path(tempfile.mkdtemp(dir=world["root"])) / "model"
    shutil.copytree(world["model"], out)
    state_dir = out / "runs" / "prior_diffusion" / "train_state"
    state_file = state_dir / "state.json"
    payload = json.loads(state_file.read_text())
    if value == "<delete>":
        payload.pop(key, None)
    else:
        payload[key] = value
    state_file.write_text(json.dumps(payload))
    if other == "swap":
        (state_dir / "model.safetensors").rename(state_dir / "tmp")
        (state_dir / "ema.safetensors").rename(state_dir / "model.safetensors")
        (state_dir / "tmp").rename(state_dir / "ema.safetensors")
    elif other == "flip":
        data = bytearray((state_dir / "model.safetensors").read_bytes())
        data[-5] ^= 0x01
        (state_dir / "model.safetensors").write_bytes(bytes(data))
    elif other == "train_state_file":
        shutil.rmtree(state_dir)
        state_dir.write_text("not a folder")
    argv = ["train", "prior", "--preset", "tiny", "--resume", "--out", str(out), "--no-progress"]
    status, err = run_cli(argv)
    assert_clean(status, err, argv)
    if other in ("swap", "flip") and isinstance(
        payload.get("sha256"), dict
    ):  # without checksums (an older unclip) a swap is undetectable
        assert status == 1, err


# ----------------------------------------------------------------------------- corrupt latents


@settings(SETTINGS, max_examples=_STRESS or 25)
@given(
    dtype=st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8, torch.float64]),
    embed_shape=st.sampled_from([(1, 32), (0, 32), (1, 0), (2, 32), (1, 31), (32,), (1, 1, 32)]),
    noise_side=st.sampled_from([16, 0, 1, 512, 15]),
    fill=st.sampled_from(["randn", "nan", "inf", "zero"]),
    meta=st.one_of(
        st.just("ok"),
        st.just("not json {"),
        JSON_VALUES.map(json.dumps),
        st.fixed_dictionaries({"steps": st.one_of(st.integers(), st.text(max_size=3), st.floats())}).map(lambda d: d),
    ),
    command=st.sampled_from(["vary", "interpolate", "textdiff"]),
)
def test_corrupt_latents_are_clean_errors(world, dtype, embed_shape, noise_side, fill, meta, command):
    folder = Path(tempfile.mkdtemp(dir=world["root"]))
    z = torch.randn(*embed_shape)
    x = torch.randn(embed_shape[0] if len(embed_shape) == 2 else 1, 3, noise_side, noise_side)
    if fill != "randn":
        value = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0}[fill]
        z = torch.full_like(z, value)
    good = {
        "format": "unclip-bipartite-latent",
        "version": 1,
        "model": "",
        "steps": 1,
        "guidance": 1.0,
        "captions": None,
        "min_alpha_bar": 2e-3,
        "extra": {},
    }
    if meta == "ok":
        text = json.dumps(good)
    elif isinstance(meta, dict):
        text = json.dumps({**good, **meta})
    else:
        text = meta
    path = folder / "lat.safetensors"
    tensors = {
        "image_embed": z.to(dtype) if dtype != torch.bool else z > 0,
        "noise": x.to(dtype) if dtype != torch.bool else x > 0,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"unclip": text})
    base = {
        "vary": ["vary", str(path), "-n", "1"],
        "interpolate": ["interpolate", str(path), world["latent"], "--frames", "2"],
        "textdiff": ["textdiff", str(path), "--from", "a", "--to", "b", "--frames", "2"],
    }[command]
    argv = [*base, "--model", world["model"], "--steps", "1", "--out", str(folder / "out")]
    status, err = run_cli(argv)
    assert_clean(status, err, argv)
    clean = dtype in (torch.float32, torch.float16, torch.float64) and embed_shape == (1, 32) and noise_side == 16
    steps = meta.get("steps") if isinstance(meta, dict) else 1
    meta_ok = meta == "ok" or (isinstance(meta, dict) and type(steps) is int and 1 <= steps <= 10_000)
    if not (clean and fill == "randn" and meta_ok):
        assert status != 0, argv
