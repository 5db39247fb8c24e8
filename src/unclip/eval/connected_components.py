"""Connected components of a class map on the CPU without scipy (used by the shapes scorer).

4-connected components of equal class, computed over horizontal runs by min-label
propagation with pointer jumping; vectorised over pixels in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError


def _label_runs(classes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """4-connected components of equal class over horizontal runs, vectorised (no scipy).

    classes: (B, H, W) int, negative where there is no object. Returns, in flat pixel
    indices over the batch: fg (N,) the labelled pixels, ascending; pixel_run (N,) the run
    of each; start, end (R,) the first and last pixel of each run; root (R,) a run id
    shared by all runs of one component. Grouping pixels into runs (a cumulative sum over
    run starts) leaves a graph of a few thousand nodes. Two same-class runs in adjacent
    rows touch iff the first pixel of one lies over or under the other, so those pairs are
    the edges. Min-label propagation with pointer jumping (``lab = lab[lab]``) shortens
    label chains geometrically, so few rounds are needed.
    """
    B, H, W = classes.shape
    c, fg = classes, classes >= 0
    same_left = torch.zeros_like(fg)
    same_left[:, :, 1:] = c[:, :, 1:] == c[:, :, :-1]
    same_right = torch.zeros_like(fg)
    same_right[:, :, :-1] = same_left[:, :, 1:]
    start, end = fg & ~same_left, fg & ~same_right
    run_id = torch.cumsum(start.reshape(-1), 0).view(B, H, W) - 1
    starts = torch.nonzero(start.reshape(-1)).squeeze(1)
    ends = torch.nonzero(end.reshape(-1)).squeeze(1)
    fg_idx = torch.nonzero(fg.reshape(-1)).squeeze(1)
    lab = torch.arange(starts.numel())
    m = fg[:, :-1] & (c[:, :-1] == c[:, 1:]) & (start[:, :-1] | start[:, 1:])
    a, b = run_id[:, :-1][m], run_id[:, 1:][m]
    u, w = torch.cat([a, b]), torch.cat([b, a])
    while u.numel():
        new = lab.scatter_reduce(0, u, lab[w], reduce="amin", include_self=True)
        new = new[new][new]
        if torch.equal(new, lab):
            break
        lab = new
    return fg_idx, run_id.reshape(-1)[fg_idx], starts, ends, lab


def label_components(classes: Tensor) -> Tensor:
    """4-connected components of equal class.

    classes: (B, H, W) int, negative where there is no object. Returns (B, H, W) int64
    labels: all pixels of a component carry one id, unique over the batch (the flat index
    ``b*H*W + y*W + x`` of one of its pixels); -1 where ``classes`` is negative.
    """
    if classes.dim() != 3:
        raise InputError(f"classes: expected a (B, H, W) integer map, got {tuple(classes.shape)}")
    fg, pixel_run, start, _, root = _label_runs(classes)
    labels = torch.full((classes.numel(),), -1, dtype=torch.int64)
    labels[fg] = start[root[pixel_run]]
    return labels.view(classes.shape)
