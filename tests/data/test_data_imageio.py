"""imageio: tensor <-> PIL, grids, and the NNN.png + grid.png + manifest.json layout."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from unclip.errors import InputError
from unclip.storage.imageio import (
    _file_names,
    center_crop_resize,
    make_grid,
    pil_to_tensor,
    tensor_to_pil,
    write_image_set,
)


def test_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (2, 3, 5, 7), generator=g).float()
    x = levels / 127.5 - 1
    ims = tensor_to_pil(x)
    assert len(ims) == 2 and ims[0].size == (7, 5) and ims[0].mode == "RGB"
    back = pil_to_tensor(ims)
    assert back.shape == (2, 3, 5, 7) and back.dtype == torch.float32
    assert torch.allclose(back, x, atol=1e-6)
    assert ims[0].getpixel((0, 0)) == tuple(int(v) for v in levels[0, :, 0, 0])


def test_tensor_to_pil_clips_and_accepts_single():
    ims = tensor_to_pil(torch.full((3, 2, 2), 3.0))
    assert ims[0].getpixel((1, 1)) == (255, 255, 255)
    assert tensor_to_pil(torch.full((1, 3, 2, 2), -5.0))[0].getpixel((0, 0)) == (0, 0, 0)
    with pytest.raises(InputError):
        tensor_to_pil(torch.zeros(1, 4, 2, 2))


def test_pil_to_tensor_sizes():
    a, b = Image.new("RGB", (10, 6), (255, 0, 0)), Image.new("L", (4, 4), 0)
    with pytest.raises(InputError, match="different sizes"):
        pil_to_tensor([a, b])
    x = pil_to_tensor([a, b], size=4)
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[0, 0], torch.ones(4, 4)) and torch.allclose(x[1], -torch.ones(3, 4, 4))
    assert pil_to_tensor(a).shape == (1, 3, 6, 10)
    assert center_crop_resize(a, 3).size == (3, 3)


def test_make_grid_layout():
    ims = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(5)]
    g = make_grid(ims, pad=1)  # 3 columns x 2 rows
    assert g.size == (1 + 3 * 5, 1 + 2 * 5)
    assert g.getpixel((1, 1)) == (0, 0, 0) and g.getpixel((6, 1)) == (40, 0, 0) and g.getpixel((1, 6)) == (120, 0, 0)
    assert g.getpixel((0, 0)) == (255, 255, 255)
    assert make_grid(ims, ncols=5, pad=0).size == (20, 4)
    with pytest.raises(InputError):
        make_grid([])


def test_write_image_set(tmp_path):
    ims = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(3)]
    out = write_image_set(tmp_path / "o", ims, [{"prompt": f"p{i}", "seed": i} for i in range(3)], {"command": "test"})
    assert out == tmp_path / "o"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000.png", "001.png", "002.png", "grid.png", "manifest.json"]  # no temp files left
    m = json.loads((out / "manifest.json").read_text())
    assert m["command"] == "test"
    assert m["images"] == [{"file": f"00{i}.png", "prompt": f"p{i}", "seed": i} for i in range(3)]
    assert Image.open(out / "001.png").getpixel((0, 0)) == (1, 0, 0)
    with pytest.raises(InputError, match="match"):
        write_image_set(tmp_path / "p", ims, [{}], {})
    with pytest.raises(InputError):
        write_image_set(tmp_path / "p", [], [], {})


def test_file_names_widen_past_999():
    assert _file_names(3) == ["000.png", "001.png", "002.png"]
    names = _file_names(1001)
    assert names[0] == "0000.png" and names[-1] == "1000.png" and len(set(names)) == 1001
