"""Score time-series models: forecast MSE / MAE, the TS2Vec ridge protocol on frozen representations, UCR heads.

errors = forecast_errors(predicted, future_values)          # {"mse", "mae"} on the standardised scale
representations = causal_representations(encode_last_step, series.scaled(), padding=200)   # [N, D]
ridge_forecast_evaluation(representations, series.scaled()[:, series.target_channels], series.borders, (24, 48))
# {"h24_mse": 0.04, "h24_mae": 0.15, "h24_alpha": 1.0, ..., "avg_mse": ..., "avg_mae": ...}
classification_probe(train_X, train_y, test_X, test_y, head="svm")   # {"accuracy", "macro_f1"}

The protocols are those of TS2Vec (``tasks/forecasting.py``, ``tasks/_eval_protocols.py``) that AutoTCL and CoST
report with:

- Forecasting: the representation at step t sees only steps ``<= t`` (a causal sliding window of ``padding + 1``
  steps). For each horizon H, Ridge maps the representation at t to the H next values of the target channels
  (``t+1 .. t+H``, flattened), with ``alpha`` chosen from :data:`RIDGE_ALPHAS` by validation ``RMSE + MAE``. The
  samples of each split have their targets inside that split; the first ``padding`` training samples are dropped
  (their windows are padded), and at most 100,000 training samples are used. MSE and MAE are on the standardised
  scale (as the LTSF papers report), and ``avg_*`` is the mean over horizons.
- Classification: an instance-level representation per series, then an RBF SVM with ``C`` chosen by 5-fold
  cross-validation from :data:`SVM_CS` (``C = inf`` directly when there are fewer than 50 training series or fewer
  than 5 per class), or a standardised logistic regression (``head="linear"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .classification import compute_classification_metrics
from .sts import as_float64

RIDGE_ALPHAS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
SVM_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000, 1e4, np.inf)
HEADS = ("svm", "linear")


def forecast_errors(predicted, target) -> dict[str, float]:
    """Mean squared and mean absolute error over every window, step and channel: ``{"mse", "mae"}``.

    .. math:: \\mathrm{MSE} = \\frac{1}{n} \\sum (\\hat y - y)^2, \\qquad \\mathrm{MAE} = \\frac{1}{n} \\sum
        |\\hat y - y|

    predicted, target: the same shape, e.g. [n, H, C_out] (tensors or arrays), on the standardised scale.
    """
    predicted, target = as_float64(predicted), as_float64(target)
    if predicted.shape != target.shape or predicted.size == 0:
        raise ValueError(
            f"predicted and target must be non-empty and of equal shape, got {predicted.shape}, {target.shape}."
        )
    error = predicted - target
    return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}


def causal_representations(
    encode: Callable[[torch.Tensor], torch.Tensor], series, padding: int = 200, batch_size: int = 256
) -> np.ndarray:
    """The representation of every step t from the window ``series[t - padding : t + 1]``: [N, D] float64.

    ``encode`` maps windows [B, padding + 1, C] to the representation of their last step [B, D] (e.g.
    ``lambda x: model.encode(x)[:, -1]``); it runs under ``torch.no_grad``. Steps before 0 are zero-padded (the
    standardised mean); the protocol drops those first ``padding`` training samples. No future step enters
    representation t.

    series: [N, C] standardised.
    """
    values = torch.as_tensor(as_float64(series), dtype=torch.float32)
    if values.ndim != 2 or padding < 0 or batch_size < 1:
        raise ValueError(
            f"Expected a [N, C] series, padding >= 0, batch_size >= 1; got {tuple(values.shape)}, {padding}, {batch_size}."
        )
    padded = torch.cat([values.new_zeros(padding, values.shape[1]), values])
    windows = padded.unfold(0, padding + 1, 1).transpose(1, 2)  # [N, padding + 1, C], a view
    chunks = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size].contiguous()
            chunk = as_float64(encode(batch))
            if chunk.ndim != 2 or len(chunk) != len(batch):
                raise ValueError(f"encode returned shape {chunk.shape} for {len(batch)} windows; expected [B, D].")
            chunks.append(chunk)
    return np.concatenate(chunks)


def prediction_samples(representations, targets, horizon: int, drop: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge samples of one split: features ``r_t`` [m, D] and labels ``y_{t+1..t+H}`` flattened [m, H * C_out].

    ``t`` runs over ``drop .. n - H - 1`` so every label step lies in the split (``m = n - H - drop``).

    representations: [n, D]; targets: [n, C_out] (the split's standardised target channels).
    """
    representations, targets = as_float64(representations), as_float64(targets)
    if targets.ndim == 1:
        targets = targets[:, None]
    if representations.ndim != 2 or len(representations) != len(targets):
        raise ValueError(
            f"Expected [n, D] representations for [n, C_out] targets, got {representations.shape}, {targets.shape}."
        )
    count = len(targets) - horizon - drop
    if horizon < 1 or count < 1:
        raise ValueError(f"A split of {len(targets)} steps has no sample for horizon {horizon} after dropping {drop}.")
    steps = np.arange(drop, drop + count)
    labels = np.stack([targets[steps + 1 + h] for h in range(horizon)], axis=1)  # [m, H, C_out]
    return representations[steps], labels.reshape(count, -1)


def fit_ridge_head(
    train_X,
    train_Y,
    valid_X,
    valid_Y,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    max_samples: int = 100_000,
    seed: int = 0,
) -> tuple[Ridge, float]:
    """Ridge regression with ``alpha`` picked by the lowest validation ``RMSE + MAE``; returns ``(head, alpha)``.

    The head is refitted on the (at most ``max_samples``, drawn with ``seed``) training samples with that alpha.
    train_X: [n, D]; train_Y: [n, K]; valid_X: [m, D]; valid_Y: [m, K].
    """
    rng = np.random.default_rng(seed)
    train_Y, valid_Y = (as_float64(Y).reshape(len(Y), -1) for Y in (train_Y, valid_Y))
    train_X, train_Y = _subsample(rng, max_samples, as_float64(train_X), train_Y)
    valid_X, valid_Y = _subsample(rng, max_samples, as_float64(valid_X), valid_Y)
    if not alphas:
        raise ValueError("alphas must name at least one Ridge strength.")
    scores = []
    for alpha in alphas:
        error = ridge_predict(Ridge(alpha=alpha).fit(train_X, train_Y), valid_X, valid_Y.shape[1]) - valid_Y
        scores.append(np.sqrt(np.mean(error**2)) + np.mean(np.abs(error)))
    best = float(alphas[int(np.argmin(scores))])
    return Ridge(alpha=best).fit(train_X, train_Y), best


def ridge_predict(head: Ridge, features: np.ndarray, outputs: int) -> np.ndarray:
    """``head.predict`` as [n, outputs] (scikit-learn drops the axis of a single-output fit)."""
    return np.asarray(head.predict(features)).reshape(len(features), outputs)


def ridge_forecast_evaluation(
    representations,
    targets,
    borders: Sequence[int],
    horizons: Sequence[int],
    padding: int = 200,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    max_samples: int = 100_000,
) -> dict[str, float]:
    """The TS2Vec / AutoTCL forecasting protocol: one ridge head per horizon on frozen causal representations.

    Returns ``{f"h{H}_mse", f"h{H}_mae", f"h{H}_alpha"}`` per horizon plus ``avg_mse`` and ``avg_mae`` (means over
    horizons), test errors on the standardised scale.

    representations: [N, D] with row t depending only on steps <= t (see :func:`causal_representations`);
    targets: [N, C_out] standardised target channels; borders: ``(train_end, valid_end, test_end)``.
    """
    representations, targets = as_float64(representations), as_float64(targets)
    train_end, valid_end, test_end = borders
    if len(representations) < test_end or len(targets) < test_end:
        raise ValueError(
            f"Need >= test_end = {test_end} representations and targets, got {len(representations)}, {len(targets)}."
        )
    splits = {"train": slice(0, train_end), "valid": slice(train_end, valid_end), "test": slice(valid_end, test_end)}
    metrics = {}
    for horizon in horizons:
        samples = {
            name: prediction_samples(representations[part], targets[part], horizon, padding if name == "train" else 0)
            for name, part in splits.items()
        }
        head, alpha = fit_ridge_head(*samples["train"], *samples["valid"], alphas=alphas, max_samples=max_samples)
        test_X, test_Y = samples["test"]
        errors = forecast_errors(ridge_predict(head, test_X, test_Y.shape[1]), test_Y)
        metrics.update(
            {f"h{horizon}_mse": errors["mse"], f"h{horizon}_mae": errors["mae"], f"h{horizon}_alpha": alpha}
        )
    metrics["avg_mse"] = float(np.mean([metrics[f"h{h}_mse"] for h in horizons]))
    metrics["avg_mae"] = float(np.mean([metrics[f"h{h}_mae"] for h in horizons]))
    return metrics


def classification_probe(train_X, train_y, test_X, test_y, head: str = "svm", seed: int = 0) -> dict[str, float]:
    """Classify instance representations with TS2Vec's SVM or linear head: ``{"accuracy", "macro_f1"}`` on test.

    ``head="svm"``: RBF SVC (``gamma="scale"``), ``C`` from :data:`SVM_CS` by 5-fold grid search, or ``C = inf``
    when the training set is too small for it (< 50 series or < 5 per class). ``head="linear"``: standardised
    multinomial logistic regression. train_X: [N, D]; train_y: [N]; test_X: [M, D]; test_y: [M].
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
    train_X, test_X = as_float64(train_X), as_float64(test_X)
    train_y, test_y = np.asarray(train_y).reshape(-1), np.asarray(test_y).reshape(-1)
    if train_X.ndim != 2 or test_X.ndim != 2 or len(train_X) != len(train_y) or len(test_X) != len(test_y):
        raise ValueError(
            f"Expected [N, D] / [M, D] features with N and M labels, got {train_X.shape}, {len(train_y)} labels, "
            f"{test_X.shape}, {len(test_y)} labels."
        )
    if head == "linear":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, random_state=seed))
    else:
        model = _svm(train_y)
    return compute_classification_metrics(model.fit(train_X, train_y).predict(test_X), test_y)


def _svm(train_y: np.ndarray):
    """TS2Vec ``fit_svm``: a plain ``C = inf`` SVC for tiny training sets, else a 5-fold grid search over C."""
    _, counts = np.unique(train_y, return_counts=True)
    if len(train_y) < 50 or len(train_y) // len(counts) < 5 or counts.min() < 5:
        return SVC(C=np.inf, gamma="scale")
    return GridSearchCV(SVC(gamma="scale"), {"C": list(SVM_CS)}, cv=5, n_jobs=1)


def _subsample(rng: np.random.Generator, limit: int, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(X) <= limit:
        return X, Y
    keep = np.sort(rng.choice(len(X), size=limit, replace=False))
    return X[keep], Y[keep]
