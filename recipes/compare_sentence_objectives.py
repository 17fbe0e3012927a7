"""Train SimCSE, DebCSE and WhitenedCSE on the same encoder, data and budget, and tabulate STS-B dev Spearman.

Run from the repository root (each run: MiniLM from the PyPI wheel, 11,914 wiki sentences, batch 64, 1 epoch):

    python recipes/compare_sentence_objectives.py --seeds 42                 # train all three, then print the table
    python recipes/compare_sentence_objectives.py --seeds 42 --report-only   # table from finished runs

Each run is ``hf-contrastive train recipes/configs/<method>.yaml --seed S --output_dir outputs/compare/<method>-sS``;
the table reads the ``all_results.json`` every run writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

METHODS = {"SimCSE": "simcse-unsup", "DebCSE": "debcse", "WhitenedCSE": "whitenedcse"}
SPEARMAN = "sts-dev_spearman_cosine"


def run_directory(root: Path, config: str, seed: int) -> Path:
    return root / f"{config}-s{seed}"


def train(config: str, seed: int, output_dir: Path) -> None:
    command = [
        sys.executable, "-m", "hf_contrastive.cli", "train", f"recipes/configs/{config}.yaml",
        "--seed", str(seed), "--output_dir", str(output_dir), "--disable_tqdm", "true",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_scores(directory: Path) -> tuple[float, float] | None:
    """(before, after) STS-B dev Spearman of one finished run, or None when it has not finished."""
    results_file = directory / "all_results.json"
    if not results_file.exists():
        return None
    results = json.loads(results_file.read_text())
    return results[f"before_{SPEARMAN}"], results[f"eval_{SPEARMAN}"]


def table(root: Path, seeds: list[int]) -> str:
    lines = [
        "| method | seeds | STS-B dev Spearman before | after (mean) | per seed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, config in METHODS.items():
        scores = {seed: read_scores(run_directory(root, config, seed)) for seed in seeds}
        done = {seed: pair for seed, pair in scores.items() if pair is not None}
        if not done:
            lines.append(f"| {method} | - | - | not run | - |")
            continue
        after = [pair[1] for pair in done.values()]
        per_seed = ", ".join(f"{seed}: {pair[1]:.4f}" for seed, pair in done.items())
        before = next(iter(done.values()))[0]
        lines.append(f"| {method} | {len(done)} | {before:.4f} | {statistics.mean(after):.4f} | {per_seed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--root", type=Path, default=Path("outputs/compare"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--report-only", action="store_true", help="Only print the table of finished runs.")
    args = parser.parse_args(argv)
    if not args.report_only:
        for seed in args.seeds:
            for method in args.methods:
                directory = run_directory(args.root, METHODS[method], seed)
                if read_scores(directory) is None:
                    train(METHODS[method], seed, directory)
    print(table(args.root, args.seeds))


if __name__ == "__main__":
    main()
