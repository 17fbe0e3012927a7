"""SupReMix vs supervised contrastive regression on UCI abalone (rings), scored by frozen-embedding probes.

Run from the repository root (a few minutes on 2 CPU cores)::

    python recipes/supremix_abalone.py                                   # writes model_cards/supremix-abalone.md
    python recipes/supremix_abalone.py --small --output-dir /tmp/smoke    # smoke run (< 30 s), no card

What it does, for every seed and objective at the same budget (steps, batch, learning rate, views):

1. Reads ``../shared/data/abalone`` (:func:`hf_contrastive.data.tabular.load_abalone`: one-hot sex + 7
   measurements, target rings), splits it 80/20 (seeded once) and standardises the features on the train split.
2. Trains an MLP encoder (:class:`~hf_contrastive.models.multimodal_encoder.MultiModalEncoder`, the two views share
   the ``x`` encoder) with :class:`~hf_contrastive.trainers.multimodal.MultiModalTrainer` on two views per row
   (Gaussian noise + feature masking, :mod:`hf_contrastive.data.tabular`) and the rings as ``labels``:
   ``supcon_regression`` (SupCon with exact-ring positives, no weights), ``supcon_regression`` with the
   ``L1_inv`` distance weights, and ``supremix`` (the same weights + Mix-neg / Mix-pos).
3. Freezes the encoder and fits a Ridge probe and a k-NN regressor on the train embeddings
   (:class:`~hf_contrastive.evaluation.probes.ProbeEvaluator`); reports test R2 and MAE (rings), mean +- std over the
   seeds, next to the same probes on the raw features and on the untrained encoder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.multimodal import MultiModalCollator, stack_vectors  # noqa: E402
from hf_contrastive.data.tabular import Compose, FeatureMask, GaussianNoise, load_abalone, standardize  # noqa: E402
from hf_contrastive.evaluation.probes import ProbeEvaluator, knn_probe, linear_probe  # noqa: E402
from hf_contrastive.hub.card import metrics_table, write_run_report  # noqa: E402
from hf_contrastive.models.multimodal_encoder import MultiModalEncoder, MultiModalEncoderConfig  # noqa: E402
from hf_contrastive.objectives.supcon_regression import SupConRegressionLoss  # noqa: E402
from hf_contrastive.objectives.supremix import SupReMixLoss  # noqa: E402
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer  # noqa: E402

ABALONE = "../shared/data/abalone/abalone.data"
CARD = "model_cards/supremix-abalone.md"
SMALL = {"steps": 3, "batch_size": 16, "seeds": [0], "train_rows": 200, "test_rows": 100}
COLUMNS = ("linear_r2", "linear_mae", "knn_r2", "knn_mae")


def objectives(args) -> dict:
    """The compared objectives, built fresh per run (same temperature everywhere)."""
    return {
        "SupCon regression": lambda: SupConRegressionLoss(temperature=args.temperature),
        "SupCon regression + L1_inv weights": lambda: SupConRegressionLoss(
            temperature=args.temperature, distance="L1_inv"
        ),
        "SupReMix": lambda: SupReMixLoss(temperature=args.temperature, window=args.window),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ABALONE)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/supremix-abalone"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--window", type=float, default=3.0, help="Mix-pos window in rings.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-rows", type=int, default=None, help="Default: 80% of the rows.")
    parser.add_argument("--test-rows", type=int, default=None, help="Default: the other 20%.")
    parser.add_argument("--small", action="store_true", help="Smoke run: a few rows and steps, no card.")
    args = parser.parse_args(argv)
    if args.small:
        vars(args).update(SMALL)
    return args


def load_splits(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised train / test features and rings (one seeded 80/20 split shared by every run)."""
    rows = load_abalone(args.data)
    features, rings = np.asarray(rows["x"], dtype=np.float64), np.asarray(rows["label"], dtype=np.float64)
    order = np.random.default_rng(1234).permutation(len(rings))
    cut = int(0.8 * len(rings))
    train, test = order[: args.train_rows or cut], order[cut:][: args.test_rows]
    train_x, test_x = standardize(features[train], features[test])
    return train_x, rings[train], test_x, rings[test]


def train_and_probe(args, make_objective, seed: int, splits) -> dict[str, float]:
    """Train one encoder with ``make_objective()`` and return its probe metrics on the test split."""
    from datasets import Dataset

    train_x, train_y, test_x, test_y = splits
    torch.manual_seed(seed)
    encoder_config = MultiModalEncoderConfig(
        modality_dims={"x": train_x.shape[1]}, hidden_dims=[64, 64], embedding_dim=32
    )
    model = MultiModalEncoder(encoder_config)  # the views x_view_k are embedded by the encoder of x
    views = {
        f"x_view_{v}": ("x", Compose([GaussianNoise(0.1, seed=10 * seed + v), FeatureMask(0.1, seed=10 * seed + v)]))
        for v in (1, 2)
    }
    config = MultiModalConfig(
        output_dir=str(args.output_dir / f"seed{seed}"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        warmup_steps=0,
        logging_steps=max(args.steps // 5, 1),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_dict({"x": train_x.tolist(), "label": train_y.tolist()})
    trainer = MultiModalTrainer(
        model,
        config,
        train_dataset=dataset,
        objective=make_objective(),
        data_collator=MultiModalCollator({"x": stack_vectors}, views=views, label_column="label"),
    )
    if args.steps:
        trainer.train()
    probe = ProbeEvaluator(train_x.tolist(), train_y, test_x.tolist(), test_y, column="x", task="regression")
    return {key.removeprefix("probe_"): value for key, value in probe(trainer.embed_values).items()}


def summarise(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and (population) standard deviation of every metric over the seeds."""
    keys = runs[0].keys()
    return (
        {k: statistics.fmean(r[k] for r in runs) for k in keys},
        {k: statistics.pstdev([r[k] for r in runs]) for k in keys},
    )


def report(args, results: dict[str, dict[str, float]], spread: dict[str, dict[str, float]], rows: tuple) -> str:
    lines = [
        "# SupReMix vs supervised contrastive regression on abalone (rings)",
        "",
        f"Command: `python recipes/supremix_abalone.py` (steps {args.steps}, batch {args.batch_size}, lr "
        f"{args.learning_rate}, tau {args.temperature}, Mix-pos window {args.window} rings, seeds {args.seeds}).",
        f"Data: UCI abalone ({rows[0]} train / {rows[1]} test rows, one seeded 80/20 split), features standardised "
        "on train. Encoder: MLP 10 -> 64 -> 64 -> 32 (GELU, LayerNorm), two views per row (Gaussian noise 0.1 + 10% "
        "feature masking).",
        "Probes on the frozen encoder's test embeddings: Ridge (alpha 1, standardised embeddings) and 10-NN "
        "regression; MAE in rings. Mean over seeds (std in the second table).",
        "",
        metrics_table(results, COLUMNS, row_header="representation"),
        "",
        "Standard deviation over seeds:",
        "",
        metrics_table(spread, COLUMNS, row_header="representation"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args)
    train_x, train_y, test_x, test_y = splits
    results = {
        "raw features": {
            **{f"linear_{k}": v for k, v in linear_probe(train_x, train_y, test_x, test_y, "regression").items()},
            **{f"knn_{k}": v for k, v in knn_probe(train_x, train_y, test_x, test_y, task="regression").items()},
        }
    }
    spread = {"raw features": dict.fromkeys(COLUMNS, 0.0)}
    no_training = argparse.Namespace(**{**vars(args), "steps": 0})
    untrained = [train_and_probe(no_training, objectives(args)["SupReMix"], seed, splits) for seed in args.seeds]
    results["untrained encoder"], spread["untrained encoder"] = summarise(untrained)
    for name, make_objective in objectives(args).items():
        runs = [train_and_probe(args, make_objective, seed, splits) for seed in args.seeds]
        results[name], spread[name] = summarise(runs)
        print(name, {k: round(v, 4) for k, v in results[name].items() if k in COLUMNS})
    text = report(args, results, spread, (len(train_y), len(test_y)))
    write_run_report(args.output_dir, {"mean": results, "std": spread}, text, None if args.small else args.card)
    return results


if __name__ == "__main__":
    main()
