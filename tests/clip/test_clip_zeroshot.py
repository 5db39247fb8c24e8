"""Zero-shot accuracy, retrieval reports, and a tiny CLIP that learns to name colours."""

import pytest
import torch
import torch.nn.functional as F
from clip_helpers import tiny_config

from unclip.clip import (
    CLIP,
    FrozenCLIP,
    Tokenizer,
    caption_ids_from_tokens,
    contrastive_loss,
    retrieval_report,
    zero_shot_accuracy,
    zero_shot_predict,
)
from unclip.errors import InputError

COLOURS = {
    "red": (0.9, -0.7, -0.7),
    "green": (-0.6, 0.5, -0.5),
    "blue": (-0.7, -0.4, 0.8),
    "yellow": (0.9, 0.7, -0.7),
    "purple": (0.1, -0.5, 0.5),
    "white": (0.9, 0.9, 0.9),
    "black": (-0.9, -0.9, -0.9),
}
NAMES = list(COLOURS)
TEMPLATES = ["a {} image", "{}", "a photo that is {}", "the colour {}"]


class MeanColourCLIP:
    """A hand-made 'CLIP': images embed as their mean RGB, texts as their colour's RGB."""

    def encode_text(self, texts):
        return F.normalize(torch.tensor([COLOURS[t.split()[-1]] for t in texts]), dim=-1)

    def encode_image(self, images):
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)


def solid(labels: torch.Tensor, size: int, generator: torch.Generator, noise: float = 0.15) -> torch.Tensor:
    """Images (N, 3, size, size) of flat colours ``NAMES[labels]`` plus a little pixel noise."""
    rgb = torch.tensor([COLOURS[n] for n in NAMES])[labels]
    images = rgb[:, :, None, None] + noise * torch.randn(len(labels), 3, size, size, generator=generator)
    return images.clamp(-1, 1)


def test_accuracy_counts_top1_matches():
    clip = MeanColourCLIP()
    labels = torch.tensor([0, 1, 2, 3])
    images = solid(labels, 8, torch.Generator().manual_seed(0), noise=0.0)
    prompts = [f"a {n}" for n in NAMES]
    assert zero_shot_predict(clip, images, prompts).tolist() == [0, 1, 2, 3]
    assert zero_shot_accuracy(clip, images, labels, prompts) == 1.0
    assert zero_shot_accuracy(clip, images, torch.tensor([0, 1, 3, 2]), prompts) == 0.5
    with pytest.raises(InputError):
        zero_shot_accuracy(clip, images, torch.tensor([0, 1]), prompts)
    with pytest.raises(InputError):
        zero_shot_accuracy(clip, images, torch.tensor([0, 1, 2, 99]), prompts)


def test_retrieval_report_groups_and_confusions():
    clip = MeanColourCLIP()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1])
    images = solid(labels, 8, g, noise=0.0)
    captions = ["a red", "a green", "a blue", "a red", "a blue"]  # the last one is wrong
    dataset = [{"image": im, "caption": c, "held_out": i >= 3} for i, (im, c) in enumerate(zip(images, captions))]
    dataset.append({"image": images[0], "caption": "not a prompt"})  # skipped by default
    prompts = ["a red", "a green", "a blue"]
    report = retrieval_report(
        clip, dataset, prompts, group=lambda it: "held_out" if it.get("held_out") else "seen", batch_size=2
    )
    assert report["n"] == 5 and report["accuracy"] == pytest.approx(0.8)
    assert report["groups"] == {"held_out": {"accuracy": 0.5, "n": 2}, "seen": {"accuracy": 1.0, "n": 3}}
    assert report["per_prompt"]["a blue"] == {"accuracy": 0.5, "n": 2}
    assert report["confusions"] == [{"true": "a blue", "predicted": "a green", "count": 1}]
    # Tuples and a target function work too; limit stops early.
    tuples = [(d["image"], d["caption"]) for d in dataset[:3]]
    report = retrieval_report(clip, tuples, prompts, target=lambda it: it[1], limit=2)
    assert report["n"] == 2 and report["accuracy"] == 1.0
    with pytest.raises(InputError):
        retrieval_report(clip, [{"image": images[0], "caption": "nothing"}], prompts)


def test_tiny_clip_learns_colour_names_zero_shot(single_thread):
    """~150 AdamW steps on 16 px solid colours: zero-shot naming > 90% on fresh images."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    captions = [t.format(n) for n in NAMES for t in TEMPLATES]
    tokenizer = Tokenizer.train(captions)
    model = CLIP(tiny_config(tokenizer.vocab_size, vision_depth=1, text_depth=1, context_length=8))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    for _ in range(150):
        labels = torch.randint(len(NAMES), (32,), generator=g)
        templates = torch.randint(len(TEMPLATES), (32,), generator=g)
        tokens = tokenizer.encode(
            [TEMPLATES[t].format(NAMES[c]) for c, t in zip(labels.tolist(), templates.tolist())], 8
        )
        img, txt, scale = model(solid(labels, 16, g), tokens)
        loss = contrastive_loss(img, txt, scale, caption_ids=caption_ids_from_tokens(tokens))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    frozen = FrozenCLIP.from_model(model, tokenizer)
    test_g = torch.Generator().manual_seed(123)
    labels = torch.arange(len(NAMES)).repeat(30)
    images = solid(labels, 16, test_g)
    for template in ["a {} image", "{}", "the colour {}"]:
        acc = zero_shot_accuracy(frozen, images, labels, [template.format(n) for n in NAMES])
        assert acc > 0.9, (template, acc)
