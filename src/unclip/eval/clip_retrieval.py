"""Zero-shot retrieval of our CLIP on ``shapes`` (the foundation issue's acceptance figure).

Image-to-caption top-1 among the 32 single-object captions ``a {color} {shape}``, on the
single-object images of the test split, reported overall, on the seen colour-shape pairs
and on the held-out pairs (absent from training) separately.
"""

from __future__ import annotations

import torch

from ..data.shapes import COLORS, HELD_OUT_PAIRS, SHAPES, ShapesDataset


def single_object_prompts() -> tuple[list[str], list[tuple[str, str]]]:
    """The 32 prompts ``a {color} {shape}`` and their (colour, shape) pairs, in a fixed order."""
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    return [f"a {c} {s}" for c, s in pairs], pairs


@torch.no_grad()
def clip_retrieval_report(
    clip, *, data: str = "shapes", seed: int = 0, num_images: int = 2000, size: int | None = None
) -> dict:
    """Top-1 retrieval figures of a FrozenCLIP on the shapes test split (single objects)."""
    if data != "shapes":
        raise ValueError("retrieval is defined on the shapes dataset only")
    prompts, pairs = single_object_prompts()
    dataset = ShapesDataset(split="test", size=size or clip.image_size, length=num_images, seed=seed)
    images, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        objects = item["attributes"]["objects"]
        if len(objects) != 1:
            continue
        images.append(item["image"])
        labels.append(pairs.index((objects[0]["color"], objects[0]["shape"])))
    x = torch.stack(images).to(clip.device)
    y = torch.tensor(labels)
    image_embed = clip.encode_image(x).float().cpu()
    text_embed = clip.encode_text(prompts).float().cpu()
    pred = (image_embed @ text_embed.t()).argmax(dim=1)
    correct = pred == y
    held = torch.tensor([pairs[i] in HELD_OUT_PAIRS for i in labels])
    colour_ok = torch.tensor([pairs[p][0] == pairs[t][0] for p, t in zip(pred.tolist(), labels)])
    shape_ok = torch.tensor([pairs[p][1] == pairs[t][1] for p, t in zip(pred.tolist(), labels)])

    def rate(mask: torch.Tensor) -> float | None:
        return float(mask.float().mean()) if mask.numel() else None

    return {
        "task": "image-to-caption top-1 among 32 'a {color} {shape}' captions, shapes test split, single-object images",
        "num_images": int(y.numel()),
        "top1": rate(correct),
        "top1_seen_pairs": rate(correct[~held]),
        "top1_held_out_pairs": rate(correct[held]),
        "num_held_out_images": int(held.sum()),
        "colour_accuracy": rate(colour_ok),
        "shape_accuracy": rate(shape_ok),
    }
