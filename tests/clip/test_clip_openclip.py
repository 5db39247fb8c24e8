"""OpenCLIP checkpoints read into transformers' CLIPModel equal open_clip's own forward."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from openclip_env import import_open_clip

from unclip.clip import openclip
from unclip.clip.spec import load_clip_spec
from unclip.errors import CheckpointError, ConfigError

pytest.importorskip("transformers")

TINY = {
    "embed_dim": 8,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TEXTS = [
    "a red circle",
    "Two BLUE squares, left of a star!",
    "a much longer caption that will certainly be cut at twelve tokens",
]


def _tiny_openclip(tmp_path, quick_gelu: bool, suffix: str = ".safetensors"):
    open_clip = import_open_clip()
    cfg = {**TINY, "quick_gelu": quick_gelu}
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**{k: v for k, v in cfg.items()}).eval()
    with torch.no_grad():  # random LayerNorm affine parameters, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    weights = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    else:
        torch.save(model.state_dict(), weights)
    return open_clip, model, weights


@pytest.mark.parametrize("quick_gelu,suffix", [(False, ".safetensors"), (True, ".pt")])
def test_embeddings_equal_open_clip(tmp_path, quick_gelu, suffix):
    open_clip, model, weights = _tiny_openclip(tmp_path, quick_gelu, suffix)
    clip = load_clip_spec(f"open_clip:{tmp_path / 'tiny.json'}:{weights}")
    assert (clip.embed_dim, clip.text_width, clip.context_length, clip.image_size) == (8, 32, 12, 16)
    # Tokens: the same ids as OpenCLIP's tokenizer up to and including the end-of-text token.
    ours = clip.tokenize(TEXTS)
    ref_ids = open_clip.tokenizer.tokenize(TEXTS, context_length=12)
    full = clip.encode_text_full(TEXTS)
    assert torch.equal(ours[full.mask], ref_ids[full.mask])
    assert full.mask.sum(1).tolist() == [(ids != 0).sum().item() for ids in ref_ids]
    caught = []
    handle = model.ln_final.register_forward_hook(lambda _m, _i, out: caught.append(out))
    with torch.no_grad():
        ref_text = F.normalize(model.encode_text(ref_ids), dim=-1)
    handle.remove()
    assert torch.allclose(full.embed, ref_text, atol=1e-5)
    assert torch.allclose(full.tokens[full.mask], caught[0][full.mask], atol=1e-5)
    # Images at the model's size: only normalisation happens before the towers.
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pixels = ((images + 1) / 2 - clip.mean) / clip.std
    with torch.no_grad():
        ref_image = F.normalize(model.encode_image(pixels), dim=-1)
    assert torch.allclose(clip.encode_image(images), ref_image, atol=1e-5)


def test_architecture_names_are_read_from_the_installed_package_without_importing_it():
    if openclip._package_dir() is None:
        pytest.skip("open_clip_torch is not installed")
    cfg, where = openclip.find_config("ViT-B-32")
    config = openclip.hf_config(cfg, "ViT-B-32")
    assert where == "open_clip:ViT-B-32"
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) == (12, 8)
    assert config.vision_config.hidden_act == "gelu"
    assert openclip.hf_config(openclip.find_config("ViT-B-32-quickgelu")[0]).text_config.hidden_act == "quick_gelu"
    with pytest.raises(ConfigError, match="ResNet"):
        openclip.hf_config(openclip.find_config("RN50")[0], "RN50")
    with pytest.raises(ConfigError, match="unknown OpenCLIP architecture"):
        openclip.find_config("ViT-B-33")


def test_unsupported_and_mismatched_checkpoints_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="ls_init_value"):
        openclip.hf_config({**TINY, "vision_cfg": {**TINY["vision_cfg"], "ls_init_value": 1e-5}})
    with pytest.raises(ConfigError, match="SigLIP"):
        openclip.hf_config({**TINY, "init_logit_bias": -10})
    _, _, weights = _tiny_openclip(tmp_path, False)
    wrong = {**TINY, "text_cfg": {**TINY["text_cfg"], "width": 64, "heads": 4}}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match="does not match"):
        load_clip_spec(f"open_clip:{tmp_path / 'wrong.json'}:{weights}")
    monkeypatch.setattr(openclip, "_package_dir", lambda: None)
    with pytest.raises(ConfigError, match="open_clip_torch"):
        openclip.find_config("ViT-B-32")
    with pytest.raises(ConfigError, match="bpe_simple_vocab"):
        load_clip_spec(f"open_clip:{tmp_path / 'tiny.json'}:{weights}")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a pickled module, not tensors
    with pytest.raises(CheckpointError, match="weights_only"):
        openclip.load_openclip_weights(tmp_path / "pickled.pt")
