"""Real images: scikit-learn's handwritten digits (1,797 scans of 8x8 pixels, 16 grey levels).

The data ships inside scikit-learn (`sklearn/datasets/data/digits.csv.gz`, BSD-3-Clause; from the
UCI "Optical Recognition of Handwritten Digits" set), so nothing is downloaded. A digit is drawn as
dark ink on a white page and upscaled with nearest-neighbour, which keeps its 8x8 cells sharp.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

DIGIT_LEVELS = 16  # load_digits pixel values run 0..16


@lru_cache(maxsize=1)
def digit_dataset() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 8, 8] in 0..16, labels int [n]), in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def indices_by_digit() -> dict[str, list[int]]:
    """Sample indices of each digit ("0".."9"), ascending."""
    _, labels = digit_dataset()
    return {str(digit): [int(i) for i in np.flatnonzero(labels == digit)] for digit in range(10)}


def render_digit(index: int, image_size: int) -> Image.Image:
    """Sample `index` as an RGB image of `image_size` x `image_size`: ink level 16 is black, 0 is white."""
    images, _ = digit_dataset()
    grey = (255 - np.rint(images[index].astype(np.float64) * 255 / DIGIT_LEVELS)).astype(np.uint8)
    return Image.fromarray(grey).resize((image_size, image_size), Image.Resampling.NEAREST).convert("RGB")


@dataclass(frozen=True)
class DigitImage:
    """One sample of the digits set; its index is its identity (the set has no duplicate images)."""

    index: int
    objects = ()  # no drawn shapes

    @property
    def key(self) -> tuple:
        return ("digit", self.index)

    @property
    def digit_index(self) -> int:
        return self.index

    def render(self, image_size: int) -> Image.Image:
        return render_digit(self.index, image_size)
