"""Shared by the image-QA tests: a small build (once per session, ~0.2 s) and a check that reads a
record's answer back from its image and its drawn coordinates."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from evals.imageqa import build_imageqa
from evals.imageqa.digits import digit_dataset
from evals.imageqa.scenes import BACKGROUND_RGB, COLOUR_RGB, SceneObject


@pytest.fixture(scope="session")
def small_build(tmp_path_factory) -> Path:
    return build_imageqa(tmp_path_factory.mktemp("imageqa-cache"), seed=7, train=120, calibration=24, test=60)


def shape_count(image: Image.Image) -> int:
    """Connected regions of non-background pixels (diagonal neighbours join)."""
    pixels = np.asarray(image.convert("RGB"))
    foreground = np.any(pixels != np.array(BACKGROUND_RGB, dtype=np.uint8), axis=-1)
    _, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    return count


def position_of(obj: SceneObject, image_size: int) -> str | None:
    """left/right/top/bottom where the centre is in the outer third on that side and farther from
    the middle along that axis than across it; None where it is not clearly in one part."""
    middle = (image_size - 1) / 2
    dx, dy = obj.x - middle, obj.y - middle
    if abs(dx) > abs(dy) and abs(dx) > image_size / 6:
        return "left" if dx < 0 else "right"
    if abs(dy) > abs(dx) and abs(dy) > image_size / 6:
        return "top" if dy < 0 else "bottom"
    return None


def check_answer(qtype: str, question: str, answer: str, objects, digit_index, image: Image.Image) -> None:
    """Assert that `answer` is what the image (and the coordinates it was drawn from) says."""
    size = image.width
    if qtype == "digit":
        assert not objects and str(digit_dataset()[1][digit_index]) == answer
        return
    assert shape_count(image) == len(objects)
    if qtype == "colour":
        (obj,) = objects
        assert image.getpixel((obj.x, obj.y)) == COLOUR_RGB[answer] and obj.colour == answer
    elif qtype == "shape":
        (obj,) = objects
        assert obj.shape == answer and image.getpixel((obj.x, obj.y)) == COLOUR_RGB[obj.colour]
    elif qtype == "count":
        assert len(objects) == int(answer)
    elif qtype == "position":
        (obj,) = objects
        assert position_of(obj, size) == answer
    elif qtype == "relation":
        subject, reference = objects
        assert subject.colour != reference.colour and subject.shape != reference.shape
        assert question.index(f"{subject.colour} {subject.shape}") < question.index(f"{reference.colour} {reference.shape}")
        dx, dy = subject.x - reference.x, subject.y - reference.y
        expected = ("left" if dx < 0 else "right") if "left" in question else ("above" if dy < 0 else "below")
        assert answer == expected
        assert (abs(dx) > 2 * abs(dy)) if "left" in question else (abs(dy) > 2 * abs(dx))  # the other axis is no cue
        for obj in objects:
            assert image.getpixel((obj.x, obj.y)) == COLOUR_RGB[obj.colour]
    else:
        raise AssertionError(f"no check for question type {qtype}")


@pytest.fixture(scope="session")
def answer_check() -> Callable[..., None]:
    return check_answer
