"""Real digit images: scikit-learn's 8x8 scans, upscaled without blending."""

from __future__ import annotations

import numpy as np

from evals.imageqa.digits import DigitImage, digit_dataset, indices_by_digit, render_digit


def test_the_digits_set_is_local_and_complete():
    images, labels = digit_dataset()
    assert images.shape == (1797, 8, 8) and images.max() == 16
    by_digit = indices_by_digit()
    assert sorted(by_digit) == [str(d) for d in range(10)]
    assert sum(len(indices) for indices in by_digit.values()) == 1797
    assert all(labels[i] == int(digit) for digit, indices in by_digit.items() for i in indices)
    # an index is an image's identity: no two samples are the same picture
    assert len({image.tobytes() for image in images}) == len(images)


def test_render_digit_upscales_each_cell_to_a_uniform_block():
    images, _ = digit_dataset()
    pixels = np.asarray(render_digit(5, 48))
    assert pixels.shape == (48, 48, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    blocks = pixels[..., 0].reshape(8, 6, 8, 6)
    assert (blocks == blocks[:, :1, :, :1]).all()
    expected = 255 - np.rint(images[5].astype(float) * 255 / 16)
    assert (blocks[:, 0, :, 0] == expected).all()
    assert DigitImage(5).render(48).tobytes() == render_digit(5, 48).tobytes() and DigitImage(5).key == ("digit", 5)
