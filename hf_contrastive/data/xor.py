"""Symile's synthetic binary XOR data: three vector modalities whose dependence is (partly) higher-order only.

Saporta et al. 2024, Sec. 5.1 (``src/binary/datasets.py`` of the reference code), for each row:

.. math::

    a, b \\sim \\mathrm{Bernoulli}(0.5)^{d}, \\quad i \\sim \\mathrm{Bernoulli}(\\hat p), \\quad
    c = (a \\oplus b)^{i} \\cdot a^{1 - i}

so ``c = a XOR b`` on rows with ``i = 1`` (every pair of modalities is independent there, only the triple is
dependent) and ``c = a`` otherwise. At ``p = 1`` pairwise methods learn nothing; predicting ``b`` from ``(a, c)``
is possible exactly on the ``i = 1`` rows, so the best zero-shot accuracy is ``p + (1 - p) / 2^d``.

Missing modalities: with ``missing_probability > 0`` each modality of each row is dropped independently: its value
becomes None and ``<modality>_missing`` = 1. :func:`stack_vectors_with_missing` (the collator's processor for such
columns) turns None into zeros plus a missing flag, and
:class:`~hf_contrastive.models.multimodal_encoder.MultiModalEncoder` replaces the zeros by its placeholder and
embeds the flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .multimodal import stack_vectors

if TYPE_CHECKING:  # imported where used (datasets costs seconds to import)
    import datasets

XOR_MODALITIES = ("a", "b", "c")


def xor_arrays(rows: int, dim: int, p: float, seed: int) -> dict[str, np.ndarray]:
    """``{"a", "b", "c": float32 [rows, dim] of 0/1, "i": int64 [rows]}`` drawn as in the module docstring."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p (the probability of the XOR branch) must be in [0, 1], got {p}.")
    if rows < 1 or dim < 1:
        raise ValueError(f"rows and dim must be positive, got rows={rows}, dim={dim}.")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=(rows, dim))
    b = rng.integers(0, 2, size=(rows, dim))
    i = (rng.random(rows) < p).astype(np.int64)
    c = np.where(i[:, None] == 1, a ^ b, a)
    return {"a": a.astype(np.float32), "b": b.astype(np.float32), "c": c.astype(np.float32), "i": i}


def xor_dataset(
    rows: int, dim: int = 1, p: float = 1.0, missing_probability: float = 0.0, seed: int = 0
) -> datasets.Dataset:
    """The XOR data as a ``datasets.Dataset``: columns ``a``, ``b``, ``c`` (lists of ``dim`` floats), ``xor``
    (the row's ``i``) and, when ``missing_probability > 0``, ``a_missing``, ``b_missing``, ``c_missing`` (0/1;
    a missing value is None)."""
    from datasets import Dataset

    if not 0.0 <= missing_probability < 1.0:
        raise ValueError(f"missing_probability must be in [0, 1), got {missing_probability}.")
    arrays = xor_arrays(rows, dim, p, seed)
    columns = {m: arrays[m].tolist() for m in XOR_MODALITIES}
    columns["xor"] = arrays["i"].tolist()
    if missing_probability > 0:
        rng = np.random.default_rng([seed, 1])  # its own stream: the values do not depend on the missingness
        for modality in XOR_MODALITIES:
            missing = rng.random(rows) < missing_probability
            columns[modality] = [None if gone else value for value, gone in zip(columns[modality], missing)]
            columns[f"{modality}_missing"] = missing.astype(np.int64).tolist()
    return Dataset.from_dict(columns)


def stack_vectors_with_missing(values: list[Sequence[float] | None], dim: int) -> dict[str, torch.Tensor]:
    """Processor for vector columns of size ``dim`` with missing rows (None): ``{"values": [B, dim] (zeros where
    missing), "missing": [B] (1 where missing)}``. Bind ``dim`` with ``functools.partial`` for the collator."""
    zeros = [0.0] * dim
    features = stack_vectors([zeros if value is None else value for value in values])
    features["missing"] = torch.tensor([value is None for value in values], dtype=torch.long)
    return features


def binary_candidates(dim: int) -> np.ndarray:
    """All ``2^dim`` binary vectors [2^dim, dim] (float32), row ``k`` = the bits of ``k`` (most significant first)."""
    codes = np.arange(2**dim)[:, None] >> np.arange(dim - 1, -1, -1)[None, :]
    return (codes & 1).astype(np.float32)


def candidate_index(vectors: np.ndarray) -> np.ndarray:
    """Row of :func:`binary_candidates` equal to each binary vector of ``vectors`` [N, dim]: [N] int."""
    dim = vectors.shape[1]
    return (vectors.astype(np.int64) << np.arange(dim - 1, -1, -1)[None, :]).sum(axis=1)
