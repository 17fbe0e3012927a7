"""SASRec vs CL4SRec vs MCLRec on S3-Rec's Amazon Beauty (and Sports), same budget and seeds: HR / NDCG @10, @20.

Run from the repository root (offline, CPU); the card's table came from the first command:

    OMP_NUM_THREADS=2 python recipes/seq_rec_compare.py --card model_cards/seq-rec.md
    OMP_NUM_THREADS=1 python recipes/seq_rec_compare.py --small --output_dir /tmp/seq-rec   # seconds (the test)

Data (:func:`~hf_contrastive.data.recsys.load_seqrec_sequences`): ``seqrec-amazon/<name>.txt``, leave-one-out (last
item test, second-to-last validation, every prefix of the rest a training instance, as RecBole). To fit a CPU budget
the run keeps the first ``max_users`` users (their items keep the full item vocabulary, so the ranking is over all
items). The three methods share the SASRec encoder (64 hidden, 2 layers, 2 heads, dropout 0.5, 50 items) and the
budget (``epochs``, batch 256, Adam lr 1e-3, same seeds):

- SASRec: next-item full-softmax cross-entropy (``SeqRecTrainer``, no objective);
- CL4SRec: + lambda 0.1 x NT-Xent between two CL4SRec views (crop / mask / reorder), dot similarity, tau 1;
- MCLRec: ``MCLRecTrainer``'s three updates per batch with the spec's Beauty weights (lambda 0, beta 0.05).

No model selection: the last epoch is scored on the test targets (full ranking over all items, only the padding id
excluded, as RecBole / MCLRec; :class:`~hf_contrastive.evaluation.recsys.LeaveOneOutEvaluator`). The papers train
up to 100 epochs with early stopping on all users, so these are small-budget comparisons, not reproductions.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, set_seed

from hf_contrastive.data.recsys import SequenceData, load_seqrec_sequences
from hf_contrastive.evaluation.recsys import LeaveOneOutEvaluator
from hf_contrastive.hub.card import metrics_table, write_run_report
from hf_contrastive.models.seq_rec import SASRec, SASRecConfig
from hf_contrastive.objectives.seq_rec import CL4SRecLoss, MCLRecLoss
from hf_contrastive.trainers.seq_rec import MCLRecTrainer, SeqRecConfig, SeqRecTrainer

DATA = Path("../shared/data/seqrec-amazon")
METHODS = {
    "SASRec": (SeqRecTrainer, lambda: None, False),
    "CL4SRec": (SeqRecTrainer, lambda: CL4SRecLoss(temperature=1.0, weight=0.1), False),
    "MCLRec": (MCLRecTrainer, lambda: MCLRecLoss(view_weight=0.0, model_view_weight=0.05), True),
}
METRICS = ["hr@20", "ndcg@20", "hr@10", "ndcg@10"]
SMALL = {"datasets": ["Beauty"], "epochs": 1, "seeds": [0], "max_users": 80, "max_len": 10}


@dataclass
class SeqRecArguments:
    """The comparison grid and its budget (the same for the three methods)."""

    datasets: list[str] = field(default_factory=lambda: ["Beauty"], metadata={"help": "S3-Rec files (Beauty, ...)."})
    epochs: int = field(default=3, metadata={"help": "Training epochs over the prefix instances."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds (initialisation, views)."})
    max_users: int | None = field(default=2000, metadata={"help": "Keep the first N users (None: all)."})
    max_len: int = field(default=50, metadata={"help": "Maximum history length."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per step."})
    small: bool = field(default=False, metadata={"help": "A seconds-long run (80 Beauty users, 1 epoch)."})
    output_dir: str = field(default="outputs/seq-rec", metadata={"help": "results.json and report.md go here."})
    card: str | None = field(default=None, metadata={"help": "Write the report as this model card (full runs)."})

    def __post_init__(self) -> None:
        if self.small:
            for name, value in SMALL.items():
                setattr(self, name, value)


def load(name: str, max_users: int | None) -> SequenceData:
    """The S3-Rec file, cut to its first ``max_users`` users (the item vocabulary stays the full one)."""
    data = load_seqrec_sequences(DATA / f"{name}.txt")
    return data if max_users is None else data.head(max_users)


def train_and_score(args: SeqRecArguments, data: SequenceData, method: str, seed: int, scratch: str):
    """Train one method for ``args.epochs`` and return its test metrics and training seconds."""
    set_seed(seed)
    trainer_class, make_objective, augmenters = METHODS[method]
    config = SASRecConfig(
        num_items=data.num_items, max_seq_len=args.max_len, item_ids=data.item_map.ids, model_augmenters=augmenters
    )
    arguments = SeqRecConfig(
        output_dir=scratch,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
    )
    trainer = trainer_class(
        SASRec(config), arguments, train_dataset=data.training_instances(args.max_len), objective=make_objective()
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    evaluator = LeaveOneOutEvaluator.from_data(data, "test", ks=(10, 20), max_len=args.max_len)
    return evaluator(trainer.evaluator_argument()), seconds


def run(args: SeqRecArguments) -> dict[str, dict[str, float]]:
    """``{"<dataset> / <method>": {metric: mean over seeds, "train s": ...}}``."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            data = load(name, args.max_users)
            for method in METHODS:
                runs = [train_and_score(args, data, method, seed, scratch) for seed in args.seeds]
                row = {metric: statistics.mean(r[0][f"test_{metric}"] for r in runs) for metric in METRICS}
                row["train s"] = statistics.mean(r[1] for r in runs)
                results[f"{name} / {method}"] = row
                print(metrics_table({f"{name} / {method}": row}, [*METRICS, "train s"]), flush=True)
    return results


def report(args: SeqRecArguments, results: dict[str, dict[str, float]], seconds: float, command: str) -> str:
    """The markdown card: setting, command, table and what it shows."""
    users = "all users" if args.max_users is None else f"the first {args.max_users} users"
    return "\n".join(
        [
            "# Sequential recommendation: SASRec vs CL4SRec vs MCLRec (leave-one-out, full ranking)",
            "",
            f"Command (CPU, {seconds:.0f} s in all): `{command}`",
            "",
            f"Data: S3-Rec `seqrec-amazon` {', '.join(args.datasets)}, {users} (items: the full vocabulary), "
            "leave-one-out: last item test, every prefix of the history before the last two items a training "
            f"instance. Budget per method: {args.epochs} epochs, batch {args.batch_size}, Adam lr 1e-3, SASRec "
            f"encoder 64 hidden / 2 layers / 2 heads / dropout 0.5, histories of at most {args.max_len} items, seeds "
            f"{args.seeds} (metrics are means over seeds). CL4SRec: lambda 0.1, tau 1 (dot). MCLRec: the spec's "
            "Beauty weights (lambda 0, beta 0.05), three updates per batch. No model selection: the last epoch "
            "is scored; full ranking over all items (padding excluded), HR@K = [rank <= K], NDCG@K = "
            "1/log2(rank + 1) within K, ties counted against the model.",
            "",
            metrics_table(results, [*METRICS, "train s"], row_header="data / method"),
            "",
            "The papers train up to 100 epochs with early stopping on all users (MCLRec Beauty HR@20 0.1243, "
            "NDCG@20 0.0539); this table compares the methods at one small CPU budget and is not a reproduction.",
            "",
        ]
    )


def main(argv: list[str]) -> dict[str, dict[str, float]]:
    (args,) = HfArgumentParser(SeqRecArguments).parse_args_into_dataclasses(args=argv)
    started = time.perf_counter()
    results = run(args)
    command = "python recipes/seq_rec_compare.py " + " ".join(argv)
    text = report(args, results, time.perf_counter() - started, command)
    print(text)
    write_run_report(Path(args.output_dir), results, text, None if args.small else args.card)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
