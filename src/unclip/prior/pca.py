"""PCA of CLIP image embeddings: the autoregressive prior's first step (paper section 2.2) and
the probe of CLIP space (section 3.4, Figure 7) share it, and its one definition of error.

The AR prior does not model all E coordinates of z_i: it rotates z_i onto the principal
axes of the training embeddings and keeps only the leading ones. The paper keeps 319 of
1024 dimensions, the number that keeps the mean squared reconstruction error under 1%.

Definition used here (``num_components_for``): for embeddings x_n with mean mu and
covariance eigenvalues lambda_1 >= ... >= lambda_E (covariance normalised by N), the
mean squared reconstruction error of keeping k components is

    MSE(k) = mean_n || x_n - reconstruct(project_k(x_n)) ||^2 = sum_{j > k} lambda_j,

and the *relative* error is MSE(k) / MSE(0) with MSE(0) = sum_j lambda_j, the total
variance E||x - mu||^2 (the error of predicting every embedding by the mean). We keep the
smallest k with relative error < ``rel_error`` (strictly under 1% by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..storage.checkpoint import load_tensors, save_tensors


@dataclass
class PCA:
    """Principal axes of a set of vectors.

    Attributes:
        mean: (E,) mean of the fitted data.
        components: (E, E) orthonormal principal axes as *rows*, by decreasing eigenvalue.
        eigenvalues: (E,) variances along each axis (covariance normalised by N), decreasing.
    """

    mean: torch.Tensor
    components: torch.Tensor
    eigenvalues: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "PCA":
        """Fit on (N, E) vectors (in float64, via the eigendecomposition of the covariance)."""
        if x.dim() != 2 or x.shape[0] < 2:
            raise InputError(f"PCA.fit needs (N, E) data with N >= 2, got shape {tuple(x.shape)}")
        x64 = x.detach().to(torch.float64)
        mean = x64.mean(0)
        centred = x64 - mean
        cov = centred.T @ centred / x64.shape[0]
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)
        evals = evals[order].clamp_min(0.0)
        comps = evecs[:, order].T.contiguous()
        # Fix each axis' sign (largest-magnitude coordinate positive) so fits are reproducible.
        idx = comps.abs().argmax(dim=1)
        signs = torch.sign(comps[torch.arange(comps.shape[0]), idx])
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        dtype = x.dtype if x.dtype.is_floating_point else torch.float32
        return cls(mean.to(dtype), comps.to(dtype), evals.to(dtype))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def relative_errors(self) -> torch.Tensor:
        """(E + 1,) relative MSE of keeping k = 0..E components (see the module docstring)."""
        ev = self.eigenvalues.to(torch.float64)
        total = ev.sum().clamp_min(1e-300)
        kept = torch.cat([ev.new_zeros(1), torch.cumsum(ev, 0)])
        return ((total - kept) / total).clamp_min(0.0)

    def num_components_for(self, rel_error: float = 0.01) -> int:
        """The smallest k whose mean squared reconstruction error is < ``rel_error`` of the total variance."""
        if not 0.0 < rel_error <= 1.0:
            raise InputError(f"rel_error must be in (0, 1], got {rel_error}")
        errs = self.relative_errors()
        below = torch.nonzero(errs < rel_error).flatten()
        return int(below[0]) if below.numel() else self.dim

    def project(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """(N, E) -> (N, k) coefficients on the first ``k`` axes (all when None)."""
        k = self.dim if k is None else k
        comps = self.components[:k].to(x.dtype)
        return (x - self.mean.to(x.dtype)) @ comps.T

    def reconstruct(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(N, k) coefficients on the first k axes -> (N, E) vectors (mean added back)."""
        k = coeffs.shape[-1]
        return coeffs @ self.components[:k].to(coeffs.dtype) + self.mean.to(coeffs.dtype)

    def truncate(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """(..., E) vectors rebuilt from their first ``k`` coefficients (the mean for k = 0): (..., E)."""
        if not 0 <= int(k) <= self.dim:
            raise InputError(f"k must lie in [0, {self.dim}] (the number of components), got {k}")
        comps = self.components[: int(k)].to(x.dtype)
        mean = self.mean.to(x.dtype)
        return mean + ((x - mean) @ comps.T) @ comps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components, "eigenvalues": self.eigenvalues}

    def save(self, path: str | os.PathLike) -> None:
        """Write the three tensors to a safetensors file."""
        save_tensors(Path(path), self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCA":
        t = load_tensors(Path(path))
        return cls(t["mean"], t["components"], t["eigenvalues"])
