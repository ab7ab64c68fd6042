"""Vision-pretraining targets: per-patch owners read off the object map, labels per record."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.imageqa.labels import BACKGROUND, IGNORE, PATCH_COVER, patch_objects, vision_labels
from evals.imageqa.records import ImageQARecord
from evals.imageqa.scenes import COLOURS, SHAPES, SceneObject


def record(objects=(), digit_index=None) -> ImageQARecord:
    return ImageQARecord("r", "count", "How many shapes are there?", "1", ("1", "2", "3", "4"), "r.png", Path("r.png"), tuple(objects), digit_index)


def test_a_square_on_the_grid_owns_exactly_its_patches():
    # square half-width round(0.85 * 9) = 8 -> pixels 8..24 x 8..24 on a 6x6 grid of 8-px patches:
    # patches (1,1),(1,2),(2,1),(2,2) fully; row/col 3 gets one pixel column (1/8 < PATCH_COVER)
    square = SceneObject("square", "red", 16, 16, 9)
    owners = patch_objects([square], 48, 6)
    assert [i for i, owner in enumerate(owners) if owner == 0] == [7, 8, 13, 14]
    assert all(owner in (-1, 0) for owner in owners)


def test_the_object_covering_more_of_a_patch_owns_it():
    left = SceneObject("square", "red", 3, 3, 4)  # half 3: pixels 0..6 x 0..6 of patch (0,0)
    right = SceneObject("square", "blue", 12, 4, 5)  # half 4: pixels 8..16 x 0..8: patches (0,1), one column of (0,2)
    owners = patch_objects([left, right], 48, 6)
    assert owners[0] == 0 and owners[1] == 1  # 49 of 64 pixels; 64 of 64
    assert owners[2] == -1  # 8 of 64 pixels of patch (0,2) < PATCH_COVER
    assert 8 / 64 < PATCH_COVER <= 49 / 64


def test_scene_labels_name_colour_and_shape_per_patch_and_the_count():
    objects = [SceneObject("square", "red", 16, 16, 9), SceneObject("circle", "cyan", 36, 36, 6)]
    patches, image = vision_labels(record(objects), 48, 6)
    assert image == {"count": 1, "digit": IGNORE}  # "2" is the second count choice
    assert patches["colour"][7] == 1 + COLOURS.index("red") and patches["shape"][7] == 1 + SHAPES.index("square")
    assert patches["colour"][4 * 6 + 4] == 1 + COLOURS.index("cyan") and patches["shape"][4 * 6 + 4] == 1 + SHAPES.index("circle")
    assert patches["colour"][0] == BACKGROUND == patches["shape"][0]
    assert len(patches["colour"]) == len(patches["shape"]) == 36
    assert patches["row"][4 * 6 + 5] == 4 and patches["col"][4 * 6 + 5] == 5  # where each patch is


def test_digit_labels_name_the_digit_and_ignore_the_patches():
    from evals.imageqa.digits import digit_dataset

    _, digits = digit_dataset()
    patches, image = vision_labels(record(digit_index=5), 48, 6)
    assert image == {"count": IGNORE, "digit": int(digits[5])}
    assert set(patches["colour"]) == set(patches["shape"]) == {IGNORE}
    assert patches["row"] == [i // 6 for i in range(36)] and patches["col"] == [i % 6 for i in range(36)]


def test_a_grid_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ValueError, match="5x5 patch grid"):
        patch_objects([SceneObject("square", "red", 16, 16, 9)], 48, 5)
