"""Tabular data for representation learning: offline loaders of small real tables and seeded vector views.

Loaders return ``datasets.Dataset`` rows ``{"x": list[float] (d features), "label": int | float}`` read from
``../shared/data`` (nothing is copied into the project). A view transform maps one row's vector to a corrupted copy;
the multimodal collator runs it per row (``views={"x_view_1": ("x", transform)}``) and
:func:`hf_contrastive.data.multimodal.stack_vectors` stacks the column into ``{"values": [B, d]}``.

Views for tabular data (there is no crop or colour jitter for a feature vector):

- :class:`GaussianNoise`: ``x + eps``, ``eps ~ N(0, std^2 I)`` (on standardised features, ``std`` is in units of each
  feature's spread).
- :class:`FeatureMask`: each feature is set to ``fill`` with probability ``rate`` (dropout of inputs, no rescaling).
- :class:`ScarfCorruption` (Bahri et al. 2022, SCARF): each feature, with probability ``rate`` (0.6 in the paper),
  is replaced by a draw from that feature's empirical marginal (its value in a random training row), so a corrupted
  vector stays inside the data's per-feature ranges.
- :class:`Compose`: apply several in turn.

Every transform owns a ``numpy`` generator seeded at construction, so a run is reproducible. DataLoader workers
each get a copy of the generator state (the same stream in every worker); use ``dataloader_num_workers=0`` or one
transform per worker when independent streams matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value

ABALONE_SEXES = ("M", "F", "I")


# ------------------------------------------------------------------------------------------------------ loaders
def load_digits_vectors(path: str | Path) -> Dataset:
    """scikit-learn's 1,797 digits (``digits.csv.gz``: 64 pixel values 0-16, then the label) as 64-d vectors.

    Pixels are divided by 16, so features lie in [0, 1]. Rows: ``{"x": 64 floats, "label": int 0-9}``.
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"{path}: expected 65 columns (64 pixels + label), got shape {table.shape}.")
    return vector_dataset(table[:, :64] / 16.0, table[:, 64].astype(np.int64))


def load_breast_cancer(path: str | Path) -> Dataset:
    """scikit-learn's breast-cancer table (``breast_cancer.csv``: 569 rows of 30 features + label 0/1) as vectors.

    The first line holds counts and class names (UCI style) and is skipped. Label 0 = malignant, 1 = benign.
    Features are raw (their scales differ by orders of magnitude): standardise them with :func:`standardize`.
    """
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 31:
        raise ValueError(f"{path}: expected 31 columns (30 features + label), got shape {table.shape}.")
    return vector_dataset(table[:, :30], table[:, 30].astype(np.int64))


def load_abalone(path: str | Path) -> Dataset:
    """UCI abalone (``abalone.data``: header, sex in {M, F, I}, 7 measurements, rings) as 10-d vectors.

    ``x`` = one-hot sex (M, F, I) followed by the 7 measurements; ``label`` = rings (float, the regression target).
    """
    with open(path) as handle:
        header = handle.readline().strip().split(",")
        rows = [line.strip().split(",") for line in handle if line.strip()]
    if len(header) != 9 or header[0] != "sex":
        raise ValueError(f"{path}: expected the header 'sex,length,...,rings' (9 columns), got {header}.")
    bad = [i for i, row in enumerate(rows) if len(row) != 9 or row[0] not in ABALONE_SEXES]
    if bad:
        raise ValueError(f"{path}: row {bad[0] + 2} is not 'sex (M/F/I), 7 measurements, rings': {rows[bad[0]]}.")
    sex = np.array([[row[0] == s for s in ABALONE_SEXES] for row in rows], dtype=np.float64)
    numbers = np.array([row[1:] for row in rows], dtype=np.float64)
    return vector_dataset(np.concatenate([sex, numbers[:, :7]], axis=1), numbers[:, 7])


def vector_dataset(features: np.ndarray, labels: np.ndarray) -> Dataset:
    """``{"x": [d] float32, "label": int64 or float64}`` rows from a [N, d] matrix and [N] labels."""
    label_type = Value("int64") if np.issubdtype(labels.dtype, np.integer) else Value("float64")
    schema = Features({"x": List(Value("float32")), "label": label_type})
    return Dataset.from_dict({"x": features.astype(np.float32).tolist(), "label": labels.tolist()}, features=schema)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every matrix by the train columns' mean and standard deviation: ``(X - mu_train) / sd_train``.

    Constant train columns (sd = 0) are only centred. Returns ``[train, *others]`` standardised, float32.
    """
    train = np.asarray(train, dtype=np.float64)
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return [((np.asarray(x, dtype=np.float64) - mean) / sd).astype(np.float32) for x in (train, *others)]


# ------------------------------------------------------------------------------------------------------ views
class _SeededTransform:
    """A per-row vector transform with its own seeded numpy generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _vector(value) -> np.ndarray:
        vector = np.asarray(value, dtype=np.float32)
        if vector.ndim != 1:
            raise ValueError(f"A tabular view transform takes one 1-D vector per row, got shape {vector.shape}.")
        return vector


class GaussianNoise(_SeededTransform):
    """``x + eps`` with ``eps ~ N(0, std^2 I)``: a view that keeps every feature, slightly moved."""

    def __init__(self, std: float = 0.1, seed: int = 0) -> None:
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}.")
        super().__init__(seed)
        self.std = std

    def __call__(self, value) -> np.ndarray:
        vector = self._vector(value)
        return vector + self.std * self.rng.standard_normal(vector.shape).astype(np.float32)


class FeatureMask(_SeededTransform):
    """Set each feature to ``fill`` with probability ``rate`` (independent per feature and row)."""

    def __init__(self, rate: float = 0.2, fill: float = 0.0, seed: int = 0) -> None:
        _check_rate(rate)
        super().__init__(seed)
        self.rate, self.fill = rate, fill

    def __call__(self, value) -> np.ndarray:
        vector = self._vector(value)
        return np.where(self.rng.random(vector.shape) < self.rate, np.float32(self.fill), vector)


class ScarfCorruption(_SeededTransform):
    """SCARF: replace each feature, with probability ``rate``, by its value in a uniformly drawn training row.

    ``table``: the [N, d] training matrix whose columns are the empirical marginals (pass the standardised table
    when the model sees standardised features).
    """

    def __init__(self, table: np.ndarray, rate: float = 0.6, seed: int = 0) -> None:
        _check_rate(rate)
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or len(table) == 0:
            raise ValueError(f"ScarfCorruption needs a non-empty [N, d] training table, got shape {table.shape}.")
        super().__init__(seed)
        self.table, self.rate = table, rate

    def __call__(self, value) -> np.ndarray:
        vector = self._vector(value)
        if vector.shape[0] != self.table.shape[1]:
            raise ValueError(f"Row has {vector.shape[0]} features but the SCARF table has {self.table.shape[1]}.")
        corrupt = self.rng.random(vector.shape) < self.rate
        donors = self.rng.integers(0, len(self.table), size=vector.shape)
        return np.where(corrupt, self.table[donors, np.arange(vector.shape[0])], vector)


class Compose:
    """Apply ``transforms`` in order: ``Compose([ScarfCorruption(table), GaussianNoise(0.05)])``."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, value):
        for transform in self.transforms:
            value = transform(value)
        return value


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}.")
