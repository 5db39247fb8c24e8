"""Import ``open_clip`` in the tests only, without torchvision.

``open_clip`` imports ``torchvision`` (for its image transforms and one batch-norm class),
and PyPI's torchvision wheel does not import beside the CPU torch this project pins
("operator torchvision::nms does not exist"); worse, once installed, it breaks
``transformers`` too, which imports it whenever it is present. So the library never
imports open_clip (OpenCLIP weights are read into transformers' CLIP, see
``unclip.clip.openclip``), and the tests, which compare that conversion with open_clip's
own forward, import open_clip over a stand-in ``torchvision`` whose every attribute is an
inert placeholder class. The model code under test uses none of them. The stand-in is
removed from ``sys.modules`` right after the import, so nothing else sees it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

_STAND_IN = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.ops",
    "torchvision.ops.misc",
)


class _Placeholder(type):
    """A class whose every attribute is another placeholder (``InterpolationMode.BICUBIC`` ...)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    module.__getattr__ = lambda attr: _Placeholder(attr, (), {})  # PEP 562
    return module


def import_open_clip():
    """``open_clip`` imported over a stand-in torchvision; skips when open_clip_torch is not installed."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch is not installed (pip install --no-deps open_clip_torch ftfy)")
    import transformers.models.clip.modeling_clip  # noqa: F401 - settle transformers' view of torchvision first

    real = {name: sys.modules.get(name) for name in _STAND_IN}
    if importlib.util.find_spec("torchvision") is None:
        sys.modules.update({name: _module(name) for name in _STAND_IN})
    try:
        import open_clip
    finally:
        for name, module in real.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return open_clip
