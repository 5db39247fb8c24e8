"""OpenCLIP checkpoints read into transformers' ``CLIPModel``, without importing open_clip.

``open_clip`` imports ``torchvision``, which does not import beside a CPU build of torch
from PyPI (its wheel is linked against CUDA torch). OpenCLIP's standard CLIP (a ViT image
tower and a causal text transformer, as in Radford et al. 2021) is the same network as
transformers' ``CLIPModel``, so the weights are renamed into it:

=====================================  =====================================================
OpenCLIP                               transformers CLIPModel
=====================================  =====================================================
``visual.conv1``                       ``vision_model.embeddings.patch_embedding``
``visual.class_embedding``             ``vision_model.embeddings.class_embedding``
``visual.positional_embedding``        ``vision_model.embeddings.position_embedding.weight``
``visual.ln_pre`` / ``visual.ln_post``  ``vision_model.pre_layrnorm`` / ``post_layernorm``
``visual.proj`` (W, E), ``x @ proj``    ``visual_projection.weight`` = ``proj.T``
``token_embedding``                    ``text_model.embeddings.token_embedding``
``positional_embedding``               ``text_model.embeddings.position_embedding.weight``
``ln_final``                           ``text_model.final_layer_norm``
``text_projection`` (W, E)             ``text_projection.weight`` = its transpose
``...resblocks.i.attn.in_proj_*``      ``...layers.i.self_attn.{q,k,v}_proj`` (split in 3)
``...attn.out_proj`` ``ln_1`` ``ln_2``  ``self_attn.out_proj`` ``layer_norm1`` ``layer_norm2``
``mlp.c_fc`` / ``mlp.c_proj``           ``mlp.fc1`` / ``mlp.fc2``
=====================================  =====================================================

The architecture comes from OpenCLIP's model config: ``ARCH`` is either the path of such
a JSON file or the name of one shipped inside an installed ``open_clip_torch`` package (the
file is read, the package never imported; ``pip install --no-deps open_clip_torch`` is
enough). The tokenizer is CLIP's byte-level BPE built from ``bpe_simple_vocab_16e6.txt.gz``
(beside the weights, or from the same package). Configs with features outside the standard
CLIP (ResNet or timm towers, Hugging Face text towers, layer scale, attentional pooling,
custom attention blocks, SigLIP's logit bias) are refused with the reason.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
INSTALL_HINT = "pip install --no-deps open_clip_torch (only its config and vocabulary files are read)"
_VISION_DEFAULTS = {"head_width": 64, "mlp_ratio": 4.0}
_TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}
# Config entries that change the network away from the standard CLIP, with the value that does not.
_UNSUPPORTED_VISION = {
    "timm_model_name": None,
    "ls_init_value": None,
    "attentional_pool": False,
    "no_ln_pre": False,
    "final_ln_after_pool": False,
    "pos_embed_type": "learnable",
    "pool_type": "tok",
    "act_kwargs": None,
    "norm_kwargs": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "block_type": None,
}
_UNSUPPORTED_TEXT = {
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "ls_init_value": None,
    "embed_cls": False,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "act_kwargs": None,
    "norm_kwargs": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "block_type": None,
    "tokenizer_kwargs": None,
}


def _package_dir() -> Path | None:
    """The installed ``open_clip`` package folder, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_config(arch: str) -> tuple[dict[str, Any], str]:
    """OpenCLIP's model config of ``arch`` (a JSON path or a shipped name) and where it came from."""
    path = Path(arch).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"OpenCLIP config file {path} does not exist")
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    package = _package_dir()
    if package is None:
        raise ConfigError(
            f"OpenCLIP architecture {arch!r}: its config comes from the open_clip_torch package, which is not "
            f"installed; {INSTALL_HINT}, or give the path of the model's config .json instead of its name"
        )
    file = package / "model_configs" / f"{arch}.json"
    if not file.is_file():
        names = sorted(p.stem for p in (package / "model_configs").glob("*.json"))
        close = [n for n in names if n.lower().startswith(arch.lower()[:5])][:8]
        raise ConfigError(
            f"unknown OpenCLIP architecture {arch!r}; similar names: {', '.join(close) or 'none'} (all are in "
            f"{file.parent})"
        )
    return json.loads(file.read_text(encoding="utf-8")), f"open_clip:{arch}"


def find_vocab(weights: Path) -> Path:
    """CLIP's BPE vocabulary: beside the weights file, or shipped in the open_clip_torch package."""
    for candidate in (weights.parent / VOCAB_FILE, (_package_dir() or Path("/nonexistent")) / VOCAB_FILE):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"CLIP's tokenizer vocabulary {VOCAB_FILE} was not found beside {weights} nor in an installed "
        f"open_clip_torch; put it beside the weights or {INSTALL_HINT}"
    )


def _check_supported(cfg: dict[str, Any], arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if cfg.get("custom_text") or "multimodal_cfg" in cfg:
        raise ConfigError(
            f"OpenCLIP {arch!r} has a custom text tower (custom_text/CoCa); only the standard CLIP text transformer "
            "can be read"
        )
    if cfg.get("init_logit_bias") is not None:
        raise ConfigError(
            f"OpenCLIP {arch!r} is a SigLIP model (logit bias, sigmoid loss); only CLIP models can be read"
        )
    vision = {**_VISION_DEFAULTS, **cfg.get("vision_cfg", {})}
    text = {**_TEXT_DEFAULTS, **cfg.get("text_cfg", {})}
    if not isinstance(vision.get("layers"), int):
        raise ConfigError(f"OpenCLIP {arch!r} has a ResNet image tower; only ViT image towers can be read")
    for where, values, allowed in (("vision_cfg", vision, _UNSUPPORTED_VISION), ("text_cfg", text, _UNSUPPORTED_TEXT)):
        for key, ok in allowed.items():
            if values.get(key, ok) != ok:
                raise ConfigError(
                    f"OpenCLIP {arch!r}: {where}.{key} = {values[key]!r} is not supported (only the standard CLIP "
                    "architecture can be read into transformers' CLIPModel)"
                )
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"OpenCLIP {arch!r} takes non-square images {size}; only square inputs are supported")
        vision["image_size"] = size[0]
    return vision, text


def hf_config(cfg: dict[str, Any], arch: str = "model") -> Any:
    """The transformers ``CLIPConfig`` of the same network as OpenCLIP config ``cfg``."""
    from transformers import CLIPConfig  # noqa: PLC0415 - optional dependency

    vision, text = _check_supported(cfg, arch)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    vision_heads = vision["width"] // vision["head_width"]
    return CLIPConfig(
        text_config={
            "vocab_size": text["vocab_size"],
            "hidden_size": text["width"],
            "intermediate_size": int(text["width"] * text["mlp_ratio"]),
            "num_hidden_layers": text["layers"],
            "num_attention_heads": text["heads"],
            "max_position_embeddings": text["context_length"],
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": cfg["embed_dim"],
            # eos_token_id == 2 selects pooling at the largest token id, OpenCLIP's "argmax" pooling.
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_size": vision["width"],
            "intermediate_size": int(vision["width"] * vision["mlp_ratio"]),
            "num_hidden_layers": vision["layers"],
            "num_attention_heads": vision_heads,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": cfg["embed_dim"],
        },
        projection_dim=cfg["embed_dim"],
    )


def _blocks(sd: dict[str, torch.Tensor], src: str, dst: str, layers: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        s, d = f"{src}.resblocks.{i}.", f"{dst}.layers.{i}."
        for part, w in zip(("q", "k", "v"), sd[s + "attn.in_proj_weight"].chunk(3)):
            out[d + f"self_attn.{part}_proj.weight"] = w
        for part, b in zip(("q", "k", "v"), sd[s + "attn.in_proj_bias"].chunk(3)):
            out[d + f"self_attn.{part}_proj.bias"] = b
        names = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, b in names.items():
            out[d + b + ".weight"] = sd[s + a + ".weight"]
            out[d + b + ".bias"] = sd[s + a + ".bias"]
    return out


def convert_state_dict(sd: dict[str, torch.Tensor], vision_layers: int, text_layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP CLIP state dict -> transformers CLIPModel state dict (see the module table)."""
    v, t = "vision_model.", "text_model."
    out = {
        v + "embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        v + "embeddings.class_embedding": sd["visual.class_embedding"],
        v + "embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        v + "pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        v + "pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        v + "post_layernorm.weight": sd["visual.ln_post.weight"],
        v + "post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),
        t + "embeddings.token_embedding.weight": sd["token_embedding.weight"],
        t + "embeddings.position_embedding.weight": sd["positional_embedding"],
        t + "final_layer_norm.weight": sd["ln_final.weight"],
        t + "final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"],
    }
    out.update(_blocks(sd, "visual.transformer", v + "encoder", vision_layers))
    out.update(_blocks(sd, "transformer", t + "encoder", text_layers))
    return {k: x.contiguous() for k, x in out.items()}


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) byte -> printable character table: printable Latin-1 bytes map to
    themselves, the other 68 to ``chr(256 + n)`` in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order is the token order: the kept bytes, then the others


def build_tokenizer(vocab_file: Path, context_length: int) -> Any:
    """transformers ``CLIPTokenizer`` equal to OpenCLIP's SimpleTokenizer.

    The vocabulary is CLIP's: the 256 byte characters, the same with ``</w>``, one token
    per merge of the first 48,894 merges in the file, then ``<|startoftext|>`` and
    ``<|endoftext|>`` (49,408 in all).
    """
    from transformers import CLIPTokenizer  # noqa: PLC0415 - optional dependency

    lines = gzip.open(vocab_file, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer.model_max_length = context_length
    return tokenizer


def load_openclip_weights(path: Path) -> dict[str, torch.Tensor]:
    """An OpenCLIP state dict from ``.safetensors`` (preferred) or ``.pt``/``.bin``
    (read with ``torch.load(weights_only=True)``, never unpickling objects)."""
    if not path.is_file():
        raise CheckpointError(f"OpenCLIP weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        sd = load_file(str(path))
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure here is a file we refuse
            raise CheckpointError(
                f"could not read {path} with torch.load(weights_only=True) ({exc}); pickled objects are never "
                "loaded, convert it to safetensors"
            ) from exc
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    else:
        raise CheckpointError(
            f"{path}: OpenCLIP weights must be .safetensors (or .pt/.bin, read with weights_only=True)"
        )
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_openclip_as_hf(weights: str | os.PathLike, arch: str) -> tuple[Any, Any, dict[str, Any]]:
    """``(CLIPModel, CLIPTokenizer, preprocess)`` for OpenCLIP ``arch`` with the weights in ``weights``.

    ``preprocess`` holds ``mean``, ``std`` and ``image_size`` from the config's
    ``preprocess_cfg`` (OpenAI's statistics by default).
    """
    from transformers import CLIPModel  # noqa: PLC0415 - optional dependency

    weights = Path(weights).expanduser()
    sd = load_openclip_weights(weights)
    cfg, _ = find_config(arch)
    config = hf_config(cfg, arch)
    try:
        converted = convert_state_dict(sd, config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers)
    except KeyError as exc:
        raise CheckpointError(f"{weights} is not an OpenCLIP {arch!r} checkpoint: it has no {exc.args[0]!r}") from exc
    model = CLIPModel(config).eval()
    expected = model.state_dict()
    bad = [k for k, x in converted.items() if k not in expected or expected[k].shape != x.shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{weights} does not match OpenCLIP {arch!r}: {k} has shape {tuple(converted[k].shape)}, the "
            f"architecture wants {tuple(expected[k].shape) if k in expected else 'no such weight'}"
        )
    missing = [k for k in expected if k not in converted and not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"{weights}: no weights for {missing[:3]} of OpenCLIP {arch!r}")
    model.load_state_dict(converted, strict=False)
    tokenizer = build_tokenizer(find_vocab(weights), config.text_config.max_position_embeddings)
    pre = cfg.get("preprocess_cfg", {})
    preprocess = {"mean": pre.get("mean"), "std": pre.get("std"), "image_size": config.vision_config.image_size}
    return model, tokenizer, preprocess
