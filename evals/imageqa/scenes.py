"""Rendered scenes: large flat-coloured shapes on a plain background, drawn with PIL.

Drawing is aliasing-free (PIL's ImageDraw fills whole pixels), so every pixel of a shape has exactly
its colour and a test can read the answer back from the image. The palette is six colours far
apart in RGB and from the background, and four shapes with different outlines: a tiny VLM trained
from scratch on 48x48 images must be able to tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageDraw

BACKGROUND_RGB = (235, 235, 235)
# name -> RGB; every pair differs by >= 100 on some channel, and each from the background.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 40, 180),
    "cyan": (20, 200, 210),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)


@dataclass(frozen=True, order=True)
class SceneObject:
    """One shape: centre (x, y) in pixels and `radius`, half the width of its bounding box."""

    shape: str
    colour: str
    x: int
    y: int
    radius: int

    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), inclusive pixel bounds of everything the shape may paint."""
        return (self.x - self.radius, self.y - self.radius, self.x + self.radius, self.y + self.radius)

    def to_json(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "x": self.x, "y": self.y, "radius": self.radius}


def _circle(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: tuple[int, int, int] | int) -> None:
    draw.ellipse(obj.box(), fill=fill)


def _square(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: tuple[int, int, int] | int) -> None:
    half = max(1, round(0.85 * obj.radius))  # about the circle's area: size is not a cue for the shape
    draw.rectangle((obj.x - half, obj.y - half, obj.x + half, obj.y + half), fill=fill)


def _triangle(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: tuple[int, int, int] | int) -> None:
    # apex up; the centre pixel lies inside (the triangle is r wide at the centre's height)
    x, y, r = obj.x, obj.y, obj.radius
    draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)


def _cross(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: tuple[int, int, int] | int) -> None:
    x, y, r = obj.x, obj.y, obj.radius
    arm = max(1, r // 3)
    draw.rectangle((x - r, y - arm, x + r, y + arm), fill=fill)
    draw.rectangle((x - arm, y - r, x + arm, y + r), fill=fill)


SHAPE_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, SceneObject, tuple[int, int, int] | int], None]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
}
SHAPES: tuple[str, ...] = tuple(SHAPE_DRAWERS)


@dataclass(frozen=True)
class Scene:
    """Shapes to draw; two scenes with the same objects (in any order) are the same image."""

    objects: tuple[SceneObject, ...]

    @property
    def key(self) -> tuple:
        return ("scene", tuple(sorted(self.objects)))

    digit_index = None  # not a sample of the digits set

    def render(self, image_size: int) -> Image.Image:
        return render_scene(self.objects, image_size)


def render_scene(objects: tuple[SceneObject, ...] | list[SceneObject], image_size: int) -> Image.Image:
    """An RGB image of `image_size` x `image_size` with the objects drawn in order on the background."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        SHAPE_DRAWERS[obj.shape](draw, obj, COLOUR_RGB[obj.colour])
    return image


def object_map(objects: tuple[SceneObject, ...] | list[SceneObject], image_size: int) -> Image.Image:
    """Which object each pixel of `render_scene(objects, image_size)` shows: an "L" image holding
    k + 1 where objects[k] is drawn (later objects over earlier ones, as rendered) and 0 on the
    background. The same drawers paint it, so it matches the rendered image pixel for pixel."""
    if len(objects) > 254:
        raise ValueError(f"an object map holds at most 254 objects, got {len(objects)}")
    image = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(image)
    for index, obj in enumerate(objects):
        SHAPE_DRAWERS[obj.shape](draw, obj, index + 1)
    return image


def boxes_apart(a: SceneObject, b: SceneObject, gap: int) -> bool:
    """True when at least `gap` empty pixels separate the bounding boxes (so the shapes never touch)."""
    al, at, ar, ab = a.box()
    bl, bt, br, bb = b.box()
    return al - br > gap or bl - ar > gap or at - bb > gap or bt - ab > gap
