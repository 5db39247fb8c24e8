"""Image-generation metrics on feature vectors: FID, precision/recall, diversity, CLIP score.

Everything here takes features (N, D) that some network produced (Inception-v3 pool
features from :mod:`unclip.eval.inception` for FID; CLIP embeddings for diversity), so the
maths is pure torch, testable on synthetic Gaussians, and independent of any extractor.

* Frechet distance (FID, Heusel et al. 2017): between Gaussians fitted to two feature sets,
  ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``.
* Improved precision and recall (Kynkaenniemi et al. 2019): the fraction of fake samples
  inside the real k-NN manifold, and of real samples inside the fake one.
* Diversity: mean pairwise distance between samples that share a caption.
* CLIP score: cosine between each image's and its caption's CLIP embeddings.

Reference statistics are cached as safetensors (:class:`FeatureStats`, :func:`reference_stats`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..storage.checkpoint import load_tensors, save_tensors

STATS_FORMAT = "unclip-feature-stats"
STATS_VERSION = 1


def _as_features(x: torch.Tensor | np.ndarray, what: str = "features") -> torch.Tensor:
    """A 2-D float64 CPU tensor from a tensor or array; errors name the bad shape."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise InputError(f"{what} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return t


@dataclass
class FeatureStats:
    """Gaussian statistics of a feature set: mean ``mu`` (D,), covariance ``sigma`` (D, D), count ``n``.

    Both tensors are float64; ``sigma`` is the unbiased (N - 1) covariance, as ``np.cov``.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> "FeatureStats":
        """Fit the statistics of features (N, D), N >= 2."""
        x = _as_features(features)
        if x.shape[0] < 2:
            raise InputError(f"feature statistics need at least 2 samples, got {x.shape[0]}")
        mu = x.mean(0)
        centred = x - mu
        sigma = centred.t() @ centred / (x.shape[0] - 1)
        return cls(mu=mu, sigma=sigma, n=int(x.shape[0]))

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def save(self, path: str | os.PathLike, name: str = "") -> Path:
        """Write ``mu``, ``sigma`` and ``n`` to a safetensors file, atomically."""
        path = Path(path)
        save_tensors(
            path,
            {"mu": self.mu.double(), "sigma": self.sigma.double()},
            metadata={"format": STATS_FORMAT, "version": str(STATS_VERSION), "n": str(self.n), "name": name},
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Read statistics written by :meth:`save`; a wrong or damaged file raises CheckpointError."""
        from safetensors import safe_open

        path = Path(path)
        tensors = load_tensors(path)  # names the file if it is missing or not safetensors
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != STATS_FORMAT:
            raise CheckpointError(
                f"{path} is not a feature-statistics file (format {meta.get('format')!r}, expected {STATS_FORMAT!r})"
            )
        if meta.get("version") != str(STATS_VERSION):
            raise CheckpointError(
                f"{path} has feature-statistics version {meta.get('version')}, this unclip reads {STATS_VERSION}; "
                "recompute it"
            )
        mu, sigma = tensors.get("mu"), tensors.get("sigma")
        if mu is None or sigma is None or mu.dim() != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise CheckpointError(
                f"{path}: expected mu (D,) and sigma (D, D), found "
                f"{ ({k: tuple(v.shape) for k, v in tensors.items()}) }"
            )
        try:
            n = int(meta.get("n", ""))
        except ValueError as exc:
            raise CheckpointError(f"{path}: sample count 'n' missing from the metadata") from exc
        return cls(mu=mu.double(), sigma=sigma.double(), n=n)


FeaturesOrStats = Union[torch.Tensor, np.ndarray, FeatureStats]


def _psd_sqrt(sym: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    w, v = torch.linalg.eigh(sym)
    return (v * w.clamp(min=0).sqrt()) @ v.t()


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``Tr((S1 S2)^{1/2})`` for PSD ``S1``, ``S2`` (float64).

    ``S1 S2`` is not symmetric, but it is similar to ``S1^{1/2} S2 S1^{1/2}``, which is
    symmetric PSD; its eigenvalues are those of ``S1 S2``, so the trace of the square root is
    the sum of their square roots. Two symmetric eigendecompositions, no complex parts to
    discard (the ``scipy.linalg.sqrtm`` route of the reference code).
    """
    root = _psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    middle = (middle + middle.t()) / 2
    return float(torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum())


def _trace_sqrt_from_features(x1: torch.Tensor, x2: torch.Tensor) -> float:
    """``Tr((S1 S2)^{1/2})`` straight from features when N1, N2 are small.

    With ``S = A A^T`` for ``A = centred(X)^T / sqrt(N - 1)`` (D, N), the non-zero eigenvalues
    of ``S1 S2`` are those of ``(A1^T A2)(A1^T A2)^T``, so the trace is the nuclear norm of
    the (N1, N2) matrix ``A1^T A2``: exact, and far cheaper than two D x D decompositions.
    """
    a1 = (x1 - x1.mean(0)) / (x1.shape[0] - 1) ** 0.5
    a2 = (x2 - x2.mean(0)) / (x2.shape[0] - 1) ** 0.5
    return float(torch.linalg.svdvals(a1 @ a2.t()).sum())


def frechet_distance(a: FeaturesOrStats, b: FeaturesOrStats) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID on Inception features).

    ``a`` and ``b`` are features (N, D) or :class:`FeatureStats`. Computed in float64 as
    ``|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})``, clamped at 0 (rounding can
    make a zero distance a tiny negative). Symmetric in ``a`` and ``b``.
    """
    raw_a = None if isinstance(a, FeatureStats) else _as_features(a, "first feature set")
    raw_b = None if isinstance(b, FeatureStats) else _as_features(b, "second feature set")
    sa = a if isinstance(a, FeatureStats) else FeatureStats.from_features(raw_a)
    sb = b if isinstance(b, FeatureStats) else FeatureStats.from_features(raw_b)
    if sa.dim != sb.dim:
        raise InputError(f"feature dimensions differ: {sa.dim} vs {sb.dim}; compare features of the same extractor")
    mean_term = float(((sa.mu.double() - sb.mu.double()) ** 2).sum())
    traces = float(torch.trace(sa.sigma.double()) + torch.trace(sb.sigma.double()))
    if raw_a is not None and raw_b is not None and max(raw_a.shape[0], raw_b.shape[0]) <= sa.dim:
        cross = _trace_sqrt_from_features(raw_a, raw_b)
    else:
        cross = trace_sqrt_product(sa.sigma.double(), sb.sigma.double())
    return max(mean_term + traces - 2.0 * cross, 0.0)


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance (N,) from each row of ``x`` to its k-th nearest other row."""
    radii = []
    for block in x.split(chunk):
        d = torch.cdist(block, x)
        # The smallest distance is the point to itself (0), so the k-th neighbour is entry k.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside_manifold(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Bool (M,): is each query within some support sample's k-NN ball?"""
    inside = []
    for block in query.split(chunk):
        inside.append((torch.cdist(block, support) <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def precision_recall(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 3, *, chunk: int = 1024
) -> dict[str, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019, section 3) of features (N, D).

    Each set's manifold is the union of balls around its samples, with radius the distance
    to the sample's k-th nearest neighbour in the same set (the paper uses k = 3).
    Precision: the fraction of fake samples inside the real manifold (fidelity).
    Recall: the fraction of real samples inside the fake manifold (coverage).

    Returns ``{"precision", "recall", "k"}``. Distances are Euclidean, in float64, computed
    in blocks of ``chunk`` rows to bound memory at ``chunk * N``.
    """
    r = _as_features(real, "real features")
    f = _as_features(fake, "fake features")
    if r.shape[1] != f.shape[1]:
        raise InputError(f"feature dimensions differ: real {r.shape[1]} vs fake {f.shape[1]}")
    if k < 1 or k >= min(r.shape[0], f.shape[0]):
        raise InputError(
            f"k must be in [1, {min(r.shape[0], f.shape[0]) - 1}] for {r.shape[0]} real and {f.shape[0]} fake "
            f"samples, got {k}"
        )
    real_radii = _kth_neighbour_radii(r, k, chunk)
    fake_radii = _kth_neighbour_radii(f, k, chunk)
    precision = _inside_manifold(f, r, real_radii, chunk).double().mean()
    recall = _inside_manifold(r, f, fake_radii, chunk).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


def mean_pairwise_distance(
    features: torch.Tensor | np.ndarray, groups: Sequence[Hashable] | torch.Tensor, metric: str = "cosine"
) -> float:
    """Diversity: mean distance between samples of the same group, averaged over groups.

    Args:
        features: (N, D), e.g. CLIP image embeddings of generated images.
        groups: N group ids (e.g. the prompt of each image); samples are only compared to
            others with the same id, and groups with one sample are skipped.
        metric: ``"cosine"`` (default; ``1 - cos``, in [0, 2], blind to feature scale) or
            ``"l2"`` (Euclidean).

    Each group's value is the mean over its unordered pairs; groups weigh equally. Zero
    when every group's samples are identical (a collapsed, seed-insensitive generator).
    """
    x = _as_features(features)
    ids = groups.tolist() if isinstance(groups, torch.Tensor) else list(groups)
    if len(ids) != x.shape[0]:
        raise InputError(f"got {x.shape[0]} feature rows but {len(ids)} group ids")
    if metric not in ("cosine", "l2"):
        raise InputError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    per_group = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        g = x[idx]
        if metric == "cosine":
            g = F.normalize(g, dim=1)
            d = (1.0 - g @ g.t()).clamp(min=0)
        else:
            d = torch.cdist(g, g)
        iu = torch.triu_indices(len(idx), len(idx), offset=1)
        per_group.append(d[iu[0], iu[1]].mean())
    if not per_group:
        raise InputError("mean_pairwise_distance needs a group with at least 2 samples (several seeds per prompt)")
    return float(torch.stack(per_group).mean())


class _ClipLike(Protocol):
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def clip_score(clip: _ClipLike, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Cosine (N,) between each image's CLIP embedding and its prompt's.

    ``images`` (N, 3, H, W) in [-1, 1] and ``prompts`` (N strings) pair up one to one;
    ``clip`` is anything with CLIP's inference interface (e.g. ``FrozenCLIP``). Embeddings are
    re-normalised, so the value is a true cosine. This is the raw cosine; CLIPScore
    (Hessel et al. 2021) reports ``2.5 * max(cos, 0)``, and some papers ``100 * cos``.
    """
    prompts = list(prompts)
    if images.dim() != 4 or images.shape[0] != len(prompts):
        raise InputError(
            f"clip_score needs one prompt per image: got images {tuple(images.shape)} and {len(prompts)} prompts"
        )
    text = F.normalize(clip.encode_text(prompts).float(), dim=-1)
    image = F.normalize(clip.encode_image(images).float(), dim=-1).to(text.device)
    return (image * text).sum(-1)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def reference_stats(
    name: str,
    compute: Callable[[], torch.Tensor | np.ndarray | FeatureStats],
    cache_dir: str | os.PathLike,
    *,
    refresh: bool = False,
) -> FeatureStats:
    """Statistics of a reference set, computed once and cached as ``cache_dir/NAME.safetensors``.

    ``compute`` returns features (N, D) or a :class:`FeatureStats`; it runs only when the
    cache file is absent (or ``refresh``). ``name`` should say everything the statistics
    depend on (dataset, split, count, image size, extractor), e.g.
    ``"shapes-test-2048-64px-inception"``; it must be a plain file name.
    """
    if not _NAME.match(name):
        raise InputError(
            f"reference statistics name {name!r} must be a plain file name (letters, digits, '.', '_', '-')"
        )
    path = Path(cache_dir) / f"{name}.safetensors"
    if path.is_file() and not refresh:
        return FeatureStats.load(path)
    result = compute()
    stats = result if isinstance(result, FeatureStats) else FeatureStats.from_features(result)
    stats.save(path, name=name)
    return stats
