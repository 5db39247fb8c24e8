"""Image manipulations through the bipartite latent (z_i, x_T) (unCLIP section 3).

* :mod:`.latent`: :class:`BipartiteLatent`, z_i and one noise per cascade level, one file format;
* :mod:`.geometry`: slerp, the text-diff direction, theta schedules;
* :mod:`.invert`: DDIM inversion and decoding through the decoder and the upsampler stages;
* :mod:`.edits`: variations, interpolations and text diffs, as latents to decode and as
  one-call functions;
* :mod:`.probe`: PCA probing of CLIP space (Figure 7).
"""

from .edits import (
    NOISE_PATHS,
    decode,
    fixed_noise_latent,
    interpolate,
    interpolation_latent,
    text_diff,
    text_diff_latent,
    vary,
)
from .geometry import slerp, text_diff_direction, theta_schedule
from .invert import (
    CONDITIONS,
    STAGE_INVERSIONS,
    ImageInput,
    as_image_tensor,
    decode_latent,
    invert,
    manipulation_diffusion,
    manipulation_model_fn,
    reconstruct,
)
from .latent import (
    DEFAULT_GUIDANCE,
    DEFAULT_REFINE,
    DEFAULT_STEPS,
    LATENT_FORMAT,
    LATENT_VERSION,
    MIN_ALPHA_BAR,
    BipartiteLatent,
)
from .probe import DEFAULT_DIMS, embed_split, image_relative_errors, pca_probe_latent, probe_pca

__all__ = [
    "BipartiteLatent", "CONDITIONS", "DEFAULT_DIMS", "DEFAULT_GUIDANCE", "DEFAULT_REFINE", "DEFAULT_STEPS",
    "ImageInput",
    "LATENT_FORMAT", "LATENT_VERSION", "MIN_ALPHA_BAR", "NOISE_PATHS", "STAGE_INVERSIONS", "as_image_tensor",
    "decode", "decode_latent",
    "embed_split", "fixed_noise_latent", "image_relative_errors", "interpolate", "interpolation_latent", "invert",
    "manipulation_diffusion", "manipulation_model_fn", "pca_probe_latent", "probe_pca", "reconstruct", "slerp",
    "text_diff", "text_diff_direction", "text_diff_latent", "theta_schedule", "vary",
]  # fmt: skip
