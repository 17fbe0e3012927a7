"""Turn labelled texts into input-label contrastive rows, and draw few-shot subsets.

    rows = label_contrast_dataset(dataset, {"pos": "a positive review", "neg": "a negative review"})
    # columns: anchor (the text), positive (its label's description), negative_1 (another label's description)
    few = sample_few_shot(dataset, shots_per_label=8, seed=0)

The rows fit the ``anchor, positive, negative_1..k`` contract of every in-batch objective, so the trainer, collator,
gradient cache and distributed gather are unchanged; ``InputLabelContrast`` (objective ``"input_label"``) reads them.
Many rows share a description, so train them with ``no_duplicates_sampler=False``: the global no-duplicates sampler
would put at most one row per label into a batch. The objective masks repeated descriptions by their input hash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: light users and the GPU machine may lack datasets
    import datasets


def label_contrast_dataset(
    dataset: datasets.Dataset,
    label_descriptions: Mapping[Hashable, str],
    num_negatives: int | None = None,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    sampling_power: float = 0.0,
) -> datasets.Dataset:
    """Rows ``anchor = text, positive = description(label), negative_1..k = descriptions of k other labels``.

    The ``k`` negative labels of a row are drawn without replacement from the labels other than its own, with
    probability ``q(y) ∝ (count(y) + 1) ** sampling_power`` where ``count`` is the label's frequency in
    ``dataset``: ``0`` = uniform (the primer's advice for long-tail labels, the default), ``1`` = proportional to
    frequency (add-one smoothed so an unseen label can still be drawn), ``0.75`` = word2vec's unigram power.
    Draws use one ``numpy`` generator seeded with ``seed`` and walk the rows in order, so the output is a
    deterministic function of the inputs. Negatives are drawn once; rebuild with another seed to redraw them.

    Args:
        dataset: rows with a text column and a label column (labels: any hashable values, e.g. str or int ids of
            a ``ClassLabel``).
        label_descriptions: label -> its description text, keyed by the label column's values; the mapping's
            order is the label order. Descriptions must be distinct, non-blank strings.
        num_negatives: ``k``; default: every other label (``len(label_descriptions) - 1``).
        seed: seed of the negative-label draws.
        text_column, label_column: where the text and the label are read.
        sampling_power: exponent of the negative-label distribution (see above).

    Returns:
        A ``datasets.Dataset`` with exactly the columns ``anchor, positive, negative_1 .. negative_k``.
    """
    labels_in_order = _checked_labels(label_descriptions)
    num_labels = len(labels_in_order)
    k = num_labels - 1 if num_negatives is None else num_negatives
    if not 1 <= k <= num_labels - 1:
        raise ValueError(f"num_negatives must be between 1 and {num_labels - 1} (the other labels), got {k}.")
    texts, labels = _columns(dataset, text_column, label_column)
    index = {label: i for i, label in enumerate(labels_in_order)}
    label_ids = np.array([_label_index(index, label, row) for row, label in enumerate(labels)], dtype=np.int64)
    counts = np.bincount(label_ids, minlength=num_labels)
    weights = (counts + 1.0) ** sampling_power
    rng = np.random.default_rng(seed)
    negatives = [_draw_negatives(rng, weights, own, k) for own in label_ids]
    descriptions = [label_descriptions[label] for label in labels_in_order]
    columns = {"anchor": list(texts), "positive": [descriptions[i] for i in label_ids]}
    for j in range(k):
        columns[f"negative_{j + 1}"] = [descriptions[row[j]] for row in negatives]
    import datasets

    return datasets.Dataset.from_dict(columns)


def sample_few_shot(
    dataset: datasets.Dataset, shots_per_label: int, seed: int = 0, label_column: str = "label"
) -> datasets.Dataset:
    """Keep ``shots_per_label`` random rows of every label (in their original order); deterministic in ``seed``.

    Each label's rows are permuted by one generator seeded with ``seed`` (labels taken in order of first
    appearance) and the first ``shots_per_label`` are kept, so with the same seed a smaller few-shot set is a
    subset of a larger one. Raises a ValueError naming the label when one has fewer rows than requested.
    """
    if shots_per_label < 1:
        raise ValueError(f"shots_per_label must be >= 1, got {shots_per_label}.")
    if label_column not in dataset.column_names:
        raise ValueError(f"Column {label_column!r} is not in the dataset; it has {dataset.column_names}.")
    rows_by_label: dict[Hashable, list[int]] = {}
    for row, label in enumerate(dataset[label_column][:]):
        rows_by_label.setdefault(label, []).append(row)
    rng = np.random.default_rng(seed)
    keep = []
    for label, rows in rows_by_label.items():
        if len(rows) < shots_per_label:
            raise ValueError(f"Label {label!r} has {len(rows)} rows, fewer than shots_per_label={shots_per_label}.")
        keep.extend(rows[i] for i in rng.permutation(len(rows))[:shots_per_label])
    return dataset.select(sorted(keep))


def _checked_labels(label_descriptions: Mapping[Hashable, str]) -> list[Hashable]:
    labels = list(label_descriptions)
    if len(labels) < 2:
        raise ValueError(f"Input-label contrast needs at least 2 labels, got {labels}.")
    for label, text in label_descriptions.items():
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The description of label {label!r} must be non-blank text, got {text!r}.")
    repeated = [text for text, n in Counter(label_descriptions.values()).items() if n > 1]
    if repeated:
        raise ValueError(f"Labels must have distinct descriptions; repeated: {repeated}.")
    return labels


def _columns(dataset: datasets.Dataset, text_column: str, label_column: str) -> tuple[Sequence, Sequence]:
    missing = [c for c in (text_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Missing column(s) {missing}; the dataset has {dataset.column_names}.")
    return dataset[text_column][:], dataset[label_column][:]


def _label_index(index: Mapping[Hashable, int], label: Hashable, row: int) -> int:
    if label not in index:
        raise ValueError(f"Row {row}: label {label!r} has no description; described labels: {list(index)}.")
    return index[label]


def _draw_negatives(rng: np.random.Generator, weights: np.ndarray, own: int, k: int) -> np.ndarray:
    """``k`` distinct label ids other than ``own``, drawn with probability proportional to ``weights``."""
    others = np.delete(np.arange(len(weights)), own)
    probabilities = weights[others] / weights[others].sum()
    return rng.choice(others, size=k, replace=False, p=probabilities)
