"""CACR and Hydra vs InfoNCE on scikit-learn digits (64-d vectors): linear / k-NN probes, geometry, effective rank.

Run from the repository root (a few minutes on 2 CPU cores)::

    python recipes/cacr_hydra_digits.py                                   # writes model_cards/cacr-hydra-digits.md
    python recipes/cacr_hydra_digits.py --small --output-dir /tmp/cacr     # smoke run (< 30 s)

What it does:

1. Loads the 1,797 digits of ``../shared/data/sklearn-bundled/digits.csv.gz`` as 64-d vectors in [0, 1]
   (:func:`hf_contrastive.data.tabular.load_digits_vectors`) and splits them 80/20 (seeded, stratified by nothing:
   ``Dataset.train_test_split``).
2. Makes two views of every row in the collator (four for "cacr, 4 views", the paper's multi-view setting): SCARF
   corruption from the training marginals (rate 0.4) then Gaussian noise (std 0.05), each view its own seeded
   stream (:mod:`hf_contrastive.data.tabular`).
3. Trains the same :class:`hf_contrastive.models.view_encoder.ViewEncoder` (MLP 64-128-64 + head to 32) with the
   :class:`hf_contrastive.trainers.multimodal.MultiModalTrainer` and each objective, at the same budget (epochs,
   batch, learning rate) and the same seeds: InfoNCE (symmetric, cross-view, fixed temperature: the SimCLR-style
   baseline), CACR (euclidean, paper's CIFAR-10 t+ = 1, t- = 0.9), CACR with 4 views, Hydra with ``identical`` pairs
   (a SupCon variant) and with ``arbitrary`` pairs (the paper's setting). Hydra uses the labels, as in the paper.
4. Scores the frozen *backbone* representation (the head is discarded) with
   :class:`hf_contrastive.evaluation.probes.ProbeEvaluator`: logistic-regression and cosine k-NN (k = 10) accuracy
   on the test rows, alignment of test rows with a view of themselves, uniformity and effective rank.

Writes ``results.json`` and ``report.md`` to ``--output-dir`` and the report to ``--card`` (unless ``--small``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.multimodal import MultiModalCollator, stack_vectors  # noqa: E402
from hf_contrastive.data.tabular import Compose, GaussianNoise, ScarfCorruption, load_digits_vectors  # noqa: E402
from hf_contrastive.evaluation.probes import ProbeEvaluator  # noqa: E402
from hf_contrastive.hub.card import metrics_table  # noqa: E402
from hf_contrastive.models.view_encoder import ViewEncoder, ViewEncoderConfig  # noqa: E402
from hf_contrastive.objectives.cacr import CACRLoss  # noqa: E402
from hf_contrastive.objectives.clip import CLIPLoss  # noqa: E402
from hf_contrastive.objectives.hydra import HydraLoss  # noqa: E402
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer  # noqa: E402

DIGITS = "../shared/data/sklearn-bundled/digits.csv.gz"
TEMPERATURE = 0.1
METRICS = ("linear_accuracy", "knn_accuracy", "alignment", "uniformity", "effective_rank")


def view_names(count: int) -> tuple[str, ...]:
    return tuple(f"x_view_{k}" for k in range(1, count + 1))


def objectives(embedding_dim: int) -> dict[str, tuple[int, object]]:
    """name -> (number of views, objective factory)."""
    hydra = {"num_classes": 10, "embedding_dim": embedding_dim, "temperature": TEMPERATURE}
    hydra.update(label_embedding_dim=32, gate_hidden_dim=64)
    return {
        "infonce": (
            2,
            lambda: CLIPLoss(TEMPERATURE, False, image_column="x_view_1", text_column="x_view_2"),
        ),
        "cacr": (2, lambda: CACRLoss(view_names(2))),
        "cacr (4 views)": (4, lambda: CACRLoss(view_names(4))),
        "hydra (identical pairs)": (2, lambda: HydraLoss(pair_mode="identical", **hydra)),
        "hydra (arbitrary pairs)": (2, lambda: HydraLoss(pair_mode="arbitrary", **hydra)),
    }


def view_transforms(train_table: np.ndarray, count: int, seed: int) -> dict:
    """``{x_view_k: ("x", SCARF(0.4) then noise(0.05))}``, one seeded stream per view."""
    return {
        name: ("x", Compose([ScarfCorruption(train_table, 0.4, seed=100 * seed + k), GaussianNoise(0.05, seed=k)]))
        for k, name in enumerate(view_names(count))
    }


def new_encoder(args, seed: int) -> ViewEncoder:
    """The same initial encoder for every objective of a seed."""
    torch.manual_seed(seed)
    config = ViewEncoderConfig(
        input_dim=64, hidden_dims=[128, 64], projection_dim=64, embedding_dim=args.embedding_dim
    )
    return ViewEncoder(config)


def train(name: str, objective, views: dict, train_set, args, seed: int) -> ViewEncoder:
    """Train a fresh encoder of ``seed`` with ``objective`` on ``views`` of the training rows."""
    model = new_encoder(args, seed)
    run_name = "".join(c if c.isalnum() else "_" for c in name)
    training_args = MultiModalConfig(
        output_dir=str(Path(args.output_dir) / run_name / f"seed{seed}"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        weight_decay=1e-4,
        warmup_steps=0,
        lr_scheduler_type="cosine",
        label_column="label",
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    collator = MultiModalCollator({"x": stack_vectors}, views=views, label_column="label")
    trainer = MultiModalTrainer(
        model, training_args, train_dataset=train_set, objective=objective, data_collator=collator
    )
    trainer.train()
    return model


def run(args) -> dict:
    digits = load_digits_vectors(DIGITS)
    if args.small:
        digits = digits.select(range(384))
    split = digits.train_test_split(test_size=0.2 if not args.small else 128 / 384, seed=0)
    train_set, test_set = split["train"], split["test"]
    args.test_rows = len(test_set)
    train_table = np.array(train_set["x"], dtype=np.float32)
    test_values = list(np.array(test_set["x"], dtype=np.float32))
    positive_view = Compose([ScarfCorruption(train_table, 0.4, seed=12345), GaussianNoise(0.05, seed=54321)])
    evaluator = ProbeEvaluator(
        list(train_table),
        train_set["label"],
        test_values,
        test_set["label"],
        column="x",
        test_positive_values=[positive_view(v) for v in test_values],
        name="probe",
    )
    results: dict[str, dict[str, list[float]]] = {}

    def record(name: str, model: ViewEncoder) -> None:
        metrics = evaluator(lambda column, values: model.represent(np.stack(values)))
        for key in METRICS:
            results.setdefault(name, {}).setdefault(key, []).append(metrics[f"probe_{key}"])

    for seed in args.seeds:
        record("untrained encoder", new_encoder(args, seed))
        for name, (count, factory) in objectives(args.embedding_dim).items():
            views = view_transforms(train_table, count, seed)
            record(name, train(name, factory(), views, train_set, args, seed))
    return results


def report(results: dict, args) -> str:
    means = {name: {k: statistics.mean(v) for k, v in metrics.items()} for name, metrics in results.items()}
    command = "python recipes/cacr_hydra_digits.py" + (" --small" if args.small else "")
    lines = [
        "# CACR and Hydra vs InfoNCE on scikit-learn digits (64-d vectors)",
        "",
        f"Command: `{command}` (seeds {list(args.seeds)}, mean over seeds; {args.epochs} epochs, batch "
        f"{args.batch_size}, AdamW lr {args.learning_rate}, cosine schedule, temperature {TEMPERATURE}).",
        "",
        "Data: `../shared/data/sklearn-bundled/digits.csv.gz` (1,797 rows, 80/20 split, seed 0). Views: SCARF "
        "corruption (rate 0.4, training marginals) + Gaussian noise (0.05). Encoder: ViewEncoder MLP 64-128-64 + "
        f"head to {args.embedding_dim} (LayerNorm). Probes on the frozen 64-d backbone representation: logistic "
        "regression on standardised features, cosine k-NN (k = 10); alignment (a test row vs a view of it) and "
        "uniformity (Wang & Isola, t = 2) on normalised representations; effective rank (Roy & Vetterli, max 64).",
        "",
        metrics_table(means, METRICS, row_header="objective"),
        "",
        f"The test split has {args.test_rows} rows: one row is {100 / args.test_rows:.2f} accuracy points, so "
        "differences of about a point are within the seed-to-seed spread (per-seed values in `results.json`). Hydra is trained with the class labels (as in the paper); InfoNCE and "
        "CACR are self-supervised, so the Hydra rows are not a like-for-like comparison with them.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/cacr-hydra-digits")
    parser.add_argument("--card", default="model_cards/cacr-hydra-digits.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=40)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--small", action="store_true", help="384 rows, one seed, a few steps (smoke test)")
    args = parser.parse_args(argv)
    if args.small:
        args.seeds, args.max_steps, args.batch_size = [0], 4, 64
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = run(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results, args)
    (output_dir / "report.md").write_text(text)
    if not args.small:
        Path(args.card).write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
