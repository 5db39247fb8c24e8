"""Validation of a model directory's ``model.json`` beyond its format tag, and of component builds.

``model.json`` is user-editable JSON: ``"components": 5`` or ``"defaults": {"decoder_steps":
-5}`` must be an error naming the field, not a Python traceback or a silently odd sample.
:func:`loading` turns whatever building a network from a damaged ``config.json`` raises
(a negative width, a zero head count...) into a :class:`CheckpointError` naming the component.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import CheckpointError, UnclipError
from .integrity import json_type_error

_FIX = "Restore model.json or re-export the model"
# SamplingDefaults fields: (kind, lowest allowed value); None for "size" is allowed
_DEFAULTS = {
    "prior_steps": (int, 1),
    "best_of": (int, 1),
    "decoder_steps": (int, 1),
    "prior_guidance": (float, 0.0),
    "decoder_guidance": (float, 0.0),
    "eta": (float, 0.0),
    "size": (int, 1),
}


def check_model_meta(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Check the types and ranges of ``model.json``'s ``components``, ``defaults`` and ``info``."""
    comps = meta.get("components", {})
    if not isinstance(comps, dict):
        raise json_type_error(comps, "an object naming each component's folder", f"{path}: 'components'", _FIX)
    for name, sub in comps.items():
        if not isinstance(sub, str) or not sub or Path(sub).is_absolute() or ".." in Path(sub).parts:
            raise json_type_error(
                sub, "a folder name inside the model directory", f"{path}: components['{name}']", _FIX
            )
    defaults = meta.get("defaults", {})
    if not isinstance(defaults, dict):
        raise json_type_error(defaults, "an object of sampling defaults", f"{path}: 'defaults'", _FIX)
    for key, value in defaults.items():
        if key not in _DEFAULTS or (key == "size" and value is None):
            continue  # unknown keys are reported by config_from_dict with the list of valid ones
        kind, low = _DEFAULTS[key]
        ok_type = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (kind is float or isinstance(value, int))
        )
        if not ok_type or not math.isfinite(value) or value < low:
            raise json_type_error(value, f"a finite {kind.__name__} >= {low}", f"{path}: defaults['{key}']", _FIX)
    info = meta.get("info", {})
    if info is not None and not isinstance(info, dict):
        raise json_type_error(info, "an object", f"{path}: 'info'", _FIX)


@contextlib.contextmanager
def loading(root: str | os.PathLike, component: str) -> Iterator[None]:
    """Turn any error raised while building ``component`` of ``root`` into a CheckpointError."""
    try:
        yield
    except UnclipError:
        raise
    except MemoryError as exc:
        raise CheckpointError(
            f"{Path(root) / component}: its config asks for more memory than this machine has ({exc}); "
            "check config.json or use a machine with more memory"
        ) from exc
    except (
        TypeError,
        ValueError,
        RuntimeError,
        KeyError,
        IndexError,
        AttributeError,
        ArithmeticError,
        AssertionError,
    ) as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{Path(root) / component}: could not build the component from its config.json "
            f"({type(exc).__name__}: {text}); "
            "the file is damaged or from another program: restore it or re-export the model"
        ) from exc
