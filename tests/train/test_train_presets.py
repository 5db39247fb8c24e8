"""Every component's presets live in one module; lookups copy and errors list the choices."""

import pytest

from unclip.errors import ConfigError
from unclip.train import get_preset, get_run_preset, list_presets
from unclip.train.components import COMPONENTS, SETUPS


def test_every_component_has_the_test_preset():
    presets = list_presets()
    assert set(presets) == {"clip", "prior_diffusion", "decoder", "prior_ar", "upsampler"}
    assert all("tiny" in names for names in presets.values())
    assert set(SETUPS) == set(COMPONENTS)


def test_get_returns_a_copy():
    preset = get_preset("decoder", "tiny")
    preset["train"]["steps"] = 99
    assert get_preset("decoder", "tiny")["train"]["steps"] != 99
    run = get_run_preset("tiny")
    assert run["decoder"] == get_preset("decoder", "tiny") and "data" in run


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="tiny, small, gpu"):
        get_preset("decoder", "medium")
    with pytest.raises(ConfigError, match="prior_ar"):
        get_preset("no_such_component", "small")
    with pytest.raises(ConfigError, match="tiny"):
        get_run_preset("huge")
