"""Issue 18, case by case: nothing lost (inputs, user files, earlier runs), nothing silently wrong.

Each data-loss case shows the input or earlier output intact; each silent case shows the
clear error or the now-correct result; each of the listed tracebacks is a one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_fuzz import digest, run_cli
from PIL import Image
from safetensors.torch import load_file, save_file

from unclip.errors import DataError, NumericalError
from unclip.storage.checkpoint import atomic_write_bytes
from unclip.storage.imageio import tensor_to_pil, to_rgb
from unclip.train.guard import LOCK_NAME, TrainingLock

FAST = ["--steps", "1", "--prior-steps", "1", "-n", "1"]


def _png(path: Path, seed: int = 0, side: int = 20) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _err(argv: list[str]) -> str:
    status, err = run_cli(argv)
    assert status in (1, 2), (argv, err)
    assert "error:" in err and "Traceback" not in err, err
    return err


def _model_copy(tiny_model: str, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    return out


# ----------------------------------------------------------------------------- data lost


def test_invert_never_writes_over_its_input(tiny_model, tmp_path):
    photo = _png(tmp_path / "photo.png")
    before = digest(photo)
    assert "must end in .safetensors" in _err(["invert", str(photo), "--model", tiny_model, "--out", str(photo)])
    lat = tmp_path / "photo.safetensors"
    lat.write_bytes(b"a user's file that is not a latent")
    assert "not written by unclip" in _err(["invert", str(photo), "--model", tiny_model, "--out", str(lat)])
    assert digest(photo) == before and lat.read_bytes().startswith(b"a user's")
    ok = tmp_path / "ok.safetensors"
    assert run_cli(["invert", str(photo), "--model", tiny_model, "--steps", "1", "--out", str(ok)])[0] == 0
    assert (
        run_cli(["invert", str(photo), "--model", tiny_model, "--steps", "1", "--out", str(ok)])[0] == 0
    )  # its own latent: replaced


def test_generate_keeps_a_users_files_and_replaces_an_earlier_set_whole(tiny_model, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "000.png").write_bytes(b"my picture")
    err = _err(["generate", "a red circle", "--model", tiny_model, *FAST, "--out", str(user)])
    assert "never overwrites" in err and (user / "000.png").read_bytes() == b"my picture"

    out = tmp_path / "out"
    assert run_cli(["generate", "a red circle", "--model", tiny_model, *FAST[:4], "-n", "3", "--out", str(out)])[0] == 0
    assert sorted(os.listdir(out)) == ["000.png", "001.png", "002.png", "grid.png", "manifest.json"]
    assert run_cli(["generate", "a blue square", "--model", tiny_model, *FAST, "--out", str(out)])[0] == 0
    assert sorted(os.listdir(out)) == ["000.png", "grid.png", "manifest.json"]  # no stale 001.png, 002.png
    assert json.loads((out / "manifest.json").read_text())["images"][0]["prompt"] == "a blue square"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".unclip")]

    (out / "notes.txt").write_text("added by the user")
    assert "notes.txt" in _err(["generate", "x", "--model", tiny_model, *FAST, "--out", str(out)])


def test_an_interrupted_replacement_leaves_the_earlier_set_intact(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(["generate", "a red circle", "--model", tiny_model, *FAST, "--out", str(out)])[0] == 0
    before = digest(out)
    import unclip.storage.imageio as imageio

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio, "make_grid", fail)
    with pytest.raises(KeyboardInterrupt):
        run_cli(["generate", "a blue square", "--model", tiny_model, *FAST, "--out", str(out)])
    assert digest(out) == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".unclip")]


def test_an_input_inside_the_output_folder_is_refused(tiny_model, tmp_path):
    out = tmp_path / "out"
    assert run_cli(["generate", "a red circle", "--model", tiny_model, *FAST, "--out", str(out)])[0] == 0
    before = digest(out)
    assert "lies inside" in _err(
        ["vary", str(out / "000.png"), "--model", tiny_model, "--steps", "1", "--out", str(out)]
    )
    assert digest(out) == before


def test_training_never_deletes_an_earlier_run_unasked(tiny_model, tmp_path):
    model = _model_copy(tiny_model, tmp_path)
    before = digest(model)
    for stage in (["all"], ["clip"], ["prior"], ["decoder"]):
        err = _err(["train", *stage, "--preset", "tiny", "--out", str(model), "--no-progress"])
        assert "--resume" in err and "--overwrite" in err
    assert "not both" in _err(["train", "prior", "--preset", "tiny", "--out", str(model), "--resume", "--overwrite"])
    assert digest(model) == before
    (model / "README.txt").write_text("my notes")
    status, err = run_cli(
        ["train", "prior", "--preset", "tiny", "--steps", "2", "--overwrite", "--out", str(model), "--no-progress"]
    )
    assert status == 0, err
    assert (model / "README.txt").read_text() == "my notes"
    assert json.loads((model / "runs" / "prior_diffusion" / "summary.json").read_text())["steps"] == 2


def test_a_training_folder_is_locked_while_a_run_uses_it(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from unclip.train.guard import TrainingLock\n"
            f"with TrainingLock({str(folder)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _err(["train", "all", "--preset", "tiny", "--out", str(folder)])
        assert f"PID {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and is taken over (the kernel dropped the flock)
    with TrainingLock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert json.loads((folder / LOCK_NAME).read_text())["state"] == "released"


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------- silently wrong


def test_resume_with_other_settings_names_the_field(tiny_model, tmp_path):
    model = _model_copy(tiny_model, tmp_path)
    err = _err(["train", "all", "--preset", "tiny", "--seed", "1", "--resume", "--out", str(model), "--no-progress"])
    assert "--seed was 0 in the earlier run, now 1" in err
    err = _err(["train", "prior", "--preset", "tiny", "--seed", "1", "--resume", "--out", str(model)])
    assert "--seed was 0 in the earlier run, now 1" in err
    # a fresh prior on the same folder would reuse the cache rendered with seed 0
    err = _err(["train", "prior", "--preset", "tiny", "--seed", "1", "--overwrite", "--out", str(model)])
    assert "training cache" in err and "--seed" in err


@pytest.mark.parametrize("damage", ["flip", "nan"])
def test_damaged_weights_are_refused(tiny_model, tmp_path, damage):
    model = _model_copy(tiny_model, tmp_path)
    weights = model / "decoder" / "weights.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x10
        weights.write_bytes(bytes(data))
        expected = "damaged"
    else:
        state = load_file(str(weights))
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(weights))
        config = json.loads((model / "decoder" / "config.json").read_text())
        config.pop("sha256")  # even without a checksum, NaN weights are caught
        (model / "decoder" / "config.json").write_text(json.dumps(config))
        expected = "non-finite"
    assert expected in _err(["generate", "x", "--model", str(model), *FAST, "--out", str(tmp_path / "o")])


def test_a_non_finite_sample_is_an_error_not_a_black_png():
    with pytest.raises(NumericalError):
        tensor_to_pil(torch.full((1, 3, 4, 4), float("nan")))


@pytest.mark.parametrize(
    "edit", [{"step": -5}, {"step": "abc"}, {"optimizer": None}, {"rng": {"torch": [1, 2, 3]}}, "swap"]
)
def test_wrong_but_parseable_training_state_is_refused(tiny_model, tmp_path, edit):
    model = _model_copy(tiny_model, tmp_path)
    state = model / "runs" / "prior_diffusion" / "train_state"
    if edit == "swap":
        (state / "model.safetensors").rename(state / "x")
        (state / "ema.safetensors").rename(state / "model.safetensors")
        (state / "x").rename(state / "ema.safetensors")
    else:
        payload = json.loads((state / "state.json").read_text())
        payload.update(edit)
        (state / "state.json").write_text(json.dumps(payload))
    _err(["train", "prior", "--preset", "tiny", "--resume", "--out", str(model), "--no-progress"])


@pytest.mark.parametrize(
    "argv",
    [
        ["vary", "IMG", "--eta", "inf"],
        ["textdiff", "IMG", "--from", "a", "--to", "b", "--max-theta", "nan"],
        ["textdiff", "IMG", "--from", "a", "--to", "b", "--max-theta", "-1"],
        ["textdiff", "IMG", "--from", "a", "--to", "b", "--max-theta", "1e9"],
        ["generate", "x", "--decoder-guidance", "-1e9"],
        ["generate", "x", "--steps", "0"],
        ["generate", "x", "--size", "0"],
        ["generate", "x", "--best-of", "0"],
        ["generate", "x", "--prior-steps", "0"],
        ["generate", "x", "--best-of", "-3"],
        ["generate", "x", "--seed", str(2**64)],
        ["train", "decoder", "--batch-size", "0"],
        ["train", "prior", "--time-limit", "nan"],
        ["bench", "--threads", "0"],
        ["bench", "--threads", "-1"],
        ["generate", "x", "--device", "banana"],
    ],
)
def test_numbers_out_of_range_are_refused_by_the_parser(argv, tmp_path):
    argv = [a.replace("IMG", str(_png(tmp_path / "i.png"))) for a in argv]
    err = _err(argv + (["--out", str(tmp_path / "o")] if argv[0] != "bench" else []))
    assert "argument" in err


def test_the_manifest_records_the_values_used(tiny_model, tmp_path):
    out = tmp_path / "o"
    assert run_cli(["generate", "a red circle", "--model", tiny_model, "-n", "1", "--out", str(out)])[0] == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["steps"] == 50 and settings["prior_steps"] == 64 and settings["best_of"] == 2
    assert settings["size"] == 16 and settings["decoder_guidance"] == 3.0 and None not in settings.values()


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = np.asarray(to_rgb(Image.open(tmp_path / "g16.png")))
    np.testing.assert_allclose(rgb[..., 0], np.rint(ramp / 257.0), atol=1)
    assert (rgb == 255).mean() < 0.01


def test_symlink_loops_and_duplicate_links_give_each_image_once(tmp_path):
    from unclip.data.folder import scan_folder
    from unclip.data.folder_source import scan_captioned

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for k in range(2):
        _png(root / "a" / f"{k}.png", k)
        (root / "a" / f"{k}.txt").write_text(f"caption {k}")
    (root / "a" / "loop").symlink_to(root)  # a/loop -> data: a loop
    (root / "b").symlink_to(root / "a")  # a second way into a
    pairs, _ = scan_folder(root)
    assert sorted(p.name for p, _ in pairs) == ["0.png", "1.png"]
    assert len(scan_captioned(root)[0]) == 2


def test_unreadable_images_are_skipped_counted_and_recorded(tmp_path, caplog):
    from unclip.data import get_dataset
    from unclip.data.embeddings import load_training_set, render_training_set, save_training_set

    root = tmp_path / "data"
    root.mkdir()
    for k in range(5):
        path = root / f"{k}.png"
        _png(path, k) if k < 3 else path.write_bytes(b"not a png")
        (root / f"{k}.txt").write_text(f"caption {k}")
    ds = get_dataset(str(root), split="train", size=16, seed=0, length=5)
    ts = render_training_set(ds, 5, workers=0, progress=False)
    assert len(ts) == 3 and ts.skipped["count"] == 2 and ts.skipped["reasons"] == {"undecodable_image": 2}
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 2  # once each
    save_training_set(ts, tmp_path / "cache")
    assert load_training_set(tmp_path / "cache").skipped["count"] == 2
    for k in range(3):
        (root / f"{k}.png").write_bytes(b"broken too")
    with pytest.raises(DataError, match="none of the 5 images"):
        render_training_set(
            get_dataset(str(root), split="train", size=16, seed=0, length=5), 5, workers=1, progress=False
        )


def test_latents_are_validated(tiny_model, tmp_path):
    good = tmp_path / "good.safetensors"
    assert (
        run_cli(["invert", str(_png(tmp_path / "p.png")), "--model", tiny_model, "--steps", "1", "--out", str(good)])[0]
        == 0
    )
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        header = json.loads(f.metadata()["unclip"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cases = {
        "nan": ({**tensors, "image_embed": torch.full_like(tensors["image_embed"], float("nan"))}, header, "NaN"),
        "empty": ({**tensors, "noise": torch.zeros(1, 3, 0, 0)}, header, "empty"),
        "int": ({**tensors, "image_embed": tensors["image_embed"].long()}, header, "dtype"),
        "bool": ({**tensors, "noise": tensors["noise"] > 0}, header, "dtype"),
        "steps": (tensors, {**header, "steps": "50"}, "'steps'"),
        "list": (tensors, [1, 2], "not a JSON object"),
        "big": ({**tensors, "noise": torch.randn(1, 3, 512, 512)}, header, "px"),
    }
    for name, (ts, head, expected) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in ts.items()}, str(path), metadata={"unclip": json.dumps(head)})
        err = _err(["vary", str(path), "--model", tiny_model, "--steps", "1", "--out", str(tmp_path / f"o-{name}")])
        assert expected in err, (name, err)
    bad_json = tmp_path / "text.safetensors"
    save_file(tensors, str(bad_json), metadata={"unclip": "{not json"})
    assert "not JSON" in _err(["vary", str(bad_json), "--model", tiny_model, "--out", str(tmp_path / "o")])


# ----------------------------------------------------------------------------- the listed tracebacks


def _break_model(model: Path, rel: str, text: str) -> None:
    (model / rel).write_text(text)


@pytest.mark.parametrize(
    "rel, text",
    [
        ("model.json", "[1, 2, 3]"),
        ("model.json", '{"format": "unclip-model", "version": 1, "components": 5}'),
        ("decoder/config.json", "[]"),
        ("clip/config.json", "FIELD:image_size=big"),
        ("decoder/config.json", "FIELD:base_channels=-4"),
        ("model.json", "DEFAULTS:decoder_steps=-5"),
    ],
)
def test_malformed_model_files_are_clean_errors(tiny_model, tmp_path, rel, text):
    model = _model_copy(tiny_model, tmp_path)
    if text.startswith(("FIELD:", "DEFAULTS:")):
        key, value = text.split(":", 1)[1].split("=")
        payload = json.loads((model / rel).read_text())
        inner = payload["config"] if key != "decoder_steps" else payload["defaults"]
        inner[key] = int(value) if value.lstrip("-").isdigit() else value
        text = json.dumps(payload)
    _break_model(model, rel, text)
    _err(["generate", "x", "--model", str(model), *FAST, "--out", str(tmp_path / "o")])


def test_training_state_folder_as_a_file_and_garbage_cache(tiny_model, tmp_path):
    model = _model_copy(tiny_model, tmp_path)
    (model / "cache" / "training_set.json").write_text("{garbage")
    assert "not valid JSON" in _err(["train", "prior", "--preset", "tiny", "--resume", "--out", str(model)])
    model2 = _model_copy(tiny_model, tmp_path / "2")
    state = model2 / "runs" / "prior_diffusion" / "train_state"
    shutil.rmtree(state)
    state.write_text("a file")
    status, err = run_cli(
        ["train", "prior", "--preset", "tiny", "--steps", "2", "--overwrite", "--out", str(model2), "--no-progress"]
    )
    assert status == 0, err


@pytest.mark.parametrize("command", ["generate", "eval", "data", "train", "report", "invert-reconstruct"])
def test_out_naming_an_existing_file_or_an_unwritable_place(tiny_model, tmp_path, command):
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    image = str(_png(tmp_path / "i.png"))
    base = {
        "generate": ["generate", "x", "--model", tiny_model, *FAST],
        "eval": ["eval", "--model", tiny_model],
        "data": ["data", "shapes", "-n", "1"],
        "train": ["train", "all", "--preset", "tiny"],
        "report": ["report", "--model", tiny_model, "--quick"],
        "invert-reconstruct": ["invert", image, "--model", tiny_model, "--out", str(tmp_path / "l.safetensors")],
    }[command]
    flag = "--reconstruct" if command == "invert-reconstruct" else "--out"
    for place in (existing, Path("/proc/unclip-no"), existing / "below"):
        _err(base + [flag, str(place)])
    assert existing.read_text() == "keep me"


def test_decompression_bomb_and_oversized_requests(tiny_model, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpx of zeros: a few kB on disk
    assert "too large" in _err(["vary", str(bomb), "--model", tiny_model, "--out", str(tmp_path / "o")])
    image = str(_png(tmp_path / "i.png"))
    for argv in (
        ["generate", "x", "--model", tiny_model, "-n", "4096", "--size", "4096"],
        ["vary", image, "--model", tiny_model, "-n", "100000"],
        ["interpolate", image, image, "--model", tiny_model, "--frames", "100000"],
        ["data", "shapes", "--size", "30000"],
        ["generate", "x", "--model", tiny_model, "-n", "20000"],
    ):
        _err(argv + ["--out", str(tmp_path / "o")])


def test_interpolating_latents_of_different_models_is_refused(tiny_model, full_tiny_model, tmp_path):
    image = str(_png(tmp_path / "i.png"))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run_cli(["invert", image, "--model", tiny_model, "--steps", "1", "--out", str(a)])[0] == 0
    assert (
        run_cli(["invert", image, "--model", full_tiny_model, "--steps", "1", "--size", "64", "--out", str(b)])[0] == 0
    )
    lat = load_file(str(a))
    big = tmp_path / "big.safetensors"
    from safetensors import safe_open

    with safe_open(str(a), framework="pt") as f:
        meta = f.metadata()
    save_file({"image_embed": lat["image_embed"], "noise": torch.randn(1, 3, 32, 32)}, str(big), metadata=meta)
    assert "px" in _err(
        ["interpolate", str(a), str(big), "--model", tiny_model, "--steps", "1", "--out", str(tmp_path / "o")]
    )
    status, err = run_cli(
        [
            "interpolate",
            str(a),
            str(b),
            "--model",
            tiny_model,
            "--steps",
            "1",
            "--frames",
            "2",
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert status in (0, 1) and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path):
    assert "CUDA is not available" in _err(["generate", "x", "--device", "cuda", "--out", str(tmp_path / "o")])


def test_a_folder_where_no_image_is_readable_is_one_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for k in range(3):
        (root / f"{k}.png").write_bytes(b"broken")
        (root / f"{k}.txt").write_text("a caption")
    err = _err(
        ["train", "clip", "--data", str(root), "--preset", "tiny", "--out", str(tmp_path / "m"), "--no-progress"]
    )
    assert "could be read" in err and err.count("\n") <= 3


def test_demo_and_report_never_replace_a_users_files(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "index.html").write_text("my home page")
    (folder / "photo.jpg").write_bytes(b"mine")
    for argv in (["demo"], ["report", "--quick"]):
        assert "photo.jpg" in _err(argv + ["--out", str(folder)])
    assert (folder / "index.html").read_text() == "my home page"


@pytest.mark.slow
def test_skipped_images_reach_train_summary(tmp_path, caplog):
    root = tmp_path / "data"
    root.mkdir()
    for k in range(6):
        path = root / f"{k}.png"
        _png(path, k) if k < 4 else path.write_bytes(b"not a png")
        (root / f"{k}.txt").write_text(f"a red circle {k}")
    out = tmp_path / "model"
    argv = ["train", "all", "--data", str(root), "--preset", "tiny", "--steps", "1", "--out", str(out), "--no-progress"]
    status, err = run_cli(argv)
    assert status == 0, err
    skipped = json.loads((out / "train_summary.json").read_text())["data_skipped"]
    assert skipped["count"] == 2 and skipped["reasons"] == {"undecodable_image": 2}
    assert sum("skipping unreadable image" in r.getMessage() for r in caplog.records) == 2  # once per file
