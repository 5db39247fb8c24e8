"""Foreign networks behind our (x_t, t, cond) calls: diffusers-layout unCLIP (Kakao Brain's Karlo).

Our diffusion maths is network-agnostic (DESIGN.md principle 1), so released weights plug in
through thin wrappers (principle 3, k-diffusion's ``external.py``): each adapter maps our
call onto a diffusers or transformers module and returns its raw output; the schedules,
samplers, guidance and inversion stay ours. Importing this package needs neither library;
:func:`load_diffusers_unclip` imports them when called (``pip install 'unclip[diffusers]'``).

- :mod:`.clip`: ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` as a FrozenCLIP
- :mod:`.prior`: ``PriorTransformer`` as our prior call, and Karlo's prior sampling
- :mod:`.decoder`: ``UnCLIPTextProjModel`` + ``UNet2DConditionModel`` as our decoder call
- :mod:`.upsampler`: ``super_res_first`` / ``super_res_last`` as our upsampler call
- :mod:`.schedules`: ``UnCLIPScheduler`` configs as our diffusion settings
- :mod:`.karlo`: the loader of a whole directory
"""

from .karlo import KarloComponents, is_diffusers_unclip, load_diffusers_unclip
from .schedules import StageSchedule, karlo_timesteps, stage_schedule

__all__ = [
    "KarloComponents",
    "StageSchedule",
    "is_diffusers_unclip",
    "karlo_timesteps",
    "load_diffusers_unclip",
    "stage_schedule",
]
