"""Training the AR prior: the stage lowers its loss and exports a loadable component."""

import json

import torch
from ar_synthetic import synthetic_training_set, text_batch

from unclip.model_dir import load_ar_prior
from unclip.prior.ar_prior import ARPrior, sample_ar_image_embeds
from unclip.train import TrainConfig, train
from unclip.train.ar_stage import ARPriorStage, build_ar_prior
from unclip.train.components import train_component

MODEL = dict(width=32, depth=2, heads=2, num_buckets=32, num_dot_buckets=8)


def _eval_loss(model: ARPrior, stage: ARPriorStage) -> float:
    idx = torch.arange(256)
    t, cid = stage.data.text, stage.data.caption_ids[idx]
    with torch.no_grad():
        loss, _ = model.eval().loss(
            t.text_embeds[cid].float(),
            t.token_encodings[cid].float(),
            t.token_mask[cid],
            torch.ones(256, dtype=torch.bool),
            stage.dot_codes[idx],
            stage.codes[idx],
        )
    return float(loss)


def test_tiny_training_lowers_loss_and_exports(tmp_path):
    data = synthetic_training_set(n=512)
    torch.manual_seed(0)
    model, pca, info = build_ar_prior(
        data, embed_dim=16, text_width=8, context_length=5, model_kwargs=MODEL, rel_error=0.01
    )
    # The synthetic embeddings live near a 4-d subspace: the 1% rule keeps few components.
    assert 3 <= info["num_components"] <= 6 and info["relative_mse"] < 0.01
    stage = ARPriorStage(model, data, batch_size=64, export_root=tmp_path, extra={"pca": info})
    before = _eval_loss(model, stage)
    config = TrainConfig(steps=40, lr=3e-3, warmup_steps=2, checkpoint_every=40, ema_decay=0.0, log_every=10)
    result = train(stage, config, tmp_path / "run", progress=False)
    after = _eval_loss(result.model, stage)
    assert after < before - 0.3, (before, after)

    loaded = load_ar_prior(tmp_path / "prior_ar")
    for k, v in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    extra = json.loads((tmp_path / "prior_ar" / "config.json").read_text())["extra"]
    assert extra["pca"]["num_components"] == info["num_components"]
    te, tt, tm = text_batch(data, [0, 1])
    z = sample_ar_image_embeds(loaded, te, tt, tm, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 16) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_train_ar_prior_adds_component_to_model_dir(tmp_path):
    from unclip.clip.frozen import FrozenCLIP
    from unclip.clip.model import CLIP, CLIPConfig
    from unclip.clip.tokenizer import Tokenizer
    from unclip.data import get_dataset

    captions = sorted({get_dataset("shapes", split="train", size=16, length=64)[i]["caption"] for i in range(64)})
    tokenizer = Tokenizer.train(captions)
    torch.manual_seed(0)
    clip = CLIP(
        CLIPConfig(
            image_size=16,
            patch_size=4,
            vision_width=32,
            vision_depth=1,
            vision_heads=2,
            text_width=32,
            text_depth=1,
            text_heads=2,
            embed_dim=32,
            context_length=20,
            vocab_size=tokenizer.vocab_size,
        )
    )
    FrozenCLIP.from_model(clip, tokenizer).save(tmp_path / "clip")
    (tmp_path / "model.json").write_text(
        json.dumps({"format": "unclip-model", "version": 1, "components": {"clip": "clip"}})
    )

    summary = train_component("ar-prior", "shapes", "tiny", tmp_path, num_images=64, steps=4, progress=False)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["components"] == {"clip": "clip", "prior_ar": "prior_ar"}
    assert summary["steps"] == 4 and summary["pca"]["num_components"] >= 1
    prior = load_ar_prior(tmp_path / "prior_ar")
    assert prior.config.embed_dim == 32 and prior.config.num_components == summary["pca"]["num_components"]


def test_presets_fit_the_weight_budget():
    import pytest

    from unclip.errors import ConfigError
    from unclip.prior.ar_prior import ARPriorConfig
    from unclip.train.presets import get_preset

    with pytest.raises(ConfigError, match="tiny"):
        get_preset("prior_ar", "huge")
    for name in ("small", "gpu"):
        model = ARPrior(ARPriorConfig(**get_preset("prior_ar", name)["model"], num_components=32))
        n = sum(p.numel() for p in model.parameters())
        assert 2_000_000 < n <= 3_100_000, (name, n)  # <= ~6 MB of fp16 weights
