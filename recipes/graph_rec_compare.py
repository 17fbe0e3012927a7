"""LightGCN vs XSimGCL vs DCCF on ml-100k and SELFRec's amazon-beauty, same budget and seeds: Recall@20 / NDCG@20.

Run from the repository root (offline, CPU); the card's table came from the first command:

    OMP_NUM_THREADS=2 python recipes/graph_rec_compare.py --card model_cards/graph-rec.md
    OMP_NUM_THREADS=1 python recipes/graph_rec_compare.py --small --output_dir /tmp/graph-rec   # seconds (the test)

Data (:mod:`hf_contrastive.data.recsys`): ml-100k (every rating an interaction, a per-user random 7:1:2 split with
seed 0, the XSimGCL spec's ratio; the validation part is not used) and ``amazon-beauty-selfrec`` (SELFRec's train /
test files as user-item pairs; 52 test pairs with items unseen in training dropped). All three models train with
``GraphRecTrainer`` on the same triples budget: ``epochs`` epochs of one triple per training interaction (LightGCN
and XSimGCL draw every interaction once; DCCF draws as many triples with its uniform-user sampling), batch 2048,
Adam lr 1e-3, embedding size 64, 2 layers, each paper's other defaults (XSimGCL: eps 0.2, l* 1, tau 0.15, lambda
0.2; DCCF: 128 intents, tau 1, ssl 0.1). No model selection: the last epoch is scored on the test split (full
ranking over all items, training items masked; :class:`~hf_contrastive.evaluation.recsys.FullRankingEvaluator`).
The budget is far below the papers' (XSimGCL 20 epochs on Yelp2018 and DCCF 100-150 epochs of 409,600 triples),
so the numbers rank the methods at a small CPU budget; they are not reproductions.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, set_seed

from hf_contrastive.data.recsys import InteractionData, load_movielens_100k, load_selfrec_interactions
from hf_contrastive.evaluation.recsys import FullRankingEvaluator
from hf_contrastive.hub.card import metrics_table, write_run_report
from hf_contrastive.models.graph_rec import DCCF, LightGCN, XSimGCL
from hf_contrastive.objectives.bpr import BPRLoss
from hf_contrastive.objectives.dccf import DCCFLoss
from hf_contrastive.objectives.xsimgcl import XSimGCLLoss
from hf_contrastive.trainers.graph_rec import GraphRecConfig, GraphRecTrainer

DATA = Path("../shared/data")
METHODS = {
    "LightGCN": (LightGCN, {}, BPRLoss, "interaction"),
    "XSimGCL": (XSimGCL, {"eps": 0.2, "cl_layer": 1}, XSimGCLLoss, "interaction"),
    "DCCF": (DCCF, {"n_intents": 128}, DCCFLoss, "user"),
}
METRICS = ["recall@20", "ndcg@20", "recall@10", "ndcg@10"]
DATA_DESCRIPTIONS = {
    "ml-100k": "ml-100k, every rating an interaction, per-user random 7:1:2 split (seed 0; validation unused)",
    "amazon-beauty": "amazon-beauty-selfrec, SELFRec's leave-last-out train/test files as user-item pairs",
}
SMALL = {"datasets": ["ml-100k"], "epochs": 1, "seeds": [0], "max_train_pairs": 3000}


@dataclass
class GraphRecArguments:
    """The comparison grid and its budget (the same for the three methods)."""

    datasets: list[str] = field(default_factory=lambda: ["ml-100k", "amazon-beauty"], metadata={"help": "Data."})
    epochs: int = field(default=5, metadata={"help": "Epochs (one triple per training interaction each)."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds (initialisation, sampling)."})
    embed_size: int = field(default=64, metadata={"help": "Embedding size of every method."})
    n_layers: int = field(default=2, metadata={"help": "Propagation layers of every method."})
    batch_size: int = field(default=2048, metadata={"help": "Triples per step."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Keep only the first N training pairs."})
    small: bool = field(default=False, metadata={"help": "A seconds-long run (ml-100k subset, 1 epoch)."})
    output_dir: str = field(default="outputs/graph-rec", metadata={"help": "results.json and report.md go here."})
    card: str | None = field(default=None, metadata={"help": "Write the report as this model card (full runs)."})

    def __post_init__(self) -> None:
        if self.small:
            for name, value in SMALL.items():
                setattr(self, name, value)


def load(name: str, max_train_pairs: int | None) -> InteractionData:
    """ml-100k (per-user random 7:1:2, seed 0) or SELFRec's amazon-beauty train/test pairs."""
    if name == "ml-100k":
        data = InteractionData.from_dataset(load_movielens_100k(DATA / "ml-100k"), seed=0)
    elif name == "amazon-beauty":
        data = load_selfrec_interactions(DATA / "amazon-beauty-selfrec")
    else:
        raise ValueError(f"Unknown dataset {name!r}; expected ml-100k or amazon-beauty.")
    if max_train_pairs is None:
        return data
    train = [(data.user_map.ids[u], data.item_map.ids[i]) for u, i in data.train[:max_train_pairs].tolist()]
    test = [(data.user_map.ids[u], data.item_map.ids[i]) for u, i in data.test.tolist()]
    return InteractionData.from_pairs(train, test)


def train_and_score(args: GraphRecArguments, data: InteractionData, method: str, seed: int, scratch: str):
    """Train one method for ``args.epochs`` and return its test metrics and training seconds."""
    set_seed(seed)
    model_class, model_options, objective_class, sampling = METHODS[method]
    model = model_class.from_data(data, embed_size=args.embed_size, n_layers=args.n_layers, **model_options)
    config = GraphRecConfig(
        output_dir=scratch,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        triple_sampling=sampling,
        triples_per_epoch=len(data.train) if sampling == "user" else None,
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
    )
    evaluator = FullRankingEvaluator.from_data(data, "test", ks=(10, 20))
    trainer = GraphRecTrainer(model, config, objective=objective_class(), evaluator=evaluator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return evaluator(trainer.evaluator_argument()), seconds


def run(args: GraphRecArguments) -> dict[str, dict[str, float]]:
    """``{"<dataset> / <method>": {metric: mean over seeds, "train s": ...}}``."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            data = load(name, args.max_train_pairs)
            for method in METHODS:
                runs = [train_and_score(args, data, method, seed, scratch) for seed in args.seeds]
                row = {metric: statistics.mean(r[0][f"test_{metric}"] for r in runs) for metric in METRICS}
                row["train s"] = statistics.mean(r[1] for r in runs)
                results[f"{name} / {method}"] = row
                print(metrics_table({f"{name} / {method}": row}, [*METRICS, "train s"]), flush=True)
    return results


def report(args: GraphRecArguments, results: dict[str, dict[str, float]], seconds: float, command: str) -> str:
    """The markdown card: setting, command, table and what it shows."""
    return "\n".join(
        [
            "# Graph collaborative filtering: LightGCN vs XSimGCL vs DCCF (full ranking, test split)",
            "",
            f"Command (CPU, {seconds:.0f} s in all): `{command}`",
            "",
            f"Budget per method and data set: {args.epochs} epochs of one triple per training interaction, batch "
            f"{args.batch_size}, Adam lr 1e-3, embedding size {args.embed_size}, {args.n_layers} layers, seeds "
            f"{args.seeds} (metrics are means over seeds). No model selection: the last epoch is scored. Full "
            "ranking over all items with the user's training items masked; Recall@K = hits / |test items|, NDCG@K "
            "binary with IDCG over min(K, |test items|) ranks, averaged over users with test items.",
            "",
            "Data: " + "; ".join(DATA_DESCRIPTIONS[name] for name in args.datasets) + ".",
            "",
            metrics_table(results, [*METRICS, "train s"], row_header="data / method"),
            "",
            "This budget is a small fraction of the papers' (XSimGCL: 20 epochs; DCCF: 100-150 epochs of 409,600 "
            "triples), so the table ranks the methods at equal small CPU budget and is not a reproduction of the "
            "papers' numbers.",
            "",
        ]
    )


def main(argv: list[str]) -> dict[str, dict[str, float]]:
    (args,) = HfArgumentParser(GraphRecArguments).parse_args_into_dataclasses(args=argv)
    started = time.perf_counter()
    results = run(args)
    command = "python recipes/graph_rec_compare.py " + " ".join(argv)
    text = report(args, results, time.perf_counter() - started, command)
    print(text)
    write_run_report(Path(args.output_dir), results, text, None if args.small else args.card)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
