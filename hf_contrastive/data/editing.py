"""Instruction-editing rows for the ``TripletEditTrainer`` (SuperEdit): the column contract, checks, loading, and the
pluggable instruction step (VLM rectification or offline rule-based negative instructions).

========================  =========================================================================================
column                    value
========================  =========================================================================================
``input_image``           the original image: RGB (PIL image, file path, encoded bytes or ``datasets.Image``)
``edited_image``          the edited (target) image: RGB, the same size as ``input_image`` (the pair is pixel-aligned)
``edit_prompt``           the (rectified) instruction that turns ``input_image`` into ``edited_image``: a string
``negative_prompts``      wrong instructions for the same pair: a non-empty ``list[str]``; the collator samples one
                          per row at every step (never precomputed, as in the reference code)
========================  =========================================================================================

The released SuperEdit-40K data names the prompt columns ``edit_prompts`` / ``neg_prompts``; load it with
``load_editing_dataset("limingcv/SuperEdit-40K", column_mapping=SUPEREDIT_COLUMNS)``.

Instruction step: a callable ``step(row) -> {column: value}`` used as ``dataset.map(step)``.
:class:`RectificationPromptBuilder` asks any VLM callable ``vlm(images, prompt) -> str`` to rewrite the instruction
along the spec's timestep-prior guide and to write wrong instructions; :class:`RuleBasedNegatives` writes wrong
instructions offline by swapping quantities, positions, actions, colours and objects.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .collator import _checked_text
from .loading import load_contrastive_dataset
from .multimodal import _raw_values, load_image

if TYPE_CHECKING:
    import datasets

INPUT_IMAGE = "input_image"
EDITED_IMAGE = "edited_image"
EDIT_PROMPT = "edit_prompt"
NEGATIVE_PROMPTS = "negative_prompts"
IMAGE_COLUMNS = (INPUT_IMAGE, EDITED_IMAGE)
EDITING_COLUMNS = (*IMAGE_COLUMNS, EDIT_PROMPT, NEGATIVE_PROMPTS)
SUPEREDIT_COLUMNS = {"edit_prompts": EDIT_PROMPT, "neg_prompts": NEGATIVE_PROMPTS}

VLM = Callable[[list[Image.Image], str], str]
InstructionStep = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EditingRow:
    """One checked row: the two RGB images, the instruction and its non-empty list of wrong instructions."""

    input_image: Image.Image
    edited_image: Image.Image
    edit_prompt: str
    negative_prompts: list[str]


def checked_image(value: Any, column: str, row: int, resolution: int | None = None) -> Image.Image:
    """Open ``value`` and check it is RGB and at least ``resolution`` pixels on its shorter side, naming column and row.

    The collator resizes down to ``resolution``; a smaller image would be upsampled into a blurred target.
    """
    image = load_image(value, column, row)
    if image.mode != "RGB":
        raise ValueError(
            f"Column {column!r}, row {row}: the image has mode {image.mode!r} but 'RGB' is required (convert it with "
            "image.convert('RGB') in a datasets.map, after checking that an alpha channel holds nothing you need)."
        )
    if resolution is not None and min(image.size) < resolution:
        width, height = image.size
        raise ValueError(
            f"Column {column!r}, row {row}: the image is {width}x{height} pixels, smaller than the training "
            f"resolution {resolution} (the shorter side must be >= resolution; images are resized down, never up)."
        )
    return image


def checked_negatives(value: Any, row: int) -> list[str]:
    """Return ``value`` as a non-empty list of non-blank strings, or raise naming the ``negative_prompts`` row."""
    where = f"Column {NEGATIVE_PROMPTS!r}, row {row}"
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: expected a list of wrong instructions, got {type(value).__name__} ({value!r}).")
    if len(value) == 0:
        raise ValueError(
            f"{where}: the list of wrong instructions is empty; every row needs at least one (generate them with "
            "RuleBasedNegatives or RectificationPromptBuilder, or drop the row)."
        )
    return [_checked_text({NEGATIVE_PROMPTS: text}, NEGATIVE_PROMPTS, row) for text in value]


def checked_editing_row(row: Mapping[str, Any], index: int, resolution: int | None = None) -> EditingRow:
    """Open and check one row of the column contract (see the module docstring); errors name the column and row."""
    missing = [column for column in EDITING_COLUMNS if column not in row]
    if missing:
        raise ValueError(f"Row {index} has no column(s) {missing}; it has {sorted(row)}.")
    input_image, edited_image = (checked_image(row[column], column, index, resolution) for column in IMAGE_COLUMNS)
    if input_image.size != edited_image.size:
        raise ValueError(
            f"Row {index}: {INPUT_IMAGE!r} is {input_image.size[0]}x{input_image.size[1]} pixels but "
            f"{EDITED_IMAGE!r} is {edited_image.size[0]}x{edited_image.size[1]}; an edit pair must be pixel-aligned "
            "(the same size), since both images get the same resize and crop."
        )
    return EditingRow(
        input_image,
        edited_image,
        _checked_text(row, EDIT_PROMPT, index),
        checked_negatives(row[NEGATIVE_PROMPTS], index),
    )


def validate_editing_dataset(dataset, resolution: int | None = None, sample_size: int = 256) -> None:
    """Check before training that ``dataset`` follows the editing column contract; raise naming the column and row.

    Checks: the four columns exist; images are readable, RGB, pairwise the same size and at least ``resolution`` on
    the shorter side; ``edit_prompt`` is non-blank text; ``negative_prompts`` is a non-empty list of non-blank texts.
    Every row is checked when the dataset has at most ``sample_size`` rows, else ``sample_size`` rows spread evenly
    over it (the collator checks every row it builds with :func:`checked_editing_row` anyway).
    """
    names = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    missing = [column for column in EDITING_COLUMNS if column not in names]
    if missing:
        raise ValueError(
            f"The editing dataset has no column(s) {missing}; it has {names}. Expected {list(EDITING_COLUMNS)} "
            "(rename with column_mapping, e.g. SUPEREDIT_COLUMNS for SuperEdit-40K)."
        )
    if len(dataset) == 0:
        raise ValueError("The editing dataset is empty.")
    indices = np.linspace(0, len(dataset) - 1, min(sample_size, len(dataset))).round().astype(int).tolist()
    columns = {column: _raw_values(dataset, column, indices) for column in EDITING_COLUMNS}
    for position, index in enumerate(indices):
        checked_editing_row({column: values[position] for column, values in columns.items()}, index, resolution)


def load_editing_dataset(
    name_or_path: str,
    split: str = "train",
    data_files: str | Sequence[str] | None = None,
    column_mapping: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> datasets.Dataset:
    """Load editing rows from the Hub or from a local folder of images + a ``.jsonl`` (or one ``.jsonl`` file).

    Local rows name their images by path, relative to the folder of the ``.jsonl`` (or absolute); both image columns
    become ``datasets.Image`` columns, decoded lazily (a missing file is reported by :func:`validate_editing_dataset`
    with its column and row). ``column_mapping`` renames columns to the contract (``{old: new}``), e.g.
    :data:`SUPEREDIT_COLUMNS`. Other arguments are those of
    :func:`~hf_contrastive.data.loading.load_contrastive_dataset`.
    """
    import datasets

    dataset = load_contrastive_dataset(name_or_path, split=split, data_files=data_files, **kwargs)
    if column_mapping:
        absent = [old for old in column_mapping if old not in dataset.column_names]
        if absent:
            raise ValueError(f"column_mapping names column(s) {absent}; the dataset has {dataset.column_names}.")
        dataset = dataset.rename_columns(dict(column_mapping))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return dataset
    root = path if path.is_dir() else path.parent
    for column in IMAGE_COLUMNS:
        if column in dataset.column_names and dataset.features[column].dtype == "string":
            dataset = dataset.map(lambda row, c=column: {c: str(root / row[c])})  # absolute paths survive the join
            dataset = dataset.cast_column(column, datasets.Image())
    return dataset


# ---------------------------------------------------------------------------------------------- instruction step


@dataclass(frozen=True)
class GuideCategory:
    """One category of the rectification guide: what changes, and when a diffusion model forms it."""

    name: str
    stage: str
    changes: str


TIMESTEP_PRIOR_GUIDE = (
    GuideCategory(
        "global layout", "early denoising steps", "objects added, removed or moved; composition, viewpoint, scene"
    ),
    GuideCategory(
        "local object attributes", "middle denoising steps", "colour, material, shape, size, count and pose of objects"
    ),
    GuideCategory("fine details", "late denoising steps", "texture, small objects, written text, lighting details"),
    GuideCategory("style", "every denoising step", "artistic style, medium, season, weather, time of day, mood"),
)
NEGATIVE_PERTURBATIONS = (
    "the number of an object (quantity)",
    "a spatial position or relation (left/right, above/below, front/behind)",
    "which object is edited, or what it becomes (object identity)",
    "an attribute such as a colour",
)
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.):])\s*")
_ANSWER_LABEL = re.compile(r"^\s*(?:rectified\s+)?(?:instruction|answer)\s*:\s*", re.IGNORECASE)


def _clean_line(line: str) -> str:
    """Strip list markers, an ``Instruction:`` label and surrounding quotes from one line of a VLM reply."""
    line = _ANSWER_LABEL.sub("", _LIST_MARKER.sub("", line)).strip()
    return line.strip("\"'`").strip()


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(".") == " ".join(b.lower().split()).rstrip(".")


@dataclass
class RectificationPromptBuilder:
    """Rectify instructions and write wrong ones with any VLM, following SuperEdit's timestep-prior guide.

    ``vlm(images, prompt) -> str`` receives ``[input_image, edited_image]`` and a prompt. As an instruction step,
    ``builder(row)`` returns ``{"edit_prompt": rectified, "negative_prompts": [...]}`` (use it in ``dataset.map``):

    1. :meth:`rectification_prompt` lists the guide's categories in the order a diffusion model forms them (global
       layout early, object attributes in the middle, fine details late, style at every step) and asks for one
       instruction that describes the change that actually happened;
    2. :meth:`negatives_prompt` asks for ``num_negatives`` fluent instructions that each change one of
       :data:`NEGATIVE_PERTURBATIONS` of the rectified instruction, so that they no longer match the pair.

    The paper used GPT-4o; its exact prompt is not published, so the wording here is ours (configurable through
    ``guide``, ``perturbations`` and ``max_words``). Replies are parsed line by line: list markers, labels and quotes
    are stripped, and wrong instructions equal to the rectified one are dropped. When the VLM yields no usable wrong
    instruction, ``fallback(instruction) -> list[str]`` (e.g. ``RuleBasedNegatives().negatives``) supplies them, else a
    ValueError names the reply. Pass ``with_indices=True`` to ``dataset.map`` so that image errors name the row.
    """

    vlm: VLM
    num_negatives: int = 3
    rectify: bool = True
    guide: Sequence[GuideCategory] = TIMESTEP_PRIOR_GUIDE
    perturbations: Sequence[str] = NEGATIVE_PERTURBATIONS
    max_words: int = 30
    fallback: Callable[[str], list[str]] | None = None

    def rectification_prompt(self, instruction: str) -> str:
        """The prompt that asks for an instruction matching the pair (first image -> second image)."""
        categories = "\n".join(
            f"{number}. {category.name.capitalize()} ({category.stage}): {category.changes}."
            for number, category in enumerate(self.guide, start=1)
        )
        return (
            "The first image is an original image and the second image is an edited version of it. The editing "
            f"instruction below was meant to produce the edit, but it may not describe what changed.\n"
            f'Instruction: "{instruction}"\n'
            "Compare the two images category by category, in the order in which a diffusion model forms an image:\n"
            f"{categories}\n"
            "Then write one imperative editing instruction that describes exactly the change from the first image to "
            "the second: mention only categories in which something changed, keep what the original instruction got "
            f"right, and use at most {self.max_words} words. Answer with the instruction only."
        )

    def negatives_prompt(self, instruction: str) -> str:
        """The prompt that asks for ``num_negatives`` wrong instructions, one per line."""
        perturbations = "; ".join(self.perturbations)
        return (
            "The first image is an original image and the second image is an edited version of it. The correct "
            f'editing instruction for this pair is:\n"{instruction}"\n'
            f"Write {self.num_negatives} wrong editing instructions. Each must keep the wording of the correct one "
            f"but change exactly one of: {perturbations}, so that it is still plausible for the first image but no "
            "longer matches the edit. Answer with one instruction per line, without numbering or explanations."
        )

    def parse_instruction(self, reply: str, instruction: str) -> str:
        """The first non-blank line of ``reply``, cleaned; ``instruction`` itself when the reply is blank."""
        lines = [_clean_line(line) for line in reply.splitlines()]
        return next((line for line in lines if line), instruction)

    def parse_negatives(self, reply: str, positive: str) -> list[str]:
        """Up to ``num_negatives`` distinct cleaned lines of ``reply`` that differ from ``positive``."""
        negatives: list[str] = []
        for line in map(_clean_line, reply.splitlines()):
            if line and not _same_text(line, positive) and not any(_same_text(line, n) for n in negatives):
                negatives.append(line)
        return negatives[: self.num_negatives]

    def __call__(self, row: Mapping[str, Any], index: int = -1) -> dict[str, Any]:
        """``{"edit_prompt", "negative_prompts"}`` for row ``index`` with ``input_image``, ``edited_image``, ``edit_prompt``."""
        images = [load_image(row[column], column, index).convert("RGB") for column in IMAGE_COLUMNS]
        positive = row[EDIT_PROMPT]
        if self.rectify:
            positive = self.parse_instruction(self.vlm(images, self.rectification_prompt(positive)), positive)
        reply = self.vlm(images, self.negatives_prompt(positive))
        negatives = self.parse_negatives(reply, positive)
        if not negatives and self.fallback is not None:
            negatives = self.fallback(positive)
        if not negatives:
            raise ValueError(
                f"The VLM wrote no usable wrong instruction for {positive!r} (reply: {reply!r}); give a fallback "
                "such as RuleBasedNegatives()."
            )
        return {EDIT_PROMPT: positive, NEGATIVE_PROMPTS: negatives}


NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")
OBJECTS = (
    "circle", "square", "triangle", "star", "cat", "dog", "bird", "horse", "cow", "car", "bus", "bicycle", "boat",
    "tree", "flower", "house", "hat", "ball", "cup", "chair", "table", "apple", "banana", "man", "woman", "child",
)  # fmt: skip
OPPOSITES = (
    ("left", "right"), ("top", "bottom"), ("above", "below"), ("upper", "lower"), ("over", "under"),
    ("front", "back"), ("inside", "outside"), ("near", "far"), ("add", "remove"), ("bigger", "smaller"),
    ("larger", "smaller"), ("brighter", "darker"), ("day", "night"), ("summer", "winter"), ("open", "closed"),
)  # fmt: skip
_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "mouse": "mice", "person": "people"}
_WORD = re.compile(r"[A-Za-z]+|\d+")


def plural(noun: str) -> str:
    """English plural of a vocabulary noun (irregular ones listed; ``-s``/``-x``/``-ch``/``-sh`` take ``-es``)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _match_case(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    return word.capitalize() if template[:1].isupper() else word


@dataclass
class RuleBasedNegatives:
    """Write wrong instructions offline by one rule-based change of the instruction; seeded by (seed, instruction).

    Each negative applies exactly one edit to the instruction's words (whole words, case kept):

    - **quantity**: a number (``two`` .. ``ten`` or a digit 2..10) becomes another one (``one`` and articles are left
      alone so that plurals stay grammatical);
    - **position / action**: a word of an ``opposites`` pair becomes its opposite (left <-> right, above <-> below,
      add <-> remove, bigger <-> smaller, ...);
    - **colour / object**: a vocabulary word becomes another word of its vocabulary (plural kept: cats -> dogs), or
      two different vocabulary words of the instruction trade places ("make the red circle blue" -> "make the blue
      circle red").

    ``__call__(row)`` returns ``{"negative_prompts": [...]}`` (an instruction step for ``dataset.map``); it draws one
    rule family at a time (so large vocabularies do not crowd out positions), then one edit of it, until
    ``num_negatives`` distinct negatives exist or the candidates run out. The output never contains the instruction
    and depends only on ``seed`` and the instruction, so ``dataset.map`` with several processes is reproducible. An
    instruction with no word of any vocabulary raises a ValueError (extend the vocabularies for your domain).
    """

    num_negatives: int = 3
    seed: int = 0
    numbers: Sequence[str] = NUMBER_WORDS
    colours: Sequence[str] = COLOURS
    objects: Sequence[str] = OBJECTS
    opposites: Sequence[tuple[str, str]] = OPPOSITES
    _substitutions: dict[str, tuple[str, list[str], int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}.")
        # lower-case word -> (rule family, the words it may become, its vocabulary's number: swaps stay within one)
        self._substitutions = {}
        for group, (family, vocabulary) in enumerate(
            (
                ("quantity", list(self.numbers)),
                ("quantity", [str(n) for n in range(2, 11)]),
                ("colour", list(self.colours)),
                ("object", list(self.objects)),
                ("object", [plural(word) for word in self.objects]),  # plural stays plural: cats -> dogs
            )
        ):
            for word in vocabulary:
                self._substitutions[word] = (family, [other for other in vocabulary if other != word], group)
        for first, second in self.opposites:
            for word, other in ((first, second), (second, first)):
                self._substitutions.setdefault(word, ("position", [], -1))[1].append(other)

    def candidates(self, instruction: str) -> dict[str, list[str]]:
        """Every single-edit negative of ``instruction`` by rule family (``quantity``, ``colour swap``, ...)."""
        found = [
            (token, self._substitutions[token.group().lower()])
            for token in _WORD.finditer(instruction)
            if token.group().lower() in self._substitutions
        ]
        by_family: dict[str, list[str]] = {}
        for token, (family, others, _) in found:
            by_family.setdefault(family, []).extend(self._replace(instruction, [(token, other)]) for other in others)
        for (first, (family, _, _)), (second, _) in self._swappable_pairs(found):
            swapped = self._replace(instruction, [(first, second.group()), (second, first.group())])
            by_family.setdefault(f"{family} swap", []).append(swapped)
        return {
            family: [text for text in dict.fromkeys(texts) if not _same_text(text, instruction)]
            for family, texts in by_family.items()
        }

    @staticmethod
    def _swappable_pairs(found: list) -> list[tuple]:
        """Pairs of different words of one colour or object vocabulary (singular with singular, plural with plural)."""
        return [
            (first, second)
            for i, first in enumerate(found)
            for second in found[i + 1 :]
            if first[1][0] in ("colour", "object")
            and first[1][2] == second[1][2]
            and first[0].group().lower() != second[0].group().lower()
        ]

    @staticmethod
    def _replace(instruction: str, edits: list[tuple[re.Match, str]]) -> str:
        """``instruction`` with each matched word replaced (case kept), right to left so offsets stay valid."""
        for token, word in sorted(edits, key=lambda edit: edit[0].start(), reverse=True):
            replacement = _match_case(word.lower(), token.group())
            instruction = instruction[: token.start()] + replacement + instruction[token.end() :]
        return instruction

    def negatives(self, instruction: str) -> list[str]:
        """Up to ``num_negatives`` distinct wrong instructions, drawn family by family with a per-instruction seed."""
        by_family = {family: texts for family, texts in self.candidates(instruction).items() if texts}
        if not by_family:
            raise ValueError(
                f"No rule applies to the instruction {instruction!r}: it has no number, position, action, colour or "
                "object word of RuleBasedNegatives' vocabularies. Extend them (numbers, colours, objects, opposites)."
            )
        rng = random.Random(f"{self.seed}\x00{instruction}")
        chosen: list[str] = []
        while by_family and len(chosen) < self.num_negatives:
            family = rng.choice(sorted(by_family))
            texts = by_family[family]
            text = texts.pop(rng.randrange(len(texts)))
            if text not in chosen:
                chosen.append(text)
            if not texts:
                del by_family[family]
        return chosen

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``{"negative_prompts": [...]}`` for a row's ``edit_prompt``."""
        return {NEGATIVE_PROMPTS: self.negatives(row[EDIT_PROMPT])}
