"""The preset registry."""

import pytest

from unclip.errors import ConfigError
from unclip.train import get_preset, list_presets, register_preset


def test_register_and_get_returns_a_copy():
    register_preset("test_stage_a", "tiny", {"train": {"steps": 5}, "width": 8})
    preset = get_preset("test_stage_a", "tiny")
    assert preset == {"train": {"steps": 5}, "width": 8}
    preset["train"]["steps"] = 99
    assert get_preset("test_stage_a", "tiny")["train"]["steps"] == 5
    assert "tiny" in list_presets("test_stage_a")["test_stage_a"]


def test_unknown_preset_lists_available_names():
    register_preset("test_stage_b", "small", {"a": 1})
    register_preset("test_stage_b", "large", {"a": 2})
    with pytest.raises(ConfigError, match="available: large, small"):
        get_preset("test_stage_b", "medium")
    with pytest.raises(ConfigError, match="test_stage_b"):
        get_preset("no_such_stage", "small")


def test_conflicting_registration_needs_overwrite():
    register_preset("test_stage_c", "p", {"a": 1})
    register_preset("test_stage_c", "p", {"a": 1})  # same values: fine
    with pytest.raises(ConfigError, match="overwrite"):
        register_preset("test_stage_c", "p", {"a": 2})
    register_preset("test_stage_c", "p", {"a": 2}, overwrite=True)
    assert get_preset("test_stage_c", "p") == {"a": 2}
