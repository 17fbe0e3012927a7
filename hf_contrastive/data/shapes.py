"""A synthetic instruction-editing set: coloured shapes on a 2 x 2 grid, edited by recolouring, moving, adding or
removing one shape, with rule-based wrong instructions (the editing column contract of :mod:`.editing`).

A canvas is ``resolution`` x ``resolution`` RGB, black, split into four cells (``top left`` .. ``bottom right``); a
cell holds at most one shape (a circle, square or triangle filling the cell less a margin) in one of four saturated
colours, and no two shapes share both colour and kind, so "the red circle" names one shape. Edits and instructions:

==============  =========================================  ======================================================
edit            instruction                                edited image
==============  =========================================  ======================================================
``recolour``    ``make the red circle blue``               the shape in its new colour (a colour+kind not present)
``move``        ``move the red circle to the top right``   the shape in a free cell, its old cell empty
``add``         ``add a blue square at the bottom left``   a new shape (colour+kind not present) in a free cell
``remove``      ``remove the red circle``                  the shape's cell empty
==============  =========================================  ======================================================

Wrong instructions come from :class:`~hf_contrastive.data.editing.RuleBasedNegatives` restricted to this world's
words (other colours and kinds, swapped colours, left <-> right, top <-> bottom, add <-> remove), so every negative
describes an edit of the same picture that differs from the true one. Everything is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from PIL import ImageDraw

from .editing import EDIT_PROMPT, EDITED_IMAGE, INPUT_IMAGE, NEGATIVE_PROMPTS, RuleBasedNegatives

SHAPE_COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 60, 240), "yellow": (240, 220, 20)}
SHAPE_KINDS = ("circle", "square", "triangle")
CELLS = ("top left", "top right", "bottom left", "bottom right")  # row-major over the 2 x 2 grid
EDITS = ("recolour", "move", "add", "remove")
SHAPE_OPPOSITES = (("left", "right"), ("top", "bottom"), ("add", "remove"))
EDIT_FEATURES = Features(
    {
        INPUT_IMAGE: Image(),
        EDITED_IMAGE: Image(),
        EDIT_PROMPT: Value("string"),
        NEGATIVE_PROMPTS: List(Value("string")),
        "edit": Value("string"),
    }
)


@dataclass(frozen=True)
class Shape:
    """One shape on the canvas: its colour name, kind and cell index (0..3, row-major)."""

    colour: str
    kind: str
    cell: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


def shape_negatives(num_negatives: int = 3, seed: int = 0) -> RuleBasedNegatives:
    """The rule-based negative generator restricted to the shapes world's words (no quantities)."""
    return RuleBasedNegatives(
        num_negatives=num_negatives,
        seed=seed,
        numbers=(),
        colours=tuple(SHAPE_COLOURS),
        objects=SHAPE_KINDS,
        opposites=SHAPE_OPPOSITES,
    )


def render(shapes: Sequence[Shape], resolution: int) -> PILImage.Image:
    """Draw ``shapes`` on a black ``resolution`` x ``resolution`` RGB canvas (each inside its grid cell)."""
    canvas = PILImage.new("RGB", (resolution, resolution))
    draw = ImageDraw.Draw(canvas)
    cell_size = resolution // 2
    margin = max(1, cell_size // 6)
    for shape in shapes:
        top, left = divmod(shape.cell, 2)
        x0, y0 = left * cell_size + margin, top * cell_size + margin
        x1, y1 = (left + 1) * cell_size - margin - 1, (top + 1) * cell_size - margin - 1
        fill = SHAPE_COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)
    return canvas


def random_scene(rng: np.random.Generator, min_shapes: int = 1, max_shapes: int = 3) -> list[Shape]:
    """``min_shapes``..``max_shapes`` shapes in distinct cells with distinct (colour, kind)."""
    count = int(rng.integers(min_shapes, max_shapes + 1))
    cells = rng.permutation(len(CELLS))[:count]
    names = [(colour, kind) for colour in SHAPE_COLOURS for kind in SHAPE_KINDS]
    picked = rng.permutation(len(names))[:count]
    return [Shape(*names[index], int(cell)) for index, cell in zip(picked, cells)]


def _absent_name(rng: np.random.Generator, scene: Sequence[Shape], kind: str | None = None) -> tuple[str, str]:
    """A (colour, kind) not in ``scene`` (of ``kind`` when given)."""
    present = {(shape.colour, shape.kind) for shape in scene}
    options = [(c, k) for c in SHAPE_COLOURS for k in SHAPE_KINDS if (c, k) not in present and kind in (None, k)]
    return options[int(rng.integers(len(options)))]


def apply_edit(rng: np.random.Generator, scene: list[Shape], edit: str) -> tuple[list[Shape], str]:
    """The edited scene and its instruction for ``edit`` (see the module docstring) on a random shape or cell."""
    free = [cell for cell in range(len(CELLS)) if cell not in {shape.cell for shape in scene}]
    if edit == "add":
        colour, kind = _absent_name(rng, scene)
        cell = free[int(rng.integers(len(free)))]
        return [*scene, Shape(colour, kind, cell)], f"add a {colour} {kind} at the {CELLS[cell]}"
    index = int(rng.integers(len(scene)))
    shape = scene[index]
    rest = scene[:index] + scene[index + 1 :]
    if edit == "remove":
        return rest, f"remove the {shape.name}"
    if edit == "move":
        cell = free[int(rng.integers(len(free)))]
        return [*rest, replace(shape, cell=cell)], f"move the {shape.name} to the {CELLS[cell]}"
    if edit == "recolour":
        colour, _ = _absent_name(rng, scene, kind=shape.kind)
        return [*rest, replace(shape, colour=colour)], f"make the {shape.name} {colour}"
    raise ValueError(f"Unknown edit {edit!r}; expected one of {EDITS}.")


def shape_edit_dataset(
    count: int,
    resolution: int = 32,
    edits: Sequence[str] = EDITS,
    num_negatives: int = 3,
    seed: int = 0,
) -> Dataset:
    """``count`` editing rows (``input_image``, ``edited_image``, ``edit_prompt``, ``negative_prompts``, ``edit``).

    The edit of each row is drawn uniformly from ``edits``; a scene has 1..3 shapes, so one cell is always free
    (``add``/``move``) and one shape always exists (``recolour``/``move``/``remove``). Seeded: the same arguments give
    the same rows.
    """
    unknown = [edit for edit in edits if edit not in EDITS]
    if unknown or not edits:
        raise ValueError(f"edits must be a non-empty subset of {EDITS}, got {list(edits)}.")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 pixels (a 2 x 2 grid of shapes), got {resolution}.")
    rng = np.random.default_rng(seed)
    negatives = shape_negatives(num_negatives, seed)
    rows: dict[str, list] = {name: [] for name in EDIT_FEATURES}
    for _ in range(count):
        scene = random_scene(rng)
        edit = edits[int(rng.integers(len(edits)))]
        edited, instruction = apply_edit(rng, scene, edit)
        rows[INPUT_IMAGE].append(render(scene, resolution))
        rows[EDITED_IMAGE].append(render(edited, resolution))
        rows[EDIT_PROMPT].append(instruction)
        rows[NEGATIVE_PROMPTS].append(negatives.negatives(instruction))
        rows["edit"].append(edit)
    return Dataset.from_dict(rows, features=EDIT_FEATURES)
