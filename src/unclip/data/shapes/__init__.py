"""The procedural ``shapes`` dataset, version 1 (``/work/shared/specs/shapes.md``).

Flat-coloured circles, squares, triangles and stars on a plain background, with a caption
drawn from fixed templates and exact ground truth (colour, shape, size, extent, centre,
region of each object). Every item is a pure function of ``(split, index, seed)``, so the
dataset needs no files, and a generated image can be scored against what its caption asks
for without any outside model.

Geometry, in canvas units (x right, y down, both in [0, 1]): every object owns the square
``centre +- extent / 2`` (its *box*). Circle and square fill it; the triangle's base is the
box's bottom edge and its apex the middle of the top edge (height == base); the star is
inscribed in the box's circle (outer radius ``extent / 2``, inner radius 0.4 of that, one
point straight up), so its drawn outline is a little narrower than the box
(:meth:`ObjectSpec.drawn_bbox`). Margins and the no-touching rule are enforced on the box,
which contains everything drawn, so they hold for the drawn pixels as well.

Randomness: one ``random.Random`` per item, seeded from a BLAKE2 hash of
``(split, seed, index)`` (never Python's salted ``hash()``), and only ``random()`` is called
on it, whose output is the same on every platform and Python version.
"""

from .captions import (
    caption_consistent,
    held_out_prompts,
    parse_caption,
    single_object_prompts,
)
from .dataset import ShapesDataset, ShapesInfiniteSampler, collate
from .raster import (
    object_coverage,
    render_array,
    render_batch,
    render_scene,
    shape_polygon,
)
from .sampling import item_rng, sample_scene, scene_for_prompt
from .spec import *  # noqa: F403  (every constant and type of the spec)
from .spec import (
    ObjectSpec,
    Scene,
    boxes_separated,
    eligible_relation_axes,
    is_held_out,
    region_of,
    relation_between,
)
