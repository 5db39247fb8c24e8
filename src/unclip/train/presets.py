"""Named training presets: ``(stage name, preset name) -> dict of settings``.

A preset bundles what ``unclip train STAGE --preset P`` needs (network config fields,
TrainConfig fields, batch size, ...) under a short name such as ``"tiny"`` or ``"shapes"``.
This module is only the registry; the presets themselves are registered by the stages.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError

_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}


def register_preset(stage_name: str, preset_name: str, values: dict[str, Any], *, overwrite: bool = False) -> None:
    """Register ``values`` as preset ``preset_name`` of stage ``stage_name`` (a deep copy is stored).

    Registering the same name again with equal values is a no-op; with different values it
    raises ConfigError unless ``overwrite=True`` (so two modules cannot silently fight over a name).
    """
    if not isinstance(values, dict):
        raise ConfigError(f"preset {stage_name}/{preset_name} must be a dict, got {type(values).__name__}")
    presets = _PRESETS.setdefault(stage_name, {})
    if preset_name in presets and presets[preset_name] != values and not overwrite:
        raise ConfigError(f"preset '{preset_name}' of stage '{stage_name}' is already registered with other values; pass overwrite=True to replace it")
    presets[preset_name] = copy.deepcopy(values)


def get_preset(stage_name: str, preset_name: str) -> dict[str, Any]:
    """A fresh copy of a registered preset (callers may modify it freely).

    Raises:
        ConfigError: the stage or the preset is unknown; the message lists what exists.
    """
    if stage_name not in _PRESETS:
        known = sorted(_PRESETS) or ["(none registered)"]
        raise ConfigError(f"no presets for stage '{stage_name}'; stages with presets: {', '.join(known)}")
    presets = _PRESETS[stage_name]
    if preset_name not in presets:
        raise ConfigError(f"unknown preset '{preset_name}' for stage '{stage_name}'; available: {', '.join(sorted(presets))}")
    return copy.deepcopy(presets[preset_name])


def list_presets(stage_name: str | None = None) -> dict[str, list[str]]:
    """Registered preset names, per stage (only ``stage_name``'s when given)."""
    stages = [stage_name] if stage_name is not None else sorted(_PRESETS)
    return {s: sorted(_PRESETS.get(s, {})) for s in stages}
