"""Image and text views for the improved CLIP recipe (CLIP-rocket, arXiv 2305.08675): weak global, strong local.

Image views (per row, before the image processor; see ``MultiModalCollator(views=...)``):

* **weak** (the global branch): ``RandomResizedCrop(size, scale=(0.5, 1), bicubic)``; no flip, no colour.
* **strong** (the A local branches): ``RandomResizedCrop(size, scale=(0.08, 1))`` + ``ColorJitter(0.4, 0.4, 0.4,
  0.1)`` with p = 0.8 + ``Grayscale`` with p = 0.2 + Gaussian blur (sigma in [0.1, 2]) with p = 0.5 + horizontal
  flip (``flip=False`` for digits, whose mirror images are other glyphs).

They are built from ``torchvision.transforms.v2`` when it imports, else from the PIL implementation below, which
follows torchvision's sampling (crop box, jitter order, probabilities) with the same parameters. The blur is PIL's
``GaussianBlur(radius=sigma)`` in both backends, as in the reference (SLIP / MoCo v3) code. Both backends draw from
torch's global RNG, like torchvision, so ``torch.manual_seed`` (the Trainer's ``seed``; DataLoader workers reseed)
makes the views reproducible.

Text views (EDA, Wei & Zou 2019, as the reference ``tokenizer.py``): the weak view drops English stopwords with
probability ``stopword_prob``; a strong view does the same and then applies one EDA operation drawn with weights
{none: 0, synonym replacement: 0.4, random swap: 0.4, random deletion: 0.2}. The reference draws synonyms from
WordNet through ``nltk``; no WordNet data is available offline, so synonyms come from a table the caller supplies
(``{word: [synonyms]}``; the digit recipe ships one). Stopwords are NLTK's English list, built in.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

ImageTransform = Callable[[Image.Image], Image.Image]
TextTransform = Callable[[str], str]

WEAK_SCALE = (0.5, 1.0)
STRONG_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
BLUR_SIGMA = (0.1, 2.0)
EDA_WEIGHTS = {"none": 0.0, "synonym_replacement": 0.4, "random_swap": 0.4, "random_deletion": 0.2}

# NLTK's English stopword list (``nltk.corpus.stopwords.words("english")``), built in because the data is not
# downloadable offline.
ENGLISH_STOPWORDS = frozenset(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
    himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
    that that'll these those am is are was were be been being have has had having do does did doing a an the and but
    if or because as until while of at by for with about against between into through during before after above
    below to from up down in out on off over under again further then once here there when where why how all any
    both each few more most other some such no nor not only own same so than too very s t can will just don don't
    should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
    hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn
    wasn't weren weren't won won't wouldn wouldn't""".split()
)


# ------------------------------------------------------------------------------------------------ randomness
def _uniform(low: float, high: float) -> float:
    """One draw from U[low, high] on torch's global RNG."""
    return float(torch.empty(1).uniform_(low, high))


def _chance(probability: float) -> bool:
    """True with ``probability`` (torch's global RNG, like torchvision's ``RandomApply``)."""
    return bool(torch.rand(1) < probability)


def _randint(high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,)))


# ------------------------------------------------------------------------------------------------ image values
def as_pil_image(value: Any) -> Image.Image:
    """A dataset image value as a PIL image: PIL, file path, HxW[xC] uint8 array, or ``{"bytes"|"path": ...}``."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str | Path):
        return Image.open(value)
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    raise TypeError(
        f"Cannot read an image from a {type(value).__name__}; expected a PIL image, a path, a uint8 array or a "
        "datasets Image value."
    )


# ------------------------------------------------------------------------------------------------ PIL backend
class PILRandomResizedCrop:
    """Crop a random box of ``scale`` x the area and ``ratio`` aspect, resized to ``size`` x ``size`` (torchvision's
    sampling: 10 tries, then the central crop with the ratio clamped)."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, crop_width, crop_height)`` for an image of ``width`` x ``height``."""
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_low, log_high))
            crop_w = round(math.sqrt(target_area * aspect))
            crop_h = round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                return _randint(width - crop_w + 1), _randint(height - crop_h + 1), crop_w, crop_h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            crop_w, crop_h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            crop_w, crop_h = round(height * self.ratio[1]), height
        else:
            crop_w, crop_h = width, height
        return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h

    def __call__(self, image: Image.Image) -> Image.Image:
        left, top, crop_w, crop_h = self.crop_box(*image.size)
        box = (left, top, left + crop_w, top + crop_h)
        return image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)


class PILColorJitter:
    """Brightness, contrast, saturation and hue factors drawn uniformly, applied in a random order (torchvision's
    ``ColorJitter``); saturation and hue leave single-channel images unchanged, as torchvision does."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, image: Image.Image) -> Image.Image:
        factors = (
            _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness),
            _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast),
            _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation),
            _uniform(-self.hue, self.hue),
        )
        operations = (
            lambda img, f: ImageEnhance.Brightness(img).enhance(f),
            lambda img, f: ImageEnhance.Contrast(img).enhance(f),
            lambda img, f: ImageEnhance.Color(img).enhance(f) if img.mode == "RGB" else img,
            _shift_hue,
        )
        for index in torch.randperm(4).tolist():
            image = operations[index](image, factors[index])
        return image


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by ``shift`` in [-0.5, 0.5] of a turn (torchvision's PIL ``adjust_hue``)."""
    if image.mode != "RGB":
        return image
    hue, saturation, value = image.convert("HSV").split()
    hue = Image.fromarray((np.asarray(hue, dtype=np.uint8) + np.uint8(round(shift * 255) % 256)).astype(np.uint8), "L")
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


class PILGrayscale:
    """Luma (ITU-R 601-2) repeated over the image's channels, so the mode and channel count are kept."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "L" else image.convert("L").convert(image.mode)


class PILGaussianBlur:
    """Gaussian blur with sigma drawn from ``sigma`` (the reference's PIL ``GaussianBlur(radius=sigma)``)."""

    def __init__(self, sigma: tuple[float, float] = BLUR_SIGMA) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=_uniform(*self.sigma)))


class PILHorizontalFlip:
    def __call__(self, image: Image.Image) -> Image.Image:
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


class RandomApply:
    """Apply ``transform`` with probability ``p``."""

    def __init__(self, transform: ImageTransform, p: float) -> None:
        self.transform, self.p = transform, p

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.transform(image) if _chance(self.p) else image


class Compose:
    """Read the value as a PIL image, then run ``steps`` in order."""

    def __init__(self, steps: Sequence[ImageTransform]) -> None:
        self.steps = list(steps)

    def __call__(self, value: Any) -> Image.Image:
        image = as_pil_image(value)
        for step in self.steps:
            image = step(image)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[type(step).__name__ for step in self.steps]})"


# ------------------------------------------------------------------------------------------------ backends
def _torchvision_v2():
    """``torchvision.transforms.v2`` or None. Any exception counts: a CUDA-only wheel raises RuntimeError on import."""
    try:
        from torchvision.transforms import v2
    except Exception:
        return None
    return v2


def _resolve_backend(backend: str):
    if backend not in ("auto", "torchvision", "pil"):
        raise ValueError(f"backend must be 'auto', 'torchvision' or 'pil', got {backend!r}.")
    v2 = None if backend == "pil" else _torchvision_v2()
    if backend == "torchvision" and v2 is None:
        raise ImportError("backend='torchvision' needs torchvision.transforms.v2, which does not import here.")
    return v2


def weak_image_view(size: int, scale: tuple[float, float] = WEAK_SCALE, backend: str = "auto") -> ImageTransform:
    """The global view: a random resized crop (bicubic) to ``size`` x ``size``; no flip and no colour operation.

    ``backend``: ``"auto"`` (torchvision v2 when it imports, else PIL), ``"torchvision"`` or ``"pil"``.
    """
    v2 = _resolve_backend(backend)
    if v2 is None:
        return Compose([PILRandomResizedCrop(size, scale)])
    crop = v2.RandomResizedCrop(size, scale=scale, ratio=CROP_RATIO, interpolation=v2.InterpolationMode.BICUBIC)
    return Compose([crop])


def strong_image_view(
    size: int,
    scale: tuple[float, float] = STRONG_SCALE,
    color_jitter: tuple[float, float, float, float] = COLOR_JITTER,
    color_jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = BLUR_SIGMA,
    flip: bool = True,
    backend: str = "auto",
) -> ImageTransform:
    """A local view: random resized crop, colour jitter (p = 0.8), grayscale (p = 0.2), blur (p = 0.5), flip.

    ``flip``: random horizontal flip with p = 0.5 (the reference's default; turn off for digits and text).
    ``backend`` as in :func:`weak_image_view`. Output: a PIL image of ``size`` x ``size`` in the input's mode.
    """
    v2 = _resolve_backend(backend)
    blur = RandomApply(PILGaussianBlur(blur_sigma), blur_p)
    if v2 is None:
        steps = [
            PILRandomResizedCrop(size, scale),
            RandomApply(PILColorJitter(*color_jitter), color_jitter_p),
            RandomApply(PILGrayscale(), grayscale_p),
            blur,
        ]
        if flip:
            steps.append(RandomApply(PILHorizontalFlip(), 0.5))
        return Compose(steps)
    steps = [
        v2.RandomResizedCrop(size, scale=scale, ratio=CROP_RATIO, interpolation=v2.InterpolationMode.BICUBIC),
        v2.RandomApply([v2.ColorJitter(*color_jitter)], p=color_jitter_p),
        v2.RandomGrayscale(p=grayscale_p),
        blur,
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return Compose(steps)


# ------------------------------------------------------------------------------------------------ text (EDA)
def remove_stopwords(text: str, stopwords: frozenset[str] = ENGLISH_STOPWORDS) -> str:
    """Drop every word whose lower-cased form is a stopword; the text is kept as is when nothing would remain."""
    kept = [word for word in text.split() if word.lower() not in stopwords]
    return " ".join(kept) if kept else text


def synonym_replacement(
    words: list[str],
    synonyms: Mapping[str, Sequence[str]],
    count: int = 1,
    stopwords: frozenset[str] = ENGLISH_STOPWORDS,
) -> list[str]:
    """Replace ``count`` distinct non-stopwords that have synonyms (every occurrence) by a random synonym (EDA SR).

    Candidates are visited in a random order, as in EDA; words without an entry in ``synonyms`` are skipped.
    """
    candidates = sorted({word for word in words if word.lower() not in stopwords and synonyms.get(word.lower())})
    replaced = list(words)
    for position in torch.randperm(len(candidates)).tolist()[:count]:
        word = candidates[position]
        options = synonyms[word.lower()]
        synonym = options[_randint(len(options))]
        replaced = [synonym if w == word else w for w in replaced]
    return replaced


def random_swap(words: list[str], count: int = 1) -> list[str]:
    """Swap two randomly chosen positions ``count`` times (EDA RS); fewer than two words are returned as they are."""
    swapped = list(words)
    if len(swapped) < 2:
        return swapped
    for _ in range(count):
        first = _randint(len(swapped))
        second = (first + 1 + _randint(len(swapped) - 1)) % len(swapped)  # uniform over the other positions
        swapped[first], swapped[second] = swapped[second], swapped[first]
    return swapped


def random_deletion(words: list[str], probability: float = 0.1) -> list[str]:
    """Delete each word with ``probability`` (EDA RD); one random word survives if all would go."""
    if len(words) <= 1:
        return list(words)
    kept = [word for word in words if not _chance(probability)]
    return kept if kept else [words[_randint(len(words))]]


class TextView:
    """A caption view: stopword removal with ``stopword_prob``, then (``strong``) one EDA operation.

    Args:
        stopword_prob: probability of removing the stopwords (the reference: 0.5 by default, 0.8 on YFCC15M).
        strong: apply one EDA operation drawn with ``weights`` after the stopword step (the local views).
        synonyms: ``{word: [synonyms]}`` for synonym replacement (no WordNet offline); empty: SR is a no-op.
        weights: EDA operation weights, keys ``none``, ``synonym_replacement``, ``random_swap``, ``random_deletion``.
        deletion_prob: per-word probability of random deletion (EDA's ``p``: 0.1).
        lowercase: lower-case the caption first (the reference's ``clean_before_augment``).
    """

    def __init__(
        self,
        stopword_prob: float = 0.5,
        strong: bool = False,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        weights: Mapping[str, float] = EDA_WEIGHTS,
        deletion_prob: float = 0.1,
        lowercase: bool = False,
    ) -> None:
        unknown = set(weights) - set(EDA_WEIGHTS)
        if unknown or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be non-negative with keys in {sorted(EDA_WEIGHTS)}, got {dict(weights)}.")
        self.stopword_prob = stopword_prob
        self.strong = strong
        self.synonyms = {key.lower(): list(value) for key, value in (synonyms or {}).items()}
        self.operations = list(weights)
        self.weights = torch.tensor([float(weights[name]) for name in self.operations])
        self.deletion_prob = deletion_prob
        self.lowercase = lowercase

    def eda(self, words: list[str], operation: str) -> list[str]:
        """Apply the EDA ``operation`` (one of ``EDA_WEIGHTS``) to ``words``."""
        if operation == "synonym_replacement":
            return synonym_replacement(words, self.synonyms)
        if operation == "random_swap":
            return random_swap(words)
        if operation == "random_deletion":
            return random_deletion(words, self.deletion_prob)
        return list(words)

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"A text view needs a string caption, got {type(text).__name__}.")
        text = re.sub(r"\s+", " ", text).strip()
        if self.lowercase:
            text = text.lower()
        if not text:
            return text
        if _chance(self.stopword_prob):
            text = remove_stopwords(text)
        if self.strong:
            operation = self.operations[int(torch.multinomial(self.weights, 1))]
            augmented = " ".join(self.eda(text.split(), operation))
            text = augmented or text
        return text


def clip_rocket_views(
    image_size: int,
    num_augs: int = 2,
    image_column: str = "image",
    text_column: str = "text",
    flip: bool = True,
    stopword_prob: float = 0.5,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    backend: str = "auto",
    global_views: bool = True,
    local_scale: tuple[float, float] = STRONG_SCALE,
    global_scale: tuple[float, float] = WEAK_SCALE,
) -> dict[str, tuple[str, Callable]]:
    """The collator ``views`` of the recipe: weak global views and ``num_augs`` strong local image and text views.

    Returns ``{"image_view_k": (image_column, strong image view), "text_view_k": (text_column, strong text view)}``
    for ``k = 1..num_augs`` and, with ``global_views``, ``{"image": (image_column, weak crop), "text": (text_column,
    stopword removal)}``: views that replace their source column in training batches only (the trainer's
    evaluation embeds raw values). ``local_scale`` / ``global_scale``: the crops' area ranges (paper: (0.08, 1) and
    (0.5, 1)).
    """
    views: dict[str, tuple[str, Callable]] = {}
    if global_views:
        views[image_column] = (image_column, weak_image_view(image_size, scale=global_scale, backend=backend))
        views[text_column] = (text_column, TextView(stopword_prob, strong=False))
    for k in range(1, num_augs + 1):
        strong = strong_image_view(image_size, scale=local_scale, flip=flip, backend=backend)
        views[f"image_view_{k}"] = (image_column, strong)
        views[f"text_view_{k}"] = (text_column, TextView(stopword_prob, strong=True, synonyms=synonyms))
    return views
