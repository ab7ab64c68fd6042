"""Rendered scenes: exact colours where the shapes are, background elsewhere, a palette far apart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evals.imageqa.scenes import BACKGROUND_RGB, COLOUR_RGB, COLOURS, SHAPES, Scene, SceneObject, boxes_apart, render_scene


def test_palette_is_well_separated():
    for a, b in itertools.combinations([*COLOUR_RGB.values(), BACKGROUND_RGB], 2):
        assert max(abs(x - y) for x, y in zip(a, b)) >= 100, (a, b)
    assert len(COLOURS) == 6 and len(SHAPES) == 4


@pytest.mark.parametrize("shape", SHAPES)
def test_a_shape_paints_its_colour_inside_its_box_only(shape):
    obj = SceneObject(shape, "blue", x=20, y=26, radius=9)
    image = render_scene([obj], 48)
    pixels = np.asarray(image)
    painted = np.argwhere(np.any(pixels != BACKGROUND_RGB, axis=-1))  # (row, col)
    left, top, right, bottom = obj.box()
    assert painted[:, 1].min() >= left and painted[:, 1].max() <= right
    assert painted[:, 0].min() >= top and painted[:, 0].max() <= bottom
    assert {tuple(pixels[row, col]) for row, col in painted} == {COLOUR_RGB["blue"]}  # no anti-aliased edge
    assert image.getpixel((obj.x, obj.y)) == COLOUR_RGB["blue"]
    assert len(painted) > 0.3 * (2 * obj.radius + 1) ** 2  # large, whatever the shape


def test_shapes_have_different_outlines():
    masks = {
        shape: np.any(np.asarray(render_scene([SceneObject(shape, "red", 24, 24, 12)], 48)) != BACKGROUND_RGB, axis=-1)
        for shape in SHAPES
    }
    for a, b in itertools.combinations(SHAPES, 2):
        assert (masks[a] != masks[b]).sum() > 60, (a, b)


def test_scene_identity_ignores_object_order():
    a, b = SceneObject("circle", "red", 10, 10, 5), SceneObject("cross", "green", 30, 30, 5)
    assert Scene((a, b)).key == Scene((b, a)).key != Scene((a,)).key
    assert Scene((a, b)).render(48).tobytes() == Scene((b, a)).render(48).tobytes()


def test_boxes_apart():
    a = SceneObject("square", "red", 10, 10, 4)  # box 6..14
    assert boxes_apart(a, SceneObject("square", "red", 19, 10, 2), gap=2)  # box 17..21: 2 empty pixels between
    assert not boxes_apart(a, SceneObject("square", "red", 18, 10, 2), gap=2)  # 1 empty pixel between
    assert not boxes_apart(a, SceneObject("circle", "blue", 12, 12, 4), gap=0)


def test_object_map_matches_the_rendered_pixels():
    from evals.imageqa.scenes import object_map

    # overlapping on purpose: the later object wins, in the map as in the image
    objects = [SceneObject("square", "red", 14, 14, 8), SceneObject("circle", "blue", 20, 20, 8), SceneObject("cross", "green", 36, 36, 6)]
    pixels, owners = np.asarray(render_scene(objects, 48)), np.asarray(object_map(objects, 48))
    assert owners.shape == (48, 48) and set(np.unique(owners)) == {0, 1, 2, 3}
    assert np.all(np.all(pixels[owners == 0] == BACKGROUND_RGB, axis=-1))
    for index, obj in enumerate(objects):
        assert np.all(np.all(pixels[owners == index + 1] == COLOUR_RGB[obj.colour], axis=-1))
