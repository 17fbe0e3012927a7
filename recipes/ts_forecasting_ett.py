"""Contrastive forecasting Transformer (MSE + MoCo, lambda 0.5) vs the same Transformer with MSE only on ETTh1.

Run from the repository root (about 6 minutes on 2 shared CPU cores)::

    python recipes/ts_forecasting_ett.py                                   # writes model_cards/ts-forecasting-ett.md
    python recipes/ts_forecasting_ett.py --small --output-dir /tmp/smoke    # smoke run (< 30 s), no card

Data: ``../shared/data/ett/ETTh1.csv``, multivariate (7 channels in and out, the paper's "M" setting), Informer's
split (train = the first 8,640 hours, validation the next 2,880, test the next 2,880; validation and test windows
start ``seq_len`` steps before their border), standardised with statistics of the training split
(:func:`hf_contrastive.data.timeseries.load_ett`). Windows ``(seq_len, pred_len)`` = (48, 24) and (96, 48), the
paper's first two ETTh1 settings (the default run does H = 24 only; add ``--horizons 24 48`` for both, about
twice the time).

Both methods train the same :class:`~hf_contrastive.models.ts_forecaster.TSForecaster` (the paper's sizes: 5
post-norm layers of width 128, 8 heads, feed-forward 64, representation 320, dropout 0.05; full attention instead
of ProbSparse) with :class:`~hf_contrastive.trainers.ts_forecasting.TSForecastingTrainer` (Adam lr 1e-3, batch 16,
Informer's "type1" halving), the same seeds and the same number of epochs, with the checkpoint of the best
validation MSE kept; only ``contrastive_weight`` differs (0.5 with K = 512, m = 0.999, T = 1, random time step, no
augmentation: the paper's recommended setting; 0 = MSE only). CPU budget: 3 epochs instead of the paper's up to 20
with patience 5, every 4th training and validation window (``--stride 4``; about 2,150 training windows), and 2
seeds instead of ``itr = 3``. Test MSE / MAE over all test windows, steps and channels on the standardised scale, as
the paper reports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.timeseries import ForecastSeries, load_ett  # noqa: E402
from hf_contrastive.hub.card import markdown_table, write_run_report  # noqa: E402
from hf_contrastive.models.ts_forecaster import TSForecaster, TSForecasterConfig  # noqa: E402
from hf_contrastive.trainers.ts_forecasting import TSForecastingConfig, TSForecastingTrainer  # noqa: E402

ETTH1 = "../shared/data/ett/ETTh1.csv"
CARD = "model_cards/ts-forecasting-ett.md"
SEQ_LEN = {24: 48, 48: 96, 168: 168, 336: 336, 720: 720}  # the reference's ETTh1 (seq_len, pred_len) pairs
INFORMER_REFERENCE = {24: (0.577, 0.549), 48: (0.685, 0.625), 168: (0.931, 0.752)}  # Informer paper, MSE / MAE
METHODS = {"MSE + MoCo (lambda 0.5)": 0.5, "MSE only": 0.0}
MODEL_SIZES = {"hidden_size": 128, "representation_dim": 320, "ffn_dim": 64, "num_layers": 5, "num_heads": 8}
SMALL = {
    "horizons": [24],
    "epochs": 1,
    "seeds": [0],
    "stride": 40,
    "test_stride": 40,
    "model_sizes": {**MODEL_SIZES, "num_layers": 1, "representation_dim": 32},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ETTH1)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/ts-forecasting-ett"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--horizons", type=int, nargs="+", default=[24], choices=sorted(SEQ_LEN))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--stride", type=int, default=4, help="Step between training and validation window starts (1 = all)."
    )
    parser.add_argument("--test-stride", type=int, default=1, help="Step between test window starts (1 = all).")
    parser.add_argument("--small", action="store_true", help="Smoke run: one small model, few windows, no card.")
    args = parser.parse_args(argv)
    args.model_sizes = MODEL_SIZES
    if args.small:
        vars(args).update(SMALL)
    return args


def train_and_test(args, series: ForecastSeries, horizon: int, weight: float, seed: int, output_dir: Path) -> dict:
    """Train one method with validation each epoch (best checkpoint kept) and return its test MSE / MAE."""
    seq_len = SEQ_LEN[horizon]
    windows = {split: series.windows(split, seq_len, horizon, stride=args.stride) for split in ("train", "validation")}
    torch.manual_seed(seed)
    model = TSForecaster(
        TSForecasterConfig(
            enc_in=len(series.channels),
            target_channels=list(series.target_channels),
            seq_len=seq_len,
            pred_len=horizon,
            contrastive_weight=weight,
            scaler=series.scaler.to_dict(),
            **args.model_sizes,
        )
    )
    config = TSForecastingConfig(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.learning_rate,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        logging_steps=100,
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = TSForecastingTrainer(model, config, train_dataset=windows["train"], eval_dataset=windows["validation"])
    trainer.train()
    test_windows = series.windows("test", seq_len, horizon, stride=args.test_stride)
    test = trainer.evaluate(test_windows, metric_key_prefix="test")
    trainer.save_model(str(output_dir / "model"))  # config with the scaler, weights with the queue
    return {"mse": test["test_mse"], "mae": test["test_mae"]}


def report(args, means: dict, spread: dict) -> str:
    rows = []
    for horizon in args.horizons:
        for method in METHODS:
            mean, std = means[method][horizon], spread[method][horizon]
            rows.append(
                (
                    method,
                    f"{SEQ_LEN[horizon]} -> {horizon}",
                    f"{mean['mse']:.4f} ± {std['mse']:.4f}",
                    f"{mean['mae']:.4f} ± {std['mae']:.4f}",
                )
            )
    differences = "; ".join(
        f"H={h}: MSE {means[first][h]['mse'] - means[second][h]['mse']:+.4f}, MAE "
        f"{means[first][h]['mae'] - means[second][h]['mae']:+.4f}"
        for h in args.horizons
        for first, second in [tuple(METHODS)]
    )
    reference = ", ".join(f"H={h} {INFORMER_REFERENCE[h][0]} / {INFORMER_REFERENCE[h][1]}" for h in args.horizons)
    sizes = args.model_sizes
    return "\n".join(
        [
            "# Contrastive forecasting Transformer vs MSE only on ETTh1 (multivariate)",
            "",
            f"Command: `python recipes/ts_forecasting_ett.py` (epochs {args.epochs}, batch {args.batch_size}, Adam lr "
            f"{args.learning_rate} with type1 halving, seeds {args.seeds}, training / validation window stride "
            f"{args.stride}, test window stride {args.test_stride}); about 6 minutes (measured) on 2 shared CPU cores.",
            "Data: ETTh1 (`../shared/data/ett/ETTh1.csv`), 7 channels in and out, Informer's split (8,640 / 2,880 / "
            "2,880 hours), standardised with training statistics; test MSE / MAE over all test windows, steps and "
            "channels on the standardised scale. Model (arXiv:2306.12086, reference `informer-moco`): "
            f"{sizes['num_layers']} post-norm Transformer layers of width {sizes['hidden_size']} "
            f"({sizes['num_heads']} heads, feed-forward {sizes['ffn_dim']}, full attention instead of ProbSparse), "
            f"representation {sizes['representation_dim']}, per-step MLP head on the last pred_len positions. "
            "*MSE + MoCo*: (1 - 0.5) MSE + 0.5 MoCo InfoNCE (queue 512, momentum 0.999, temperature 1, L2-normalised, "
            "one random time step per batch, the same window as positive); *MSE only*: the same model and seeds with "
            "weight 0. Best validation-MSE epoch kept. Mean ± standard deviation over seeds.",
            "",
            markdown_table(("method", "seq_len -> horizon", "test MSE", "test MAE"), rows),
            "",
            f"MSE + MoCo minus MSE only: {differences}. Lower test MSE here: {verdict(means, args.horizons)}. "
            "The paper's acceptance test is MSE + MoCo <= MSE only; this CPU budget trains for "
            f"{args.epochs} epoch(s) instead of the paper's up to 20 (patience 5), so neither method is converged "
            "and the comparison says nothing about the converged models.",
            f"For scale, Informer's published multivariate ETTh1 results (MSE / MAE): {reference}.",
            "",
        ]
    )


def verdict(means: dict, horizons: list[int]) -> str:
    """Which method has the lower mean test MSE at each horizon (the one-line answer of the comparison)."""
    contrastive, baseline = METHODS
    return ", ".join(
        f"H={h} {min((contrastive, baseline), key=lambda method: means[method][h]['mse'])}" for h in horizons
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    series = load_ett(args.data, mode="multivariate")
    means, spread = {}, {}
    for method, weight in METHODS.items():
        means[method], spread[method] = {}, {}
        for horizon in args.horizons:
            runs = [
                train_and_test(
                    args, series, horizon, weight, seed, args.output_dir / f"{'moco' if weight else 'mse'}-h{horizon}"
                )
                for seed in args.seeds
            ]
            means[method][horizon] = {k: statistics.fmean(r[k] for r in runs) for k in ("mse", "mae")}
            spread[method][horizon] = {k: statistics.pstdev([r[k] for r in runs]) for k in ("mse", "mae")}
            print(method, horizon, means[method][horizon], flush=True)
    text = report(args, means, spread)
    write_run_report(args.output_dir, {"mean": means, "std": spread}, text, None if args.small else args.card)
    return means


if __name__ == "__main__":
    main()
