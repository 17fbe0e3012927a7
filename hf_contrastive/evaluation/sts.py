"""Evaluate sentence embeddings on semantic textual similarity (STS-B, SICK-R): correlation of cosine with gold scores.

evaluator = STSEvaluator.from_sts_benchmark("../shared/data/stsb/sts-dev.csv", name="stsb_dev")
evaluator(lambda texts: model.encode(texts, tokenizer))
# {"stsb_dev_spearman_cosine": 0.81..., "stsb_dev_pearson_cosine": 0.80...}
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

EncodeFn = Callable[[list[str]], Any]  # returns a torch.Tensor or array of shape [N, D]

_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


def compute_sts_metrics(embeddings1, embeddings2, scores: Sequence[float]) -> dict[str, float]:
    """Correlate the cosine of paired embeddings with gold scores; returns spearman_cosine and pearson_cosine.

    cos_i = <a_i, b_i> / (max(|a_i|, eps) * max(|b_i|, eps)), eps = 1e-8, for embeddings1 = a [N, D] and
    embeddings2 = b [N, D] (torch tensors or arrays); scores [N]. Both correlations are plain values in [-1, 1].
    Constant similarities (a collapsed encoder) give nan rather than an error, so training can go on.
    """
    a, b = as_float64(embeddings1), as_float64(embeddings2)
    gold = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"Expected two [N, D] embedding matrices of the same shape, got {a.shape} and {b.shape}.")
    _check_pairs(len(a), gold)
    eps = 1e-8
    norms = np.maximum(np.linalg.norm(a, axis=1), eps) * np.maximum(np.linalg.norm(b, axis=1), eps)
    cosine = (a * b).sum(axis=1) / norms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return {
            "spearman_cosine": float(spearmanr(cosine, gold).statistic),
            "pearson_cosine": float(pearsonr(cosine, gold).statistic),
        }


class STSEvaluator:
    """Score an encoder on sentence pairs with gold similarity: call it with `encode_fn(list[str]) -> [N, D]`.

    Each distinct sentence is encoded once, in batches of `batch_size`, then the cosine of each pair is correlated
    with the gold score. Returns `{f"{name}_spearman_cosine": float, f"{name}_pearson_cosine": float}`.

    Args:
        sentences1, sentences2: the two sides of each pair, same length N >= 2.
        scores: gold similarity per pair (any scale: both correlations ignore affine rescaling), not all equal.
        name: prefix of the metric keys.
        batch_size: how many sentences go to one `encode_fn` call.
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float],
        name: str = "sts",
        batch_size: int = 64,
    ):
        if len(sentences1) != len(sentences2):
            raise ValueError(f"sentences1 has {len(sentences1)} items but sentences2 has {len(sentences2)}.")
        _check_pairs(len(sentences1), scores)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.sentences1 = list(sentences1)
        self.sentences2 = list(sentences2)
        self.scores = [float(score) for score in scores]
        self.name = name
        self.batch_size = batch_size

    def __call__(self, encode_fn: EncodeFn) -> dict[str, float]:
        """Encode the unique sentences with `encode_fn` and return the prefixed Spearman and Pearson correlations."""
        unique = list(dict.fromkeys(self.sentences1 + self.sentences2))
        embeddings = encode_texts(unique, encode_fn, self.batch_size)
        row = {sentence: i for i, sentence in enumerate(unique)}
        emb1 = embeddings[[row[s] for s in self.sentences1]]
        emb2 = embeddings[[row[s] for s in self.sentences2]]
        metrics = compute_sts_metrics(emb1, emb2, self.scores)
        return {f"{self.name}_{key}": value for key, value in metrics.items()}

    @classmethod
    def from_sts_benchmark(
        cls, path: str | Path, name: str | None = None, max_pairs: int | None = None, batch_size: int = 64
    ) -> STSEvaluator:
        """Build an evaluator from an STS-B release file (sts-*.csv) or a SICK file (SICK_*.txt).

        STS-B: TAB-separated, no header, no quoting; columns genre, file, year, id, score, sentence1, sentence2
        and, on some rows, two source columns. SICK: TAB-separated with a header naming sentence_A, sentence_B
        and relatedness_score. `name` defaults to the file stem; `max_pairs` keeps the first pairs only.
        """
        path = Path(path)
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        if rows and rows[0] and rows[0][0] == "pair_ID":
            pairs = _read_sick(rows, path)
        else:
            pairs = _read_stsb(rows, path)
        if max_pairs is not None:
            pairs = pairs[:max_pairs]
        sentences1, sentences2, scores = (list(column) for column in zip(*pairs)) if pairs else ([], [], [])
        return cls(sentences1, sentences2, scores, name=name or path.stem, batch_size=batch_size)


def _read_stsb(rows: list[list[str]], path: Path) -> list[tuple[str, str, float]]:
    pairs = []
    for line, row in enumerate(rows, start=1):
        if len(row) < 7:
            raise ValueError(f"{path}:{line}: expected at least 7 TAB-separated columns (STS-B), got {len(row)}.")
        pairs.append((row[5], row[6], _parse_score(row[4], path, line)))
    return pairs


def _read_sick(rows: list[list[str]], path: Path) -> list[tuple[str, str, float]]:
    header = rows[0]
    missing = [column for column in _SICK_COLUMNS if column not in header]
    if missing:
        raise ValueError(f"{path}: SICK header {header} lacks the column(s) {missing}.")
    first, second, score = (header.index(column) for column in _SICK_COLUMNS)
    width = len(header)
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise ValueError(f"{path}:{line}: expected {width} TAB-separated columns (SICK), got {len(row)}.")
        pairs.append((row[first], row[second], _parse_score(row[score], path, line)))
    return pairs


def _parse_score(text: str, path: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: score {text!r} is not a number.") from None


def _check_pairs(num_pairs: int, scores: Sequence[float]) -> None:
    if num_pairs != len(scores):
        raise ValueError(f"Got {num_pairs} sentence pairs but {len(scores)} scores.")
    if num_pairs < 2:
        raise ValueError(f"Correlation needs at least 2 pairs, got {num_pairs}.")
    if len(set(np.asarray(scores, dtype=np.float64).tolist())) < 2:
        raise ValueError(f"All {num_pairs} gold scores are equal: the correlation is undefined.")


class MemoizedEncoder:
    """Wrap ``encode_fn`` so a text is encoded once: evaluators and miners that embed the same corpus with the same
    (frozen) model share the work. Make a new one whenever the model changes. Memory: one float64 row per text.
    """

    def __init__(self, encode_fn: EncodeFn) -> None:
        self.encode_fn = encode_fn
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in self.cache))
        if missing:
            self.cache.update(zip(missing, as_float64(self.encode_fn(missing))))
        return np.stack([self.cache[text] for text in texts])


def encode_texts(texts: Sequence[str], encode_fn: EncodeFn, batch_size: int) -> np.ndarray:
    """[N, D] float64 embeddings of ``texts`` in their order, encoded longest first so each batch pads little.

    Shared by every evaluator; ``encode_fn`` maps a list of texts to a tensor or array [n, D].
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    for start in range(0, len(order), batch_size):
        batch = [texts[i] for i in order[start : start + batch_size]]
        chunk = as_float64(encode_fn(batch))
        if chunk.ndim != 2 or len(chunk) != len(batch):
            raise ValueError(f"encode_fn returned shape {chunk.shape} for {len(batch)} texts; expected [N, D].")
        chunks.append(chunk)
    embeddings = np.empty((len(texts), chunks[0].shape[1]))
    embeddings[order] = np.concatenate(chunks)
    return embeddings


def as_float64(embeddings) -> np.ndarray:
    """A tensor (any device or dtype) or array-like as a float64 numpy array."""
    if hasattr(embeddings, "detach"):  # torch.Tensor, possibly on GPU or in bf16
        embeddings = embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float64)
