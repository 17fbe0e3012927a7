"""Time series for forecasting and classification: split-aware loaders, a train-only scaler and leak-free windows.

series = load_ett("../shared/data/ett/ETTh1.csv", mode="univariate")      # ForecastSeries, scaler fitted on train
train = series.windows("train", input_length=96, horizon=24)               # torch Dataset of windows
train[0]  # {"past_values": [96, C] float32, "future_values": [24, C_out] float32}, standardised
model.config.scaler = series.scaler.to_dict()                               # the statistics travel with the model

Forecasting (:class:`ForecastSeries`) follows the LTSF / Informer conventions the papers report with:

- ETTh1/ETTh2: train = the first 12 months of hours ``[0, 8640)``, validation ``[8640, 11520)``, test
  ``[11520, 14400)``; the rows after 14,400 are not used. Other CSVs (exchange rate): 70 / 10 / 20 % in time order
  (Informer ``Dataset_Custom``: ``n_train = int(0.7 N)``, ``n_test = int(0.2 N)``, validation in between).
- One :class:`StandardScaler` per channel, fitted on the training rows only, applied to the whole series; metrics
  are computed on that standardised scale.
- Modes: ``"univariate"`` (input and target = the target column), ``"multivariate"`` (input and target = all
  series), ``"multivariate_to_target"`` (all series in, the target column out). ``calendar_covariates=True`` puts
  the 7 calendar features of TS2Vec / AutoTCL (minute, hour, day of week, day of month, day of year, month, week of
  year) in front as input-only channels, standardised with the same train-fitted scaler.
- A window is ``past = s[t : t+T]``, ``future = s[t+T : t+T+H]``. Its future always lies inside its split; training
  windows never read a step at or after the training border. Validation and test windows may read their input from
  up to T steps before their split's border (``context="lookback"``, the Informer protocol: those steps are the
  known past, not future information); ``context="within"`` keeps the whole window inside the split.

Classification (:func:`load_ucr`) reads the sktime ``.ts`` files of the UCR / UEA archives
(``../shared/data/ucr-uea-sktime/<Name>/<Name>_{TRAIN,TEST}.ts``) into ``[N, T, C]`` arrays and integer labels (or
float targets for the extrinsic-regression sets).

Missing values are refused, never imputed: a NaN (or a ``?`` in a ``.ts`` file) raises a ValueError that names the
channel and the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset as TorchDataset

SPLITS = ("train", "validation", "test")
MODES = ("univariate", "multivariate", "multivariate_to_target")
CONTEXTS = ("lookback", "within")
ETT_HOURLY_BORDERS = (12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24)  # 8640, 11520, 14400
LTSF_RATIOS = (0.7, 0.1, 0.2)
CALENDAR_FEATURES = ("minute", "hour", "dayofweek", "day", "dayofyear", "month", "weekofyear")


# ------------------------------------------------------------------------------------------------------ scaler
@dataclass
class StandardScaler:
    """Per-channel ``(x - mean) / scale``, fitted on training rows only; ``to_dict`` / ``from_dict`` save it.

    The serialisable, torch- and numpy-friendly equivalent of scikit-learn's ``StandardScaler`` (population standard
    deviation, ``ddof=0``). A constant training channel (scale 0) is only centred (scale stored as 1).

    mean, scale: [C].
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values) -> StandardScaler:
        """Fit on ``values`` [N, C] (the training rows): ``mean = mean_n x[n]``, ``scale = std_n x[n]``."""
        values = _as_matrix(values, "values")
        scale = values.std(axis=0)
        return cls(mean=values.mean(axis=0), scale=np.where(scale > 0, scale, 1.0))

    def transform(self, values):
        """``(x - mean) / scale`` over the last axis; numpy in, numpy out; a tensor in, a tensor out."""
        mean, scale = self._statistics_like(values)
        return (values - mean) / scale

    def inverse_transform(self, values):
        """``x * scale + mean`` over the last axis (back to the raw units)."""
        mean, scale = self._statistics_like(values)
        return values * scale + mean

    def select(self, channels: Sequence[int]) -> StandardScaler:
        """The scaler of a subset of channels (e.g. the forecast targets), in the given order."""
        channels = list(channels)
        return StandardScaler(mean=self.mean[channels], scale=self.scale[channels])

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [C floats], "scale": [C floats]}``: JSON-safe, for a model config."""
        return {"mean": [float(x) for x in self.mean], "scale": [float(x) for x in self.scale]}

    @classmethod
    def from_dict(cls, statistics: dict) -> StandardScaler:
        """Rebuild from :meth:`to_dict` output; refuses missing keys, unequal lengths and non-positive scales."""
        if not isinstance(statistics, dict) or set(statistics) != {"mean", "scale"}:
            raise ValueError(f"Scaler statistics must be a dict with keys 'mean' and 'scale', got {statistics!r}.")
        mean = np.asarray(statistics["mean"], dtype=np.float64)
        scale = np.asarray(statistics["scale"], dtype=np.float64)
        if mean.ndim != 1 or mean.shape != scale.shape:
            raise ValueError(
                f"Scaler 'mean' and 'scale' must be lists of equal length, got {mean.shape}, {scale.shape}."
            )
        if not np.all(scale > 0):
            raise ValueError(f"Scaler 'scale' must be positive, got {scale.tolist()}.")
        return cls(mean=mean, scale=scale)

    def _statistics_like(self, values):
        if values.shape[-1] != len(self.mean):
            raise ValueError(
                f"The scaler has {len(self.mean)} channels but the values have shape {tuple(values.shape)}."
            )
        if isinstance(values, torch.Tensor):
            return (torch.as_tensor(s, dtype=values.dtype, device=values.device) for s in (self.mean, self.scale))
        return self.mean, self.scale


# ------------------------------------------------------------------------------------------------------ forecasting
@dataclass
class ForecastSeries:
    """One multichannel series cut by time into train / validation / test, with a scaler fitted on train.

    values: [N, C] raw float64 (calendar covariates first when present); channels: the C channel names;
    target_channels: the indices of the forecast targets among the C; borders: ``(train_end, valid_end, test_end)``,
    the splits being ``[0, train_end)``, ``[train_end, valid_end)``, ``[valid_end, test_end)``.
    """

    name: str
    values: np.ndarray
    channels: tuple[str, ...]
    target_channels: tuple[int, ...]
    borders: tuple[int, int, int]
    scaler: StandardScaler
    timestamps: np.ndarray | None = None

    @classmethod
    def from_array(
        cls,
        values,
        borders: Sequence[int],
        channels: Sequence[str] | None = None,
        target_channels: Sequence[int] | None = None,
        name: str = "series",
        timestamps: np.ndarray | None = None,
    ) -> ForecastSeries:
        """Check a [N, C] series (no NaN, ordered non-empty splits), keep rows before ``test_end``, fit the scaler.

        ``target_channels`` defaults to all channels.
        """
        values = _as_matrix(values, name)
        channels = tuple(channels) if channels is not None else tuple(f"channel_{c}" for c in range(values.shape[1]))
        if len(channels) != values.shape[1]:
            raise ValueError(f"{name}: {len(channels)} channel names for {values.shape[1]} channels.")
        train_end, valid_end, test_end = _checked_borders(borders, len(values), name)
        values = values[:test_end]
        check_finite(values, channels, name)
        targets = tuple(range(values.shape[1])) if target_channels is None else tuple(target_channels)
        if not targets or any(not 0 <= c < values.shape[1] for c in targets):
            raise ValueError(f"{name}: target_channels must be indices in [0, {values.shape[1]}), got {targets}.")
        return cls(
            name=name,
            values=values,
            channels=channels,
            target_channels=targets,
            borders=(train_end, valid_end, test_end),
            scaler=StandardScaler.fit(values[:train_end]),
            timestamps=None if timestamps is None else np.asarray(timestamps)[:test_end],
        )

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.channels[c] for c in self.target_channels)

    def scaled(self) -> np.ndarray:
        """The whole series standardised with the train-fitted scaler: [N, C] float32."""
        return self.scaler.transform(self.values).astype(np.float32)

    def split_bounds(self, split: str) -> tuple[int, int]:
        """``(start, end)`` of a split: its steps are ``[start, end)``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        starts = (0, *self.borders[:2])
        index = SPLITS.index(split)
        return starts[index], self.borders[index]

    def window_starts(
        self, split: str, input_length: int, horizon: int, stride: int = 1, context: str = "lookback"
    ) -> np.ndarray:
        """First steps ``t`` of the windows ``past = [t, t+T)``, ``future = [t+T, t+T+H)`` of a split.

        The future lies in ``[start, end)`` of the split; the past starts at ``start - T`` or later for validation
        and test with ``context="lookback"`` (never before step 0), at ``start`` or later otherwise. Raises when the
        split is too short for a single window.
        """
        if input_length < 1 or horizon < 1 or stride < 1:
            raise ValueError(
                f"input_length, horizon and stride must be >= 1, got {input_length}, {horizon}, {stride}."
            )
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}.")
        start, end = self.split_bounds(split)
        first = max(start - input_length, 0) if context == "lookback" and split != "train" else start
        last = end - input_length - horizon  # the last window's future ends exactly at `end`
        if last < first:
            raise ValueError(
                f"{self.name}: the {split} split [{start}, {end}) is too short for one window of input_length "
                f"{input_length} + horizon {horizon} = {input_length + horizon} steps (context={context!r}, "
                f"{end - first} steps available)."
            )
        return np.arange(first, last + 1, stride)

    def windows(
        self, split: str, input_length: int, horizon: int, stride: int = 1, context: str = "lookback"
    ) -> ForecastWindows:
        """The split's standardised windows as a torch Dataset (see :meth:`window_starts` for which ones)."""
        starts = self.window_starts(split, input_length, horizon, stride, context)
        return ForecastWindows(self.scaled(), starts, input_length, horizon, self.target_channels)

    def training_chunks(self, length: int) -> np.ndarray:
        """The standardised training split cut into non-overlapping chunks: [n, length, C] float32.

        ``n = train_end // length``; the tail shorter than ``length`` is dropped (AutoTCL / TS2Vec pre-training).
        """
        train_end = self.borders[0]
        if not 1 <= length <= train_end:
            raise ValueError(
                f"{self.name}: chunk length must be in [1, {train_end}] (the training steps), got {length}."
            )
        count = train_end // length
        return self.scaled()[: count * length].reshape(count, length, -1)


class ForecastWindows(TorchDataset):
    """Windows of a standardised series, built on access: item i is ``{"past_values", "future_values"}``.

    past_values: [T, C] = ``series[t : t+T]``; future_values: [H, C_out] = ``series[t+T : t+T+H, targets]`` with
    ``t = starts[i]``. Both float32 tensors; the trainer's default collator stacks them into [B, T, C] / [B, H, C_out].
    """

    def __init__(
        self, series: np.ndarray, starts: np.ndarray, input_length: int, horizon: int, targets: Sequence[int]
    ) -> None:
        self.series = torch.as_tensor(series, dtype=torch.float32)
        self.starts = np.asarray(starts)
        self.input_length, self.horizon = input_length, horizon
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[index])
        middle, end = start + self.input_length, start + self.input_length + self.horizon
        return {"past_values": self.series[start:middle], "future_values": self.series[middle:end][:, self.targets]}

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All windows stacked: past [n, T, C] and future [n, H, C_out]."""
        items = [self[i] for i in range(len(self))]
        return torch.stack([x["past_values"] for x in items]), torch.stack([x["future_values"] for x in items])


def load_forecast_csv(
    path: str | Path,
    borders: Sequence[int] | None = None,
    mode: str = "univariate",
    target: str = "OT",
    calendar_covariates: bool = False,
    name: str | None = None,
) -> ForecastSeries:
    """Read an LTSF-layout CSV (``date`` column, then numeric series) into a :class:`ForecastSeries`.

    ``borders`` default to the 70 / 10 / 20 % split of the rows. See the module docstring for ``mode`` and
    ``calendar_covariates``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    name = name or Path(path).stem
    table = pd.read_csv(path)
    if "date" not in table.columns:
        raise ValueError(f"{path}: expected a 'date' column first, got columns {list(table.columns)}.")
    series_columns = [c for c in table.columns if c != "date"]
    if target not in series_columns:
        raise ValueError(f"{path}: target column {target!r} is not among {series_columns}.")
    inputs = [target] if mode == "univariate" else series_columns
    outputs = [target] if mode != "multivariate" else series_columns
    timestamps = pd.to_datetime(table["date"]).to_numpy()
    values = table[inputs].to_numpy(dtype=np.float64)
    channels = list(inputs)
    if calendar_covariates:
        values = np.concatenate([calendar_features(timestamps), values], axis=1)
        channels = [*CALENDAR_FEATURES, *channels]
    return ForecastSeries.from_array(
        values,
        borders=ratio_borders(len(table)) if borders is None else borders,
        channels=channels,
        target_channels=[channels.index(c) for c in outputs],
        name=name,
        timestamps=timestamps,
    )


def load_ett(path: str | Path, mode: str = "univariate", target: str = "OT", calendar_covariates: bool = False):
    """ETTh1 / ETTh2 with the standard 12 / 4 / 4-month split (train 8,640 h, validation 2,880, test 2,880)."""
    return load_forecast_csv(path, ETT_HOURLY_BORDERS, mode, target, calendar_covariates)


def load_exchange_rate(
    path: str | Path, mode: str = "univariate", target: str = "OT", calendar_covariates: bool = False
):
    """The exchange-rate CSV (7,588 days x 8 currencies) with the LTSF 70 / 10 / 20 % split."""
    return load_forecast_csv(path, None, mode, target, calendar_covariates)


def ratio_borders(length: int, ratios: Sequence[float] = LTSF_RATIOS) -> tuple[int, int, int]:
    """Informer ``Dataset_Custom`` borders: ``n_train = int(r_train N)``, ``n_test = int(r_test N)``, the rest validates.

    Returns ``(n_train, N - n_test, N)``.
    """
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
        raise ValueError(f"ratios must be three positive fractions summing to 1, got {tuple(ratios)}.")
    n_train, n_test = int(ratios[0] * length), int(ratios[2] * length)
    return n_train, length - n_test, length


def calendar_features(timestamps) -> np.ndarray:
    """TS2Vec's 7 calendar covariates of each timestamp (raw integers; the series scaler standardises them): [N, 7].

    Columns: minute, hour, day of week, day of month, day of year, month, ISO week of year.
    """
    index = pd.DatetimeIndex(timestamps)
    columns = [
        index.minute,
        index.hour,
        index.dayofweek,
        index.day,
        index.dayofyear,
        index.month,
        index.isocalendar().week.to_numpy(),
    ]
    return np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)


# ------------------------------------------------------------------------------------------------------ classification
@dataclass
class TimeSeriesClassificationData:
    """A UCR / UEA train-test pair: series [N, T, C] float64 and labels [N].

    Labels are class indices into ``classes`` (the ``@classLabel`` order of the header) or float targets
    (``@targetLabel`` sets, ``classes`` empty).
    """

    name: str
    train_values: np.ndarray
    train_labels: np.ndarray
    test_values: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def load_ucr(name: str, root: str | Path) -> TimeSeriesClassificationData:
    """Read ``root/<name>/<name>_TRAIN.ts`` and ``_TEST.ts`` (sktime format); both must share length and channels.

    Variable-length sets (JapaneseVowels, PLAID) are refused: this loader does no padding or resampling.
    """
    folder = Path(root) / name
    train_values, train_labels, classes = read_ts_file(folder / f"{name}_TRAIN.ts")
    test_values, test_labels, test_classes = read_ts_file(folder / f"{name}_TEST.ts")
    if test_classes != classes or train_values.shape[1:] != test_values.shape[1:]:
        raise ValueError(
            f"{name}: train and test disagree: classes {classes} vs {test_classes}, [T, C] "
            f"{train_values.shape[1:]} vs {test_values.shape[1:]}."
        )
    return TimeSeriesClassificationData(name, train_values, train_labels, test_values, test_labels, classes)


def read_ts_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One sktime ``.ts`` file: ``(values [N, T, C] float64, labels [N], classes)``.

    Each data line is ``ch_1 : ch_2 : ... : label`` with comma-separated values per channel. Class labels become
    indices into the header's ``@classLabel`` list; with ``@targetLabel`` they are floats and ``classes`` is empty.
    """
    classes, is_regression, cases, labels = (), False, [], []
    with open(path) as handle:
        lines = [line.strip() for line in handle]
    data_start = next((i for i, line in enumerate(lines) if line.lower() == "@data"), None)
    if data_start is None:
        raise ValueError(f"{path}: no '@data' line; not an sktime .ts file.")
    for line in lines[:data_start]:
        key, *rest = line.split() or [""]
        if key.lower() == "@classlabel" and rest and rest[0] == "true":
            classes = tuple(rest[1:])
        elif key.lower() == "@targetlabel" and rest and rest[0] == "true":
            is_regression = True
    if not classes and not is_regression:
        raise ValueError(f"{path}: the header declares neither '@classLabel true ...' nor '@targetLabel true'.")
    for row, line in enumerate(lines[data_start + 1 :], start=data_start + 2):
        if not line:
            continue
        *channel_texts, label = line.split(":")
        cases.append(_parse_case(channel_texts, path, row))
        labels.append(float(label) if is_regression else _class_index(label, classes, path, row))
    shapes = sorted({case.shape for case in cases})
    if len(shapes) != 1:
        raise ValueError(
            f"{path}: cases differ in [T, C] (from {shapes[0]} to {shapes[-1]}); variable-length sets are not supported."
        )
    return np.stack(cases), np.asarray(labels), classes


def _parse_case(channel_texts: list[str], path, row: int) -> np.ndarray:
    """``"1,2,3"`` per channel -> [T, C]; '?' (missing) and unequal channel lengths raise with the line number."""
    channels = [text.split(",") for text in channel_texts]
    if not channels or len({len(c) for c in channels}) != 1:
        raise ValueError(f"{path}, line {row}: channels of unequal length {[len(c) for c in channels]}.")
    if any(value == "?" or value.lower() == "nan" for channel in channels for value in channel):
        raise ValueError(f"{path}, line {row}: missing value ('?' or NaN); missing values are not imputed.")
    return np.asarray(channels, dtype=np.float64).T


def _class_index(label: str, classes: tuple[str, ...], path, row: int) -> int:
    if label not in classes:
        raise ValueError(f"{path}, line {row}: label {label!r} is not among the declared classes {classes}.")
    return classes.index(label)


# ------------------------------------------------------------------------------------------------------ checks
def check_finite(values: np.ndarray, channels: Sequence[str], name: str) -> None:
    """Raise, naming the channel and row, on the first NaN or infinite value of a [N, C] series."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: channel {channels[column]!r} has a missing or infinite value at row {row} "
            f"({int(bad.sum())} in all); fill or drop them before loading, none are imputed here."
        )


def _as_matrix(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"{name}: expected a non-empty [N, C] series, got shape {values.shape}.")
    return values


def _checked_borders(borders: Sequence[int], length: int, name: str) -> tuple[int, int, int]:
    if len(borders) != 3:
        raise ValueError(f"{name}: borders must be (train_end, valid_end, test_end), got {tuple(borders)}.")
    train_end, valid_end, test_end = (int(b) for b in borders)
    if not 0 < train_end < valid_end < test_end:
        raise ValueError(f"{name}: borders must satisfy 0 < train_end < valid_end < test_end, got {tuple(borders)}.")
    if test_end > length:
        raise ValueError(f"{name}: the series has {length} steps, shorter than test_end = {test_end}.")
    return train_end, valid_end, test_end
