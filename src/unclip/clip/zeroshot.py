"""Zero-shot classification and caption retrieval: does the CLIP we trained work?

CLIP classifies an image zero-shot by embedding one prompt per class and taking the
prompt with the highest cosine similarity (Radford et al. 2021, section 3.1). On
``shapes`` the prompts are the 32 captions ``a {color} {shape}``; the held-out
colour-shape pairs, never seen in training, measure compositional generalisation.

Functions here take anything with CLIP's inference interface (``encode_text(list[str])``
and ``encode_image(images)``, unit-norm): a :class:`~unclip.clip.frozen.FrozenCLIP` or a
pretrained adapter.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch

from ..errors import InputError


class ClipLike(Protocol):
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...


def zero_shot_scores(clip: ClipLike, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Cosine similarities (N, P) between images (N, 3, H, W) in [-1, 1] and ``prompts``."""
    if not prompts:
        raise InputError("zero-shot classification needs at least one prompt")
    text = clip.encode_text(list(prompts)).float()
    image = clip.encode_image(images).float().to(text.device)
    return image @ text.t()


def zero_shot_predict(clip: ClipLike, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Index (N,) of the best-matching prompt for each image."""
    return zero_shot_scores(clip, images, prompts).argmax(dim=1).cpu()


def zero_shot_accuracy(
    clip: ClipLike, images: torch.Tensor, true_prompt_index: torch.Tensor | Sequence[int], prompts: Sequence[str]
) -> float:
    """Fraction of images (N, 3, H, W) whose top-1 prompt is ``true_prompt_index`` (N,)."""
    truth = torch.as_tensor(true_prompt_index).long().cpu()
    if truth.shape != (images.shape[0],):
        raise InputError(f"true_prompt_index must have shape ({images.shape[0]},), got {tuple(truth.shape)}")
    if len(truth) == 0:
        raise InputError("zero_shot_accuracy got no images")
    if int(truth.min()) < 0 or int(truth.max()) >= len(prompts):
        raise InputError(f"true_prompt_index values must lie in [0, {len(prompts)})")
    return float((zero_shot_predict(clip, images, prompts) == truth).float().mean())


def _item_image(item: Any) -> torch.Tensor:
    image = item.get("image") if isinstance(item, dict) else item[0]
    if isinstance(image, torch.Tensor):
        return image
    try:  # a PIL image at the edge: to [-1, 1] (3, H, W)
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    except AttributeError as exc:
        raise InputError(
            f"dataset items must carry an image tensor (3, H, W) or a PIL image, got {type(image).__name__}"
        ) from exc
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _item_caption(item: Any) -> str | None:
    if isinstance(item, dict):
        return item.get("caption")
    return item[1] if len(item) > 1 and isinstance(item[1], str) else None


def _summary(correct: np.ndarray) -> dict[str, float | int]:
    return {"accuracy": float(correct.mean()) if len(correct) else float("nan"), "n": int(len(correct))}


def retrieval_report(
    clip: ClipLike,
    dataset: Iterable[Any],
    prompts: Sequence[str],
    *,
    target: Callable[[Any], str | None] | None = None,
    group: Callable[[Any], str | None] | None = None,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Image-to-caption top-1 retrieval among ``prompts`` over a dataset.

    Args:
        clip: a FrozenCLIP or anything with the same ``encode_text``/``encode_image``.
        dataset: items that are dicts with ``"image"`` ((3, H, W) tensor in [-1, 1] or PIL)
            and ``"caption"``, or tuples ``(image, caption, ...)``.
        prompts: candidate captions; each image is scored against all of them.
        target: item -> the prompt that is correct for it, or None to skip the item.
            Default: the item's caption, and items whose caption is not a prompt are skipped.
        group: item -> a group name (e.g. ``"held_out"``) reported separately, or None.
        limit: stop after this many scored items.
        batch_size: images encoded per call.
    Returns:
        JSON-able dict: ``accuracy`` and ``n`` over all scored items, ``per_prompt``
        {prompt: {accuracy, n}}, ``groups`` {name: {accuracy, n}}, and ``confusions``:
        the 10 most frequent (true, predicted) mistakes with counts.
    """
    prompts = list(prompts)
    index = {p: i for i, p in enumerate(prompts)}
    if len(index) != len(prompts):
        raise InputError("retrieval_report: prompts contain duplicates")
    text = clip.encode_text(prompts).float()
    target = target or _item_caption
    truths: list[int] = []
    groups: list[str | None] = []
    preds: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            image = clip.encode_image(torch.stack(batch)).float().to(text.device)
            preds.append((image @ text.t()).argmax(dim=1).cpu())
            batch.clear()

    for item in dataset:
        if limit is not None and len(truths) >= limit:
            break
        want = target(item)
        if want is None or want not in index:
            continue
        truths.append(index[want])
        groups.append(group(item) if group else None)
        batch.append(_item_image(item))
        if len(batch) >= batch_size:
            flush()
    flush()
    if not truths:
        raise InputError(
            "retrieval_report scored no items: no item's target is among the prompts; pass target= to map items to "
            "prompts"
        )
    truth = np.asarray(truths)
    pred = torch.cat(preds).numpy()
    correct = pred == truth
    report: dict[str, Any] = _summary(correct)
    report["per_prompt"] = {p: _summary(correct[truth == i]) for i, p in enumerate(prompts) if (truth == i).any()}
    names = sorted({g for g in groups if g is not None})
    garr = np.asarray([g if g is not None else "" for g in groups], dtype=object)
    report["groups"] = {g: _summary(correct[garr == g]) for g in names}
    wrong = ~correct
    pairs, counts = (
        np.unique(np.stack([truth[wrong], pred[wrong]], axis=1), axis=0, return_counts=True)
        if wrong.any()
        else (np.zeros((0, 2), int), np.zeros(0, int))
    )
    order = np.argsort(-counts, kind="stable")[:10]
    report["confusions"] = [
        {"true": prompts[int(pairs[k, 0])], "predicted": prompts[int(pairs[k, 1])], "count": int(counts[k])}
        for k in order
    ]
    return report
