"""An image-QA record as stored (one JSON line of a split file) and the validating reader of a split.

Everything that trains on, calibrates with or evaluates these records reads them through
`load_records`, so a broken file fails there with its path, not deep inside a training loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from evals.imageqa.scenes import SceneObject
from pruning.errors import SuiteError

# What every record must carry (`objects` and `digit_index` say where its image came from).
REQUIRED_FIELDS = ("id", "qtype", "question", "answer", "choices", "image")


@dataclass(frozen=True)
class ImageQARecord:
    id: str
    qtype: str
    question: str
    answer: str
    choices: tuple[str, ...]  # every candidate answer of the question type, in the type's order
    image: str  # PNG path relative to the build folder, as stored
    image_path: Path  # the same, absolute (resolved when the split is loaded)
    objects: tuple[SceneObject, ...] = ()  # the drawn shapes of a rendered scene
    digit_index: int | None = None  # the sample of scikit-learn's digits set of a digit image

    def to_json(self) -> dict[str, Any]:
        """The stored form (no absolute path: a build folder can be moved)."""
        return {
            "id": self.id,
            "qtype": self.qtype,
            "question": self.question,
            "answer": self.answer,
            "choices": list(self.choices),
            "image": self.image,
            "objects": [obj.to_json() for obj in self.objects],
            "digit_index": self.digit_index,
        }


def decode_image(path: Path) -> Image.Image:
    """The RGB image in `path`, or a SuiteError naming the file.

    `verify()` first: it checks every PNG chunk's CRC, so a truncated file fails even in a process
    where lmms-eval has set PIL's `LOAD_TRUNCATED_IMAGES` (api/task.py does, at import)."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SuiteError(f"image {path} cannot be decoded ({type(err).__name__}: {err})") from err


def parse_record(line: str, where: str, root: Path) -> ImageQARecord:
    """One JSON line of a split file -> a record; `where` ("file:line") names it in errors."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as err:
        raise SuiteError(f"{where}: not a JSON record ({err})") from err
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: not a JSON object")
    name = f"record {raw['id']!r}" if isinstance(raw.get("id"), str) else "record"
    for field in REQUIRED_FIELDS:
        if raw.get(field) in (None, "", []):
            raise SuiteError(f"{where}: {name} has no {field!r} field")
    try:
        objects = tuple(SceneObject(**obj) for obj in raw.get("objects") or ())
    except TypeError as err:
        raise SuiteError(f"{where}: {name} has malformed 'objects' ({err})") from err
    choices = tuple(str(choice) for choice in raw["choices"])
    answer = str(raw["answer"])
    if answer not in choices:
        raise SuiteError(f"{where}: {name} has answer {answer!r}, not one of its choices {list(choices)}")
    return ImageQARecord(
        id=raw["id"],
        qtype=str(raw["qtype"]),
        question=str(raw["question"]),
        answer=answer,
        choices=choices,
        image=str(raw["image"]),
        image_path=(root / raw["image"]).resolve(),
        objects=objects,
        digit_index=raw.get("digit_index"),
    )


def load_records(split_path: Path, check_images: bool = True) -> list[ImageQARecord]:
    """The records of a split file (`<build>/<split>.jsonl`), in file order, each checked: every
    field present, the answer among the choices, and (with `check_images`) its PNG decodable.

    Raises SuiteError naming the file and line, or the image file, of the first bad record."""
    split_path = Path(split_path)
    if not split_path.is_file():
        raise SuiteError(f"image-QA split file {split_path} does not exist; build it with evals.imageqa.build_imageqa")
    root = split_path.resolve().parent
    records = []
    with split_path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                records.append(parse_record(line, f"{split_path}:{number}", root))
    if not records:
        raise SuiteError(f"image-QA split file {split_path} holds no record")
    if check_images:
        for record in records:
            if not record.image_path.is_file():
                raise SuiteError(f"{split_path}: record {record.id!r} names image {record.image_path}, which does not exist")
            try:
                decode_image(record.image_path)
            except SuiteError as err:
                raise SuiteError(f"{split_path}: record {record.id!r}: {err}") from err
    return records


def load_image(record: ImageQARecord) -> Image.Image:
    """The record's image as RGB."""
    return decode_image(record.image_path)
