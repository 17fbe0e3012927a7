"""Build the model card of a contrastively trained encoder: fill a `ContrastiveCardData`, call `build_model_card`.

    card = build_model_card(ContrastiveCardData(objective="info_nce", repo_id="me/simcse-bert", ...))
    card.save("outputs/README.md")

The card carries what a practitioner needs to trust and reuse the model: Hub metadata (library, tags with the
objective and the paper, base model, datasets, model-index with the evaluation results), a usage snippet that runs,
training-data statistics, the contrastive setup (world size, global batch, effective negatives per anchor,
temperature, gradient cache, sampler), hyperparameters with the non-default ones first, before/after evaluation,
framework versions and BibTeX. Everything is rendered from the data given: building twice gives the same text.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from transformers import TrainingArguments

TEMPLATE_PATH = Path(__file__).with_name("template.md")

FRAMEWORKS = (
    "hf_contrastive",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "huggingface_hub",
)

# Paths, names and secrets that differ between runs of the same recipe: not hyperparameters.
PER_RUN_FIELDS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "resume_from_checkpoint",
        "hub_model_id",
        "hub_token",
        "push_to_hub_token",
    }
)

FACT_LABELS = {
    "world_size": "World size (processes)",
    "per_device_batch": "Per-device batch (rows)",
    "global_batch": "Global batch (rows per step, all processes)",
    "gradient_accumulation_steps": "Gradient accumulation steps (add no negatives)",
    "effective_negatives_per_anchor": "Effective negatives per anchor",
    "hard_negatives_per_anchor": "Hard-negative columns per anchor",
    "objective": "Objective",
    "mask_false_negatives": "False negatives masked (by input hash)",
    "temperature": "Temperature",
    "learnable_temperature": "Learnable temperature",
    "gather_across_devices": "Negatives gathered across devices",
    "gradient_cache": "Gradient cache",
    "cache_token_budget": "Cache token budget (tokens per mini-batch)",
    "cache_row_budget": "Cache row budget (images or vectors per mini-batch)",
    "forward_token_budget": "Length-sorted forward chunks (padded tokens per chunk)",
    "unpad_inputs": "Padding-free forward (packed, varlen attention)",
    "teacher": "Semantic-similarity teacher (frozen)",
    "sampler": "Batch sampler",
    "utility": "Ranking utility optimised",
    "rankings_sampled_per_query": "Rankings sampled per query (Plackett-Luce)",
    "baseline": "Policy-gradient baseline",
    "candidates_per_query": "Candidates per query",
    "non_relevant_candidates_per_query": "Non-relevant candidates per query",
    "queries_without_relevant_candidate": "Queries without a relevant candidate (no gradient)",
    "max_candidates": "Cap on candidates per query",
    "similarity": "Similarity",
}

HF_CONTRASTIVE_CITATION = """@software{hf_contrastive,
  title = {hf\\_contrastive: contrastive training objectives for the Hugging Face ecosystem},
  author = {{hf\\_contrastive contributors}},
  note = {Python library},
}"""

_ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}")  # new-style ids; a version suffix (v2) is dropped
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class CardEvalResult:
    """One evaluation number for the card's table and the model-index; `before` is the base model's value.

    Example: `CardEvalResult("STS Benchmark", "sentence-transformers/stsb", "spearman_cosine", 0.812,
    before=0.593, dataset_split="validation", metric_name="Spearman (cosine)")`.
    """

    dataset_name: str
    dataset_type: str
    metric_type: str
    value: float
    before: float | None = None
    dataset_split: str | None = None
    metric_name: str | None = None
    task_type: str = "semantic-similarity"
    task_name: str | None = "Semantic Similarity"

    def to_eval_result(self) -> EvalResult:
        return EvalResult(
            task_type=self.task_type,
            task_name=self.task_name,
            dataset_type=self.dataset_type,
            dataset_name=self.dataset_name,
            dataset_split=self.dataset_split,
            metric_type=self.metric_type,
            metric_name=self.metric_name,
            metric_value=float(self.value),
        )


@dataclass
class ContrastiveCardData:
    """Everything the card shows; only `objective` is required, empty fields drop their section.

    Args:
        objective: the objective's name (`ContrastiveObjective.name`), e.g. "info_nce"; becomes a tag.
        repo_id: Hub id (or local path) used in the usage snippet; also names the model-index entry.
        model_name: title; defaults to the last part of `repo_id`.
        base_model: Hub id of the backbone; a local path stays out of the YAML and is named in the text.
        paper: arXiv id or URL of the objective's paper (`ContrastiveObjective.paper`); adds an `arxiv:<id>` tag.
        objective_config: `objective.get_config_dict()`.
        datasets: Hub ids of the training datasets (local paths are named in the text only).
        language, license: Hub metadata.
        pipeline_tag: Hub task; embeddings for similarity by default.
        tags: extra tags, appended after the library's own.
        model_details: e.g. {"embedding_dim": 768, "pooling": "mean", "max_length": 128, "normalize": False}.
        dataset_stats: see `dataset_statistics`: {"rows", "columns", "length_unit", "lengths": {col: {min,mean,max}}}.
        contrastive_facts: `trainer.contrastive_facts()` (world_size, per_device_batch, global_batch,
            effective_negatives_per_anchor, temperature, cache, cache_token_budget, sampler, ...).
        training_args: the `TrainingArguments` (or subclass) used; split into non-default and default values.
        eval_results: numbers for the evaluation table and the model-index.
        training_summary: e.g. {"final train loss": 0.41, "steps": 500, "epochs": 1, "runtime (s)": 812}.
        citations: BibTeX of the objective's paper(s) (`ContrastiveObjective.citation`).
        summary, usage: replace the text-encoder summary paragraph and usage snippet (markdown), for models that are
            not text encoders (CLIP, multimodal encoders).
    """

    objective: str
    repo_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    paper: str | None = None
    objective_config: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    language: str | list[str] | None = None
    license: str | None = None
    pipeline_tag: str = "sentence-similarity"
    tags: list[str] = field(default_factory=list)
    model_details: dict[str, Any] = field(default_factory=dict)
    dataset_stats: dict[str, Any] | None = None
    contrastive_facts: dict[str, Any] = field(default_factory=dict)
    training_args: TrainingArguments | None = None
    eval_results: list[CardEvalResult] = field(default_factory=list)
    training_summary: dict[str, Any] = field(default_factory=dict)
    citations: list[str] = field(default_factory=list)
    summary: str | None = None
    usage: str | None = None


def build_model_card(data: ContrastiveCardData) -> ModelCard:
    """Render `data` into a `huggingface_hub.ModelCard` (YAML metadata + markdown body); save it as README.md."""
    model_name = data.model_name or (data.repo_id or f"{data.objective}-encoder").rstrip("/").split("/")[-1]
    non_default, default = split_non_default_args(data.training_args) if data.training_args else ({}, {})
    card_data = ModelCardData(
        library_name="hf_contrastive",
        pipeline_tag=data.pipeline_tag,
        license=data.license,
        language=data.language,
        base_model=data.base_model if is_hub_id(data.base_model) else None,
        datasets=[d for d in data.datasets if is_hub_id(d)] or None,
        tags=card_tags(data),
        model_name=model_name if data.eval_results else None,  # only the model-index uses it
        eval_results=[result.to_eval_result() for result in data.eval_results] or None,
    )
    return ModelCard(
        _render(
            card_data=card_data.to_yaml(),
            title=model_name,
            summary=data.summary or _summary(data),
            details=bullets(_model_details(data)),
            usage=data.usage or _usage_snippet(data.repo_id or "path/to/this/model"),
            evaluation_table=evaluation_table(data.eval_results),
            dataset_section=dataset_section(data.dataset_stats),
            facts_table=_key_value_table(
                ("Quantity", "Value"),
                [(FACT_LABELS.get(k, k), _format_fact(k, v)) for k, v in data.contrastive_facts.items()],
            ),
            objective=data.objective,
            objective_config=json.dumps(data.objective_config, indent=2, default=str) if data.objective_config else "",
            non_default_hyperparameters=bullets((f"`{k}`", format_value(v)) for k, v in non_default.items()),
            default_hyperparameters=bullets((f"`{k}`", format_value(v)) for k, v in default.items()),
            training_summary=_key_value_table(
                ("Quantity", "Value"), [(k, format_value(v)) for k, v in data.training_summary.items()]
            ),
            framework_versions=bullets(framework_versions().items()),
            citations=[c.strip() for c in data.citations if c and c.strip()] + [HF_CONTRASTIVE_CITATION],
        )
    )


def _render(**fields: Any) -> str:
    # trim_blocks/lstrip_blocks: a line holding only a {% tag %} leaves no blank line behind; StrictUndefined: a
    # misspelt field fails loudly instead of rendering as nothing.
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    return environment.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(**fields)


def card_tags(data: ContrastiveCardData) -> list[str]:
    """Tags in a fixed order: library, task, objective, `arxiv:<id>` of the paper, then the caller's own."""
    tags = ["hf_contrastive", "contrastive-learning", data.pipeline_tag, data.objective]
    arxiv_id = _arxiv_id(data.paper)
    if arxiv_id:
        tags.append(f"arxiv:{arxiv_id}")
    return list(dict.fromkeys([*tags, *data.tags]))


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def split_non_default_args(args: TrainingArguments) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `args.to_dict()` into (values changed from the defaults, values left at the defaults).

    Defaults come from `type(args)(output_dir=args.output_dir)`, so a `TrainingArguments` subclass is compared with
    its own defaults and fields derived from `output_dir` compare equal. Paths, run names and tokens
    (`PER_RUN_FIELDS`) are dropped: they are not hyperparameters and a token must never reach a card.
    """
    # A default instance built inside a distributed run warns that it is not distributed itself: not news. (Lowering
    # the verbosity instead would change the defaults themselves: disable_tqdm follows the log level.)
    args_logger = logging.getLogger("transformers.training_args")
    quiet = _DropMessages("parallel_mode != ParallelMode.DISTRIBUTED")
    args_logger.addFilter(quiet)
    try:
        reference = type(args)(output_dir=args.output_dir).to_dict()
    finally:
        args_logger.removeFilter(quiet)
    non_default: dict[str, Any] = {}
    default: dict[str, Any] = {}
    for key, value in args.to_dict().items():
        if key in PER_RUN_FIELDS:
            continue
        target = default if key in reference and reference[key] == value else non_default
        target[key] = value
    return non_default, default


def dataset_statistics(
    dataset: Sequence[dict[str, Any]],
    text_columns: Sequence[str] | None = None,
    tokenizer=None,
    max_rows: int = 1000,
) -> dict[str, Any]:
    """Summarise a training set for the card: row count, columns and text lengths over its first `max_rows` rows.

    Works on a `datasets.Dataset` or a list of dicts. Lengths are in tokens when a tokenizer is given (special
    tokens included, no truncation), else in whitespace-separated words. `text_columns` defaults to the columns
    whose first value is a string.
    """
    num_rows = len(dataset)
    if num_rows == 0:
        raise ValueError("Cannot describe an empty dataset.")
    columns = list(getattr(dataset, "column_names", None) or dataset[0].keys())
    rows = [dataset[i] for i in range(min(num_rows, max_rows))]
    if text_columns is None:
        text_columns = [c for c in columns if isinstance(rows[0][c], str)]
    lengths = {}
    for column in text_columns:
        texts = [row[column] for row in rows]
        counts = [len(ids) for ids in tokenizer(texts)["input_ids"]] if tokenizer else [len(t.split()) for t in texts]
        lengths[column] = {"min": min(counts), "mean": round(sum(counts) / len(counts), 2), "max": max(counts)}
    return {
        "rows": num_rows,
        "columns": columns,
        "sampled_rows": len(rows),
        "length_unit": "tokens" if tokenizer else "words",
        "lengths": lengths,
    }


def framework_versions() -> dict[str, str]:
    """Versions of Python and the installed libraries of the stack (missing ones are left out).

    hf_contrastive run from a source checkout (not pip-installed) reports its `__version__`.
    """
    versions = {"python": platform.python_version()}
    for name in FRAMEWORKS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            if name == "hf_contrastive":
                versions[name] = importlib.import_module("hf_contrastive").__version__
    return versions


def _summary(data: ContrastiveCardData) -> str:
    paper = _paper_link(data.paper)
    text = f"A text encoder trained with the `{data.objective}` contrastive objective{f' ({paper})' if paper else ''}"
    if data.base_model:
        text += f", fine-tuned from {model_link(data.base_model)}"
    if data.datasets:
        text += f", on {', '.join(dataset_link(d) for d in data.datasets)}"
    text += ", with the `hf_contrastive` library."
    dim = data.model_details.get("embedding_dim")
    if dim:
        pooling = data.model_details.get("pooling")
        how = f" ({pooling} pooling)" if pooling else ""
        text += f" It maps text to {dim}-dimensional embeddings{how}; compare them with cosine similarity."
    return text


def _model_details(data: ContrastiveCardData) -> list[tuple[str, str]]:
    paper = _paper_link(data.paper)
    items = [("**Objective**", f"`{data.objective}`" + (f" ({paper})" if paper else ""))]
    if data.base_model:
        items.append(("**Base model**", model_link(data.base_model)))
    items += [(f"**{k.replace('_', ' ').capitalize()}**", format_value(v)) for k, v in data.model_details.items()]
    if data.datasets:
        items.append(("**Training data**", ", ".join(dataset_link(d) for d in data.datasets)))
    if data.license:
        items.append(("**License**", data.license))
    return items


def _usage_snippet(repo_id: str) -> str:
    return f"""```python
import torch
from transformers import AutoModel, AutoTokenizer

import hf_contrastive  # noqa: F401  (registers ContrastiveEncoder with AutoModel)

model = AutoModel.from_pretrained({json.dumps(repo_id)})
tokenizer = AutoTokenizer.from_pretrained({json.dumps(repo_id)})
sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The weather is cold today."]
embeddings = model.encode(sentences, tokenizer)  # [3, D], same pooling as in training
similarities = torch.nn.functional.cosine_similarity(embeddings[:1], embeddings[1:])
print(embeddings.shape, similarities)  # the paraphrase should score higher than the unrelated sentence
```"""


def evaluation_table(results: Sequence[CardEvalResult]) -> str:
    if not results:
        return ""
    with_before = any(r.before is not None for r in results)
    header = ("Dataset", "Split", "Metric", *(("Before", "After", "Change") if with_before else ("Value",)))
    rows = []
    for r in results:
        row = [r.dataset_name, r.dataset_split or "", r.metric_name or r.metric_type]
        if with_before:
            change = "" if r.before is None else f"{r.value - r.before:+.4f}"
            row += ["" if r.before is None else f"{r.before:.4f}", f"{r.value:.4f}", change]
        else:
            row.append(f"{r.value:.4f}")
        rows.append(row)
    return markdown_table(header, rows)


def dataset_section(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    lines = [f"- Rows: {stats['rows']:,}", f"- Columns: {', '.join(f'`{c}`' for c in stats['columns'])}"]
    lengths = stats.get("lengths")
    if not lengths:
        return "\n".join(lines)
    unit = stats.get("length_unit", "tokens")
    sampled = stats.get("sampled_rows", stats["rows"])
    lines.append(f"- Text length in {unit}, over the first {sampled:,} rows:")
    table = markdown_table(
        ("Column", "Min", "Mean", "Max"),
        [
            (f"`{c}`", format_value(s["min"]), format_value(s["mean"]), format_value(s["max"]))
            for c, s in lengths.items()
        ],
    )
    return "\n".join(lines) + "\n\n" + table


def _format_fact(key: str, value: Any) -> str:
    if key == "gradient_cache" and isinstance(value, bool):
        return "on" if value else "off"
    return format_value(value)


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)
    return json.dumps(value, default=str)


def _key_value_table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    return markdown_table(header, rows) if rows else ""


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def metrics_table(
    results: Mapping[str, Mapping[str, float]], columns: Sequence[str], row_header: str = "model"
) -> str:
    """Markdown table of runs (rows) by metrics (``columns``, right-aligned, 4 decimals): the recipes' reports."""
    lines = [f"| {row_header} | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[column]:.4f}" for column in columns) + " |")
    return "\n".join(lines)


def bullets(items: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"- {name}: {value}" for name, value in items)


def _arxiv_id(paper: str | None) -> str | None:
    match = _ARXIV_ID.search(paper or "")
    return match.group(0) if match else None


def _paper_link(paper: str | None) -> str:
    arxiv_id = _arxiv_id(paper)
    if arxiv_id:
        return f"[arXiv:{arxiv_id}](https://arxiv.org/abs/{arxiv_id})"
    if paper and paper.startswith(("http://", "https://")):
        return f"[paper]({paper})"
    return paper or ""


def is_hub_id(name: str | None) -> bool:
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def model_link(name: str) -> str:
    return f"[{name}](https://huggingface.co/{name})" if is_hub_id(name) else f"`{name}`"


def dataset_link(name: str) -> str:
    return f"[{name}](https://huggingface.co/datasets/{name})" if is_hub_id(name) else f"`{name}`"


def encoder_details(model) -> dict[str, Any]:
    """What the card says about a ContrastiveEncoder-like model: class, size, pooling, embedding size, backbone."""
    config = model.config
    details: dict[str, Any] = {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    for key in ("pooling", "normalize", "projection_dim", "embedding_dim"):
        if hasattr(config, key):
            details[key] = getattr(config, key)
    backbone = getattr(config, "backbone_config", None)
    if backbone is not None:
        details["backbone"] = backbone.model_type
    return details


def encoder_model_card(model, repo_id: str) -> ModelCard:
    """A card from what a saved encoder knows by itself (its config), for ``model.push_to_hub`` without a Trainer.

    The objective comes from ``config.training_objective``, which ``ContrastiveTrainer`` records; the Trainer's own
    card (``trainer.push_to_hub``) adds data, setup, hyperparameters and evaluation.
    """
    from ..objectives import REGISTRY
    from ..objectives import objective_class as registered_class

    config = model.config
    objective = getattr(config, "training_objective", None)
    objective_class = registered_class(objective) if objective in REGISTRY else None
    return build_model_card(
        ContrastiveCardData(
            objective=objective or "contrastive",
            repo_id=repo_id,
            base_model=getattr(config, "base_model_name_or_path", None),
            paper=objective_class.paper if objective_class else None,
            model_details=encoder_details(model),
            citations=[objective_class.citation] if objective_class and objective_class.citation else [],
        )
    )


def write_run_report(output_dir: Path, results: Any, report: str, card: Path | None = None) -> None:
    """Save a recipe run: ``results.json`` and ``report.md`` in ``output_dir``, and the report as ``card``.

    ``card=None`` (smoke runs) leaves the shipped model card untouched.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (output_dir / "report.md").write_text(report)
    if card is not None:
        Path(card).parent.mkdir(parents=True, exist_ok=True)
        Path(card).write_text(report)
