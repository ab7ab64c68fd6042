"""What a training image shows, as classification targets: how the toy VLM's vision tower is
pretrained before it learns to answer (a real LLaVA starts from a pretrained CLIP; ours has none).

Targets come from the record's own scene (`objects`) or digit sample, so nothing outside the
training split is used. Per patch of the vision tower's grid (row-major, as the tower orders its
tokens): the colour and the shape of the object that covers the most of the patch (at least
`PATCH_COVER` of its pixels), else background, and the patch's own row and column, so that every
feature the projector receives says where it is (a relation question compares two of them). Per
image: how many shapes a scene has and which digit a digit image shows. A label that does not
apply is `IGNORE` (-100, PyTorch's ignore index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evals.imageqa.questions import COUNT_CHOICES
from evals.imageqa.scenes import COLOURS, SHAPES, object_map

IGNORE = -100
PATCH_COVER = 0.25
BACKGROUND = 0  # class 0 of the patch labels; colours and shapes are 1.. in their tuples' order


def patch_objects(objects: Sequence, image_size: int, grid: int) -> list[int]:
    """For each cell of a `grid` x `grid` patch grid (row-major), the index of the object covering
    the most of its pixels when that is at least `PATCH_COVER` of them, else -1."""
    if image_size % grid:
        raise ValueError(f"a {image_size}-pixel image does not split into a {grid}x{grid} patch grid")
    patch_size = image_size // grid
    owners = np.asarray(object_map(tuple(objects), image_size), dtype=np.int64)  # 0 background, k + 1 object k
    patches = owners.reshape(grid, patch_size, grid, patch_size).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    result = []
    for pixels in patches:
        counts = np.bincount(pixels, minlength=len(objects) + 1)[1:]
        best = int(counts.argmax()) if len(counts) else -1
        result.append(best if best >= 0 and counts[best] >= PATCH_COVER * pixels.size else -1)
    return result


def vision_labels(record, image_size: int, grid: int) -> tuple[dict[str, list[int]], dict[str, int]]:
    """(patch labels, image labels) of one record whose image is `image_size` pixels wide, for a
    vision tower with a `grid` x `grid` patch grid: `colour` and `shape` (0 background, 1.. by
    `COLOURS` / `SHAPES`), `row` and `col` per patch; `count` (0.. by `COUNT_CHOICES`) and `digit`
    (0-9) per image."""
    n_patches = grid * grid
    where = {"row": [i // grid for i in range(n_patches)], "col": [i % grid for i in range(n_patches)]}
    if record.digit_index is not None:
        from evals.imageqa.digits import digit_dataset

        _, digits = digit_dataset()
        ignored = [IGNORE] * n_patches
        return {"colour": ignored, "shape": list(ignored), **where}, {"count": IGNORE, "digit": int(digits[record.digit_index])}
    objects = record.objects
    owners = patch_objects(objects, image_size, grid)
    colour = [BACKGROUND if k < 0 else 1 + COLOURS.index(objects[k].colour) for k in owners]
    shape = [BACKGROUND if k < 0 else 1 + SHAPES.index(objects[k].shape) for k in owners]
    return {"colour": colour, "shape": shape, **where}, {"count": COUNT_CHOICES.index(str(len(objects))), "digit": IGNORE}


def vision_examples(records: Sequence, grid: int) -> list[tuple[object, dict[str, list[int]], dict[str, int]]]:
    """(image, patch labels, image labels) of every record, in order: what the toy VLM's vision
    tower is pretrained on (`pruning.models.toy_vlm.VisionExample`)."""
    from evals.imageqa.records import load_image

    examples = []
    for record in records:
        image = load_image(record)
        examples.append((image, *vision_labels(record, image.width, grid)))
    return examples
