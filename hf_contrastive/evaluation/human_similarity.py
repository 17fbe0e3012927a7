"""Score how well an encoder's similarities approximate human similarity ratings, against the raters' own ceiling.

Implements the evaluation of Marjieh et al., "Words are all you need? Language as an approximation for human
similarity judgments" (ICLR 2023, arXiv:2206.04105) for sentence pairs with human scores (STS-B, SICK-R):

- zero-parameter predictor: S_hat(a, b) = cos(F_a, F_b) of the language embeddings, scored by Pearson r over all
  rated pairs (Spearman as a robustness check);
- reliability ceiling: split-half correlation of the raters with the Spearman-Brown correction, r_SB = 2r / (1 + r),
  averaged over random splits (`split_half_reliability`, needs per-rater scores). STS-B and SICK publish only the
  mean score per pair, and the paper describes no estimator for that case: `estimate_reliability_from_repeats`
  estimates the same quantity from pairs that were rated more than once (assumptions in its docstring). It is an
  estimate, never a measured ceiling;
- "stacked" predictor: cosine of [alpha * L_hat ; O_hat], the L2-normalised language block L (the encoder) scaled by
  one scalar alpha and concatenated with another L2-normalised embedding O. The paper stacks the best caption LLM with
  the five best image/audio/video DNNs; text-only data has no second modality, so O defaults to a TF-IDF embedding
  (one of the paper's word-frequency methods) or any second encoder. alpha is tuned on calibration pairs (the paper:
  the 190 pairs among 20 stimuli; here: a training split) and the stacked r is reported on other pairs;
- extension, NOT the paper's method (its main text fits no weights): ridge regression on pair features
  [a * b, |a - b|] (Peterson et al. 2018's diagonal transform plus a distance term), scored out of fold with
  folds split by item so no sentence is in both the training and the test fold.

    evaluator = HumanSimilarityEvaluator.from_sts_benchmark(
        "../shared/data/stsb/sts-dev.csv", calibration_path="../shared/data/stsb/sts-train.csv", ridge=True
    )
    evaluator(lambda texts: model.encode(texts, tokenizer))
    # {"sts-dev_pearson_cosine": ..., "sts-dev_reliability": ..., "sts-dev_stacked_pearson_cosine": ..., ...}
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

from .sts import EncodeFn, STSEvaluator, as_float64, encode_texts

PairData = tuple[list[str], list[str], list[float]]  # sentences1, sentences2, human scores
OtherEmbedding = str | EncodeFn  # "tfidf" or a second encoder

DEFAULT_ALPHA_GRID = np.logspace(-2, 2, 41)  # the spec's 1-D grid for the stacking scale
DEFAULT_RIDGE_ALPHAS = np.logspace(-3, 3, 13)
SIMILARITY_METRICS = ("cosine", "dot", "neg_euclidean")


# ----------------------------------------------------------------------------------------------- similarity
def pair_similarity(embeddings1, embeddings2, metric: str = "cosine") -> np.ndarray:
    """Similarity of each row pair: cosine (default), dot product or negative Euclidean distance; returns [N].

    cos_i = <a_i, b_i> / (max(|a_i|, eps) max(|b_i|, eps)), eps = 1e-8; dot_i = <a_i, b_i>; neg_euclidean_i =
    -|a_i - b_i|. embeddings1 = a and embeddings2 = b are [N, D] arrays or tensors.
    """
    a, b = as_float64(embeddings1), as_float64(embeddings2)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"Expected two [N, D] embedding matrices of the same shape, got {a.shape} and {b.shape}.")
    if metric == "cosine":
        return (_l2_normalise(a) * _l2_normalise(b)).sum(axis=1)
    if metric == "dot":
        return (a * b).sum(axis=1)
    if metric == "neg_euclidean":
        return -np.linalg.norm(a - b, axis=1)
    raise ValueError(f"metric must be one of {SIMILARITY_METRICS}, got {metric!r}.")


def pearson(predicted: Sequence[float], human: Sequence[float]) -> float:
    """Pearson r between predicted and human similarity over pairs; nan (not an error) when either is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(pearsonr(np.asarray(predicted, dtype=np.float64), np.asarray(human, dtype=np.float64))[0])


def _spearman(predicted: np.ndarray, human: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(predicted, human)[0])


def _l2_normalise(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-8)


# ----------------------------------------------------------------------------------------------- reliability
def spearman_brown(r: float, factor: float = 2.0) -> float:
    """Reliability of a measure `factor` times as long as one with reliability r: factor r / (1 + (factor - 1) r)."""
    return factor * r / (1.0 + (factor - 1.0) * r)


def split_half_reliability(ratings: Sequence[Sequence[float]], n_splits: int = 100, seed: int = 0) -> float:
    """Split-half inter-rater reliability of the mean score per pair (the paper's ceiling, after Peterson et al.).

    `ratings[p]` holds the individual judgments of pair p (>= 2 each, counts may differ). Per split, each pair's
    judgments are shuffled and cut into halves (the first floor(m/2) and the rest), each half is averaged, the two
    half-means are correlated across pairs (Pearson r) and corrected with Spearman-Brown, 2r / (1 + r). Returns the
    mean over `n_splits` random splits. With odd m the halves differ by one judgment; the correction assumes equal
    halves.
    """
    counts = np.array([len(judgments) for judgments in ratings])
    if len(counts) < 3 or counts.min() < 2:
        raise ValueError("Split-half reliability needs >= 3 pairs with >= 2 judgments each.")
    padded = np.full((len(counts), counts.max()), np.nan)  # [P, M], NaN after each pair's own judgments
    for p, judgments in enumerate(ratings):
        padded[p, : counts[p]] = judgments
    rng = np.random.default_rng(seed)
    corrected = [spearman_brown(pearson(*_half_means(padded, counts, rng))) for _ in range(n_splits)]
    return float(np.mean(corrected))


def _half_means(padded: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means of a random half (floor(m/2) judgments) and of the rest, per pair; two arrays [P]."""
    keys = np.where(np.isnan(padded), np.inf, rng.random(padded.shape))
    rank = keys.argsort(axis=1).argsort(axis=1)  # a random order of each pair's judgments, padding last
    first = rank < (counts // 2)[:, None]
    second = ~first & ~np.isnan(padded)
    values = np.nan_to_num(padded)
    return (values * first).sum(1) / first.sum(1), (values * second).sum(1) / second.sum(1)


@dataclass(frozen=True)
class ReliabilityEstimate:
    """A reliability ceiling with its provenance: how it was obtained and from how much data.

    value: the reliability of the published mean scores (the Spearman-Brown-corrected split-half quantity).
    method: "split_half" (per-rater scores) or "repeated_pairs" (an estimate from re-rated pairs; see
    `estimate_reliability_from_repeats`). n_groups: pairs (split-half) or re-rated pair groups (repeats) used;
    n_identical_groups: re-rated groups whose scores are all equal (possible verbatim copies of one annotation).
    ci_low, ci_high: 95% percentile bootstrap interval over the groups (repeats only).
    value_without_identical: the same estimate with the all-equal groups left out (repeats only; None when no group
    differs): the lower end if those groups are copies rather than agreeing re-annotations.
    """

    value: float
    method: str
    n_groups: int
    n_identical_groups: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    value_without_identical: float | None = None

    @property
    def max_pearson(self) -> float:
        """The largest Pearson r any predictor can reach against the noisy means: sqrt(reliability) (test theory)."""
        return float(np.sqrt(max(self.value, 0.0)))


def repeated_pair_groups(
    sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float]
) -> list[np.ndarray]:
    """The scores of every unordered sentence pair that occurs in more than one row (one array per such pair)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for first, second, score in zip(sentences1, sentences2, scores, strict=True):
        groups[tuple(sorted((first, second)))].append(float(score))
    return [np.asarray(values) for values in groups.values() if len(values) > 1]


def pooled_error_variance(groups: Sequence[np.ndarray]) -> float:
    """Error variance of one published mean score from re-rated pairs: sum_g sum_i (x_gi - mean_g)^2 / sum_g (m_g-1)."""
    if not groups:
        raise ValueError("No pair was rated more than once: the error variance cannot be estimated.")
    squares = sum(float(((group - group.mean()) ** 2).sum()) for group in groups)
    return squares / sum(len(group) - 1 for group in groups)


def reliability_from_error_variance(scores: Sequence[float], error_variance: float) -> float:
    """Reliability of mean scores with known error variance: 1 - error_variance / Var(scores) (ddof = 1)."""
    return 1.0 - error_variance / float(np.var(np.asarray(scores, dtype=np.float64), ddof=1))


def estimate_reliability_from_repeats(
    groups: Sequence[np.ndarray], scores: Sequence[float], n_bootstrap: int = 1000, seed: int = 0
) -> ReliabilityEstimate:
    """ESTIMATE the split-half ceiling of mean-only data (STS-B, SICK) from pairs that were rated more than once.

    The paper's ceiling (split-half + Spearman-Brown, `split_half_reliability`) needs each rater's score; STS-B and
    SICK publish one mean per pair and the paper gives no estimator for that case. This one targets the same
    quantity. If every pair's mean averages k raters with noise variance s^2, two independent ratings of one pair
    differ with variance 2 s^2 / k, and the corrected split-half reliability is Var(true) / (Var(true) + s^2 / k) =
    1 - (s^2 / k) / Var(S). So: error variance e = `pooled_error_variance(groups)` (= s^2 / k), reliability =
    1 - e / Var(scores), with `scores` the split being evaluated (its spread sets the ceiling).

    Assumptions (state them next to the number): each repeat of a pair is an independent annotation by the same
    protocol (same k); the error variance is the same for all pairs (the repeated ones are representative). A repeat
    that copies an earlier annotation verbatim lowers e and raises the ceiling; `n_identical_groups` counts groups
    whose scores all agree and `value_without_identical` leaves them out, so the two values bracket the ceiling when
    copies are suspected. The interval resamples the groups (percentile bootstrap, `n_bootstrap` draws).

    groups: scores of each re-rated pair (`repeated_pair_groups`, possibly pooled over files of one dataset).
    scores: [N] mean scores of the evaluated pairs.
    """
    value = reliability_from_error_variance(scores, pooled_error_variance(groups))
    rng = np.random.default_rng(seed)
    draws = [
        reliability_from_error_variance(scores, pooled_error_variance([groups[i] for i in sample]))
        for sample in rng.integers(0, len(groups), size=(n_bootstrap, len(groups)))
    ]
    low, high = np.percentile(draws, [2.5, 97.5]) if n_bootstrap else (None, None)
    differing = [group for group in groups if np.ptp(group) > 0]
    without_identical = (
        reliability_from_error_variance(scores, pooled_error_variance(differing)) if differing else None
    )
    return ReliabilityEstimate(
        value,
        "repeated_pairs",
        n_groups=len(groups),
        n_identical_groups=len(groups) - len(differing),
        ci_low=_opt_float(low),
        ci_high=_opt_float(high),
        value_without_identical=without_identical,
    )


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


# ----------------------------------------------------------------------------------------------- stacking
def tfidf_embeddings(texts: Sequence[str], fit_texts: Sequence[str] | None = None) -> sparse.csr_matrix:
    """TF-IDF rows (sklearn defaults: lower-cased word unigrams, smoothed idf, L2-normalised) for `texts`; [N, V].

    The vocabulary and idf are fitted on `fit_texts` (default: `texts`); fitting uses no human scores.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer().fit(list(fit_texts if fit_texts is not None else texts))
    return vectorizer.transform(list(texts))


def stack(language, others: Sequence, alpha: float):
    """Concatenate [alpha * L_hat ; O1_hat ; ... ; Ok_hat] with every block L2-normalised per row; [N, D_L + sum D_i].

    language: [N, D_L] array or tensor; others: [N, D_i] arrays, tensors or scipy sparse matrices (the result is
    sparse if any is). The cosine of two stacked rows equals `stacked_similarity` of the per-block cosines.
    """
    blocks = [alpha * _l2_normalise(as_float64(language))] + [_normalised_block(other) for other in others]
    if any(sparse.issparse(block) for block in blocks):
        return sparse.hstack([sparse.csr_matrix(block) for block in blocks], format="csr")
    return np.concatenate(blocks, axis=1)


def _normalised_block(block):
    if sparse.issparse(block):
        norms = np.maximum(np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel()), 1e-8)
        return sparse.diags(1.0 / norms) @ block
    return _l2_normalise(as_float64(block))


def stacked_similarity(language_similarity, other_similarities: Sequence, alpha: float) -> np.ndarray:
    """Cosine of stacked pairs from per-block cosines: (alpha^2 c_L + sum_i c_i) / (alpha^2 + k); returns [N].

    Each block of `stack` has unit norm, so a stacked row has norm sqrt(alpha^2 + k) and the stacked dot product is
    alpha^2 c_L + sum_i c_i. alpha -> 0 gives the mean of the other blocks' cosines, alpha -> inf gives c_L.
    language_similarity: [N] cosines of the language block; other_similarities: k arrays [N].
    """
    weight = alpha**2
    others = np.sum([np.asarray(s, dtype=np.float64) for s in other_similarities], axis=0)
    return (weight * np.asarray(language_similarity, dtype=np.float64) + others) / (weight + len(other_similarities))


def fit_alpha(
    language_similarity, other_similarities: Sequence, human: Sequence[float], grid: Sequence[float] | None = None
) -> tuple[float, float]:
    """Tune the stacking scale by grid search: the alpha in `grid` maximising Pearson r on calibration pairs.

    Returns (alpha, r). Default grid: logspace(-2, 2, 41), as the spec suggests; ties keep the smallest alpha.
    """
    grid = DEFAULT_ALPHA_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    rs = [pearson(stacked_similarity(language_similarity, other_similarities, alpha), human) for alpha in grid]
    best = int(np.nanargmax(rs))
    return float(grid[best]), float(rs[best])


# ----------------------------------------------------------------------------------------------- ridge extension
def pair_features(embeddings1, embeddings2) -> np.ndarray:
    """Symmetric pair features of L2-normalised embeddings: [a * b, |a - b|]; [N, 2D] from two [N, D] inputs."""
    a, b = _l2_normalise(as_float64(embeddings1)), _l2_normalise(as_float64(embeddings2))
    return np.concatenate([a * b, np.abs(a - b)], axis=1)


def item_groups(sentences1: Sequence[str], sentences2: Sequence[str]) -> np.ndarray:
    """Group id per pair: the connected component of the graph whose nodes are sentences and edges are pairs; [N].

    Pairs that share a sentence (directly or through a chain of pairs) get the same id, so splitting by group keeps
    every sentence on one side of a train/test split.
    """
    parent: dict[str, str] = {}

    def root(sentence: str) -> str:
        parent.setdefault(sentence, sentence)
        while parent[sentence] != sentence:
            parent[sentence] = parent[parent[sentence]]
            sentence = parent[sentence]
        return sentence

    for first, second in zip(sentences1, sentences2, strict=True):
        parent[root(first)] = root(second)
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(root(first), len(ids)) for first in sentences1])


def item_wise_folds(
    sentences1: Sequence[str], sentences2: Sequence[str], n_splits: int = 5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_indices, test_indices) of a GroupKFold over `item_groups`: no sentence is in both sides of a fold."""
    from sklearn.model_selection import GroupKFold

    groups = item_groups(sentences1, sentences2)
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"Only {len(np.unique(groups))} groups of linked pairs; cannot make {n_splits} item folds.")
    placeholder = np.zeros((len(groups), 1))
    return list(GroupKFold(n_splits=n_splits).split(placeholder, groups=groups))


def ridge_out_of_fold(
    features: np.ndarray,
    human: Sequence[float],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    alphas: Sequence[float] | None = None,
) -> np.ndarray:
    """Out-of-fold ridge predictions of human similarity (extension, not the paper's method); returns [N].

    Per fold, sklearn RidgeCV (intercept; regularisation chosen among `alphas` by its efficient leave-one-out on the
    training fold only) is fitted on features [N, F] of the training pairs and predicts the test pairs.
    """
    from sklearn.linear_model import RidgeCV

    target = np.asarray(human, dtype=np.float64)
    predictions = np.full(len(target), np.nan)
    alphas = DEFAULT_RIDGE_ALPHAS if alphas is None else alphas
    for train, test in folds:
        model = RidgeCV(alphas=alphas).fit(features[train], target[train])
        predictions[test] = model.predict(features[test])
    return predictions


# ----------------------------------------------------------------------------------------------- evaluator
class HumanSimilarityEvaluator:
    """Score an encoder as a predictor of human similarity: call it with `encode_fn(list[str]) -> [N, D]`.

    Returns, with keys prefixed by `name`:
      - `pearson_cosine`, `spearman_cosine`: zero-parameter predictor (named after `metric`: `pearson_dot`, ...);
      - `reliability`, `max_pearson` (= sqrt(reliability)), `pearson_over_reliability` (r / ceiling, as the paper
        compares them): only when `reliability` is given (an estimate for mean-only data; see
        `estimate_reliability_from_repeats`);
      - `other_pearson_cosine`: the second embedding alone (default TF-IDF);
      - `stacked_alpha`, `stacked_pearson_cosine`: alpha tuned on `calibration` pairs, r on the evaluated pairs
        (only with `calibration`);
      - `ridge_cv_pearson`: EXTENSION, not the paper's method: out-of-fold ridge on `pair_features` with
        item-wise folds (only with `ridge=True`).

    Args:
        sentences1, sentences2, scores: the evaluated pairs and their mean human scores.
        name: prefix of the metric keys.
        calibration: (sentences1, sentences2, scores) of the pairs that tune alpha, e.g. a training split.
        reliability: the ceiling, a float or a `ReliabilityEstimate`.
        other: "tfidf" (fitted on every sentence this evaluator sees, no scores), a second `encode_fn`, or None.
        metric: "cosine", "dot" or "neg_euclidean" for the zero-parameter predictor (stacking always uses cosine).
        ridge: run the ridge extension; ridge_folds: item-wise folds; alpha_grid: the stacking grid.
        batch_size: sentences per `encode_fn` call (sorted by length to pad less).
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float],
        name: str = "human_similarity",
        *,
        calibration: PairData | None = None,
        reliability: float | ReliabilityEstimate | None = None,
        other: OtherEmbedding | None = "tfidf",
        metric: str = "cosine",
        ridge: bool = False,
        ridge_folds: int = 5,
        alpha_grid: Sequence[float] | None = None,
        batch_size: int = 64,
    ):
        self.pairs = _checked_pairs(sentences1, sentences2, scores)
        self.calibration = None if calibration is None else _checked_pairs(*calibration)
        if metric not in SIMILARITY_METRICS:
            raise ValueError(f"metric must be one of {SIMILARITY_METRICS}, got {metric!r}.")
        if not (other is None or other == "tfidf" or callable(other)):
            raise ValueError(f"other must be 'tfidf', an encode_fn or None, got {other!r}.")
        self.name, self.metric, self.other, self.ridge, self.ridge_folds = name, metric, other, ridge, ridge_folds
        self.reliability_estimate = reliability if isinstance(reliability, ReliabilityEstimate) else None
        self.reliability = reliability.value if isinstance(reliability, ReliabilityEstimate) else reliability
        self.alpha_grid = alpha_grid
        self.batch_size = batch_size

    def __call__(self, encode_fn: EncodeFn) -> dict[str, float]:
        """Encode every distinct sentence once and return the prefixed metrics (see the class docstring)."""
        sentences = self._sentences()
        embeddings = encode_texts(sentences, encode_fn, self.batch_size)
        row = {sentence: i for i, sentence in enumerate(sentences)}
        metrics = self._zero_parameter(embeddings, row)
        other = self._other_embeddings(sentences)
        if other is not None:
            metrics.update(self._stacked(embeddings, other, row))
        if self.ridge:
            metrics["ridge_cv_pearson"] = self._ridge(embeddings, row)
        return {f"{self.name}_{key}": value for key, value in metrics.items()}

    def _sentences(self) -> list[str]:
        pair_sets = [self.pairs] + ([self.calibration] if self.calibration else [])
        return list(dict.fromkeys(s for first, second, _ in pair_sets for s in first + second))

    def _zero_parameter(self, embeddings: np.ndarray, row: dict[str, int]) -> dict[str, float]:
        first, second, human = self.pairs
        predicted = pair_similarity(*_pair_rows(embeddings, row, first, second), metric=self.metric)
        r = pearson(predicted, human)
        metrics = {f"pearson_{self.metric}": r, f"spearman_{self.metric}": _spearman(predicted, human)}
        if self.reliability is not None:
            metrics["reliability"] = float(self.reliability)
            metrics["max_pearson"] = float(np.sqrt(max(self.reliability, 0.0)))
            metrics["pearson_over_reliability"] = r / self.reliability
        return metrics

    def _other_embeddings(self, sentences: list[str]):
        if self.other is None:
            return None
        if self.other == "tfidf":
            return tfidf_embeddings(sentences)
        return encode_texts(sentences, self.other, self.batch_size)

    def _stacked(self, embeddings: np.ndarray, other, row: dict[str, int]) -> dict[str, float]:
        def cosines(pairs: PairData) -> tuple[np.ndarray, np.ndarray]:
            language = pair_similarity(*_pair_rows(embeddings, row, pairs[0], pairs[1]))
            return language, _sparse_aware_cosine(*_pair_rows(other, row, pairs[0], pairs[1]))

        language, other_cosine = cosines(self.pairs)
        metrics = {"other_pearson_cosine": pearson(other_cosine, self.pairs[2])}
        if self.calibration is not None:
            calibration_language, calibration_other = cosines(self.calibration)
            alpha, _ = fit_alpha(calibration_language, [calibration_other], self.calibration[2], self.alpha_grid)
            metrics["stacked_alpha"] = alpha
            metrics["stacked_pearson_cosine"] = pearson(
                stacked_similarity(language, [other_cosine], alpha), self.pairs[2]
            )
        return metrics

    def _ridge(self, embeddings: np.ndarray, row: dict[str, int]) -> float:
        first, second, human = self.pairs
        features = pair_features(*_pair_rows(embeddings, row, first, second))
        folds = item_wise_folds(first, second, self.ridge_folds)
        return pearson(ridge_out_of_fold(features, human, folds), human)

    @classmethod
    def from_sts_benchmark(
        cls,
        path: str | Path,
        *,
        calibration_path: str | Path | None = None,
        reliability_paths: Sequence[str | Path] = (),
        name: str | None = None,
        max_pairs: int | None = None,
        max_calibration_pairs: int | None = None,
        seed: int = 0,
        **kwargs,
    ) -> HumanSimilarityEvaluator:
        """Build from STS-B (sts-*.csv) or SICK (SICK_*.txt) files, read with `STSEvaluator.from_sts_benchmark`.

        The ceiling is `estimate_reliability_from_repeats`, with re-rated pairs found in the rows of `path`,
        `calibration_path` and `reliability_paths` together (whole files) and the spread of the evaluated pairs; it is
        omitted when no pair was rated twice. `max_pairs` / `max_calibration_pairs` keep a random subsample
        (`seed`) of the evaluated / calibration pairs. Other keyword arguments go to the constructor.
        """
        pairs = read_pairs(path)
        calibration = read_pairs(calibration_path) if calibration_path is not None else None
        pooled = [pairs] + ([calibration] if calibration else []) + [read_pairs(p) for p in reliability_paths]
        groups = repeated_pair_groups(*_concatenate(pooled))
        pairs = subsample_pairs(pairs, max_pairs, seed)
        reliability = estimate_reliability_from_repeats(groups, pairs[2], seed=seed) if groups else None
        if calibration is not None:
            calibration = subsample_pairs(calibration, max_calibration_pairs, seed)
        name = name or Path(path).stem
        return cls(*pairs, name=name, calibration=calibration, reliability=reliability, **kwargs)


def read_pairs(path: str | Path) -> PairData:
    """(sentences1, sentences2, scores) of an STS-B or SICK file, parsed by `STSEvaluator.from_sts_benchmark`."""
    reader = STSEvaluator.from_sts_benchmark(path)
    return reader.sentences1, reader.sentences2, reader.scores


def subsample_pairs(pairs: PairData, max_pairs: int | None, seed: int = 0) -> PairData:
    """A uniform random subset of `max_pairs` pairs (order kept; all pairs when None or not fewer)."""
    if max_pairs is None or max_pairs >= len(pairs[2]):
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs[2]), size=max_pairs, replace=False))
    return tuple([column[i] for i in keep] for column in pairs)  # type: ignore[return-value]


def _concatenate(pair_sets: Sequence[PairData]) -> PairData:
    return tuple([value for pair_set in pair_sets for value in pair_set[column]] for column in range(3))  # type: ignore[return-value]


def _checked_pairs(sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float]) -> PairData:
    if not len(sentences1) == len(sentences2) == len(scores):
        raise ValueError(f"Got {len(sentences1)}, {len(sentences2)} and {len(scores)} sentences1/sentences2/scores.")
    if len(set(float(s) for s in scores)) < 2:
        raise ValueError("Need >= 2 pairs with differing human scores for a correlation.")
    return list(sentences1), list(sentences2), [float(s) for s in scores]


def _pair_rows(matrix, row: dict[str, int], first: list[str], second: list[str]):
    return matrix[[row[s] for s in first]], matrix[[row[s] for s in second]]


def _sparse_aware_cosine(a, b) -> np.ndarray:
    if not sparse.issparse(a):
        return pair_similarity(a, b)
    a, b = _normalised_block(a), _normalised_block(b)
    return np.asarray(a.multiply(b).sum(axis=1)).ravel()
