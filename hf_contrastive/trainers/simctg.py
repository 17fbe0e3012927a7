"""SimCTGTrainer: train any causal LM with MLE plus SimCTG's token-level contrastive loss, then decode it with
contrastive search.

    from hf_contrastive.trainers.simctg import SimCTGConfig, SimCTGTrainer

    args = SimCTGConfig(output_dir="outputs/simctg", margin=0.5, learning_rate=2e-5, max_steps=1000)
    trainer = SimCTGTrainer(model=AutoModelForCausalLM.from_pretrained(...), args=args,
                            train_dataset=Dataset.from_dict({"text": texts}), processing_class=tokenizer)
    trainer.train()

Each step runs the model once (``output_hidden_states=True``, no ``labels`` so the model does not shift or reduce)
and minimises

.. math::

    L = L_{MLE} + w \\cdot L_{CL}, \\qquad
    L_{MLE} = \\frac{1}{N} \\sum_{b,t} -\\log p_\\theta(x_{b,t+1} \\mid x_{b,\\le t})

with ``N`` the real next-token targets of the batch and ``L_CL`` the margin loss of
:func:`hf_contrastive.objectives.simctg.simctg_contrastive_loss` over the last hidden states [B, L, H] and the
attention mask. ``w = contrastive_weight`` (1 in the paper; 0 trains plain MLE and still logs ``L_CL``, a measure of
anisotropy). Both terms are means over the micro-batch; the Trainer divides them by the gradient-accumulation steps
(the official code does the same per micro-batch, but clips gradients per micro-batch where the Trainer clips once
per update).

Data: a ``text`` column (``text_column``), tokenised in the collator with truncation at ``max_length``, or a
pre-tokenised ``input_ids`` column (packed blocks). Labels are the input ids (unshifted, HF style; the loss shifts)
with -100 on padding; validity comes from the attention mask, so a pad id equal to the EOS id (GPT-2) never hides a
real EOS. Works for any ``AutoModelForCausalLM`` that returns hidden states, PEFT (LoRA) models included.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelCardData
from transformers import Trainer, TrainingArguments

from ..hub import (
    HF_CONTRASTIVE_CITATION,
    CardEvalResult,
    dataset_statistics,
    framework_versions,
    split_non_default_args,
)
from ..hub.card import bullets, format_value, is_hub_id, markdown_table
from ..objectives.simctg import (
    CITATION,
    CONTRASTIVE_SEARCH_CITATION,
    CONTRASTIVE_SEARCH_PAPER,
    NAME,
    NORMALIZATIONS,
    PAPER,
    simctg_contrastive_loss,
)
from .common import LossOnlyPrediction, card_repo_id


@dataclass
class SimCTGConfig(TrainingArguments):
    """``TrainingArguments`` plus SimCTG's settings; every field can be set from a recipe YAML or the command line."""

    margin: float = field(
        default=0.5, metadata={"help": "Margin rho of the token-level contrastive loss (paper: 0.5; 0 = MLE only)."}
    )
    contrastive_weight: float = field(
        default=1.0,
        metadata={"help": "Weight w of the contrastive term: L = L_MLE + w * L_CL (paper: 1; 0 = plain MLE)."},
    )
    contrastive_normalization: str = field(
        default="pairs",
        metadata={
            "help": "'pairs': mean over all valid token pairs of the batch (official code, reproduces the numbers); "
            "'sequences': mean per sequence, then over sequences (the paper's formula)."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column with the raw text (ignored for input_ids)."})
    max_length: int = field(default=256, metadata={"help": "Truncate texts to this many tokens (paper: 256)."})
    append_eos: bool = field(
        default=False,
        metadata={"help": "End every text with the tokenizer's EOS token, so the model learns to stop."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the text column itself."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}.")
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}.")
        if self.contrastive_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"contrastive_normalization must be one of {NORMALIZATIONS}, got {self.contrastive_normalization!r}."
            )
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (a next-token target needs two tokens), got {self.max_length}.")


class CausalLMCollator:
    """Rows -> right-padded ``input_ids``, ``attention_mask`` [B, L] and ``labels`` (input ids, -100 on padding).

    A row holds ``text_column`` (tokenised here, truncated to ``max_length``) or pre-tokenised ``input_ids``.
    The pad id only fills positions the mask hides: the tokenizer's pad, else its EOS, else 0.
    """

    def __init__(self, tokenizer, text_column: str = "text", max_length: int = 256, append_eos: bool = False):
        if append_eos and tokenizer.eos_token_id is None:
            raise ValueError("append_eos=True, but the tokenizer has no eos_token.")
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.max_length = max_length
        self.append_eos = append_eos
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = pad if pad is not None else 0

    def token_ids(self, row: dict) -> list[int]:
        budget = self.max_length - int(self.append_eos)
        if "input_ids" in row:
            ids = list(row["input_ids"])[:budget]
        else:
            ids = self.tokenizer(row[self.text_column], truncation=True, max_length=budget)["input_ids"]
        return ids + [self.tokenizer.eos_token_id] if self.append_eos else ids

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [self.token_ids(row) for row in rows]
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and the number of targets: logits [B, L, V] predict labels shifted by one.

    ``labels`` [B, L] are the unshifted input ids with -100 where nothing is predicted (padding). Computed in
    float32 at least (half-precision log-softmax loses the small probabilities).
    """
    shifted_logits = logits[:, :-1]
    shifted_logits = shifted_logits if shifted_logits.element_size() >= 4 else shifted_logits.float()
    targets = labels[:, 1:]
    total = F.cross_entropy(shifted_logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return total, (targets != -100).sum()


class SimCTGTrainer(LossOnlyPrediction, Trainer):
    """Train an ``AutoModelForCausalLM`` (a PEFT-wrapped one works too) with SimCTG (see the module docstring).

    Args:
        model: the causal LM.
        args: a :class:`SimCTGConfig`.
        train_dataset / eval_dataset: rows with ``args.text_column`` or ``input_ids``.
        processing_class: the tokenizer (required unless ``data_collator`` is given).

    Logs ``mle_loss`` (token-weighted over the logging window) and ``contrastive_loss`` next to ``loss``; evaluation
    adds ``eval_mle_loss``, ``eval_perplexity`` (``exp`` of the token-weighted MLE, the official checkpoint
    criterion) and ``eval_contrastive_loss`` (under DDP these two terms are this process's share; ``loss`` and
    ``eval_loss`` are the Trainer's usual averages).
    """

    _tag_names = ["hf_contrastive", NAME, "contrastive-search", "text-generation"]
    # compute_loss returns a per-micro-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: SimCTGConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        data_collator=None,
        **kwargs,
    ) -> None:
        args = args or SimCTGConfig(output_dir="outputs")
        if not isinstance(args, SimCTGConfig):
            raise TypeError(f"args must be a SimCTGConfig, got {type(args).__name__}.")
        check_causal_lm(model)
        for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if dataset is not None:
                check_columns(dataset, args.text_column, name)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("SimCTGTrainer needs processing_class (the tokenizer) or a data_collator.")
            data_collator = CausalLMCollator(processing_class, args.text_column, args.max_length, args.append_eos)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            **kwargs,
        )
        # Per mode: summed next-token NLL, target count, summed contrastive loss, batches (read when logging).
        self._term_sums: dict[str, list[torch.Tensor | float]] = {}

    # ----------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True
        )
        if outputs.hidden_states is None:
            raise ValueError(
                f"{type(model).__name__} returned no hidden states with output_hidden_states=True: SimCTG needs "
                "the last layer's token representations."
            )
        nll_sum, targets = next_token_loss(outputs.logits, inputs["labels"])
        mle = nll_sum / targets.clamp(min=1)
        weight = self.args.contrastive_weight
        with torch.set_grad_enabled(torch.is_grad_enabled() and weight > 0):
            contrastive = simctg_contrastive_loss(
                outputs.hidden_states[-1],
                inputs["attention_mask"],
                self.args.margin,
                self.args.contrastive_normalization,
            )
        loss = mle + weight * contrastive if weight > 0 else mle
        self._record_terms("train" if model.training else "eval", nll_sum, targets, contrastive)
        return (loss, outputs) if return_outputs else loss

    # ----------------------------------------------------------------------------------------------- logging
    def _record_terms(self, mode: str, nll_sum: torch.Tensor, targets: torch.Tensor, contrastive: torch.Tensor):
        """Sum the terms on the device; they are read (one sync) only when the Trainer logs."""
        sums = self._term_sums.setdefault(mode, [0.0, 0.0, 0.0, 0])
        sums[0] = sums[0] + nll_sum.detach().float()
        sums[1] = sums[1] + targets.detach().float()
        sums[2] = sums[2] + contrastive.detach().float()
        sums[3] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode, prefix = ("eval", "eval_") if "eval_loss" in logs else ("train", "")
        if ("loss" in logs or "eval_loss" in logs) and mode in self._term_sums:
            nll_sum, targets, contrastive_sum, batches = self._term_sums.pop(mode)
            mle = float(nll_sum) / max(float(targets), 1.0)
            logs[f"{prefix}mle_loss"] = round(mle, 4)
            logs[f"{prefix}contrastive_loss"] = round(float(contrastive_sum) / batches, 4)
            if mode == "eval":
                logs["eval_perplexity"] = round(math.exp(min(mle, 50.0)), 4)
        super().log(logs, start_time)

    # ----------------------------------------------------------------------------------------------- model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        eval_results: list[CardEvalResult] | None = None,
        tags: list[str] | None = None,
        language: str | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md`` into ``output_dir`` (``push_to_hub`` calls it too): a text-generation card."""
        if not self.is_world_process_zero():
            return
        repo_id = card_repo_id(self.args, model_name)
        datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
        card = simctg_model_card(
            repo_id=repo_id,
            args=self.args,
            base_model=finetuned_from or getattr(self._base_model().config, "name_or_path", None) or None,
            datasets=datasets,
            language=language,
            license=license,
            tags=[*self._tag_names, *(tags or [])],
            details=self._model_details(),
            dataset_stats=self._dataset_stats(),
            training_summary=self._training_summary(),
            eval_results=eval_results or [],
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _base_model(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _model_details(self) -> dict[str, Any]:
        base = self._base_model()
        details = {
            "architecture": type(base).__name__,
            "parameters": sum(p.numel() for p in base.parameters()),
            "max_length": self.args.max_length,
        }
        if self.model is not base:
            details["adapter"] = "PEFT (see adapter_config.json)"
        return details

    def _dataset_stats(self) -> dict[str, Any] | None:
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            return None
        column = self.args.text_column
        if column in (getattr(dataset, "column_names", None) or dataset[0].keys()):
            return dataset_statistics(dataset, [column], self.processing_class)
        return {"rows": len(dataset), "columns": list(getattr(dataset, "column_names", []) or dataset[0].keys())}

    def _training_summary(self) -> dict[str, Any]:
        history = self.state.log_history
        summary: dict[str, Any] = {"steps": self.state.global_step, "epochs": round(self.state.epoch or 0.0, 3)}
        for key in ("loss", "mle_loss", "contrastive_loss", "eval_mle_loss", "eval_perplexity"):
            values = [entry[key] for entry in history if key in entry]
            if values:
                summary[f"final {key.replace('_', ' ')}"] = values[-1]
        return summary


def check_causal_lm(model) -> None:
    """Refuse a model SimCTG cannot train: none, encoder-decoder, or without an LM head."""
    if model is None:
        raise ValueError("SimCTGTrainer needs a model (an AutoModelForCausalLM).")
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"SimCTGTrainer trains decoder-only causal LMs; {type(model).__name__} is encoder-decoder.")
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise ValueError(
            f"{type(model).__name__} has no LM head (get_output_embeddings() is None): load it with "
            "AutoModelForCausalLM."
        )


def check_columns(dataset, text_column: str, name: str) -> None:
    """Raise a ValueError naming the dataset when it has neither the text column nor ``input_ids``."""
    columns = getattr(dataset, "column_names", None) or (list(dataset[0].keys()) if len(dataset) else [])
    if text_column not in columns and "input_ids" not in columns:
        raise ValueError(
            f"{name} needs a {text_column!r} column (raw text) or an 'input_ids' column (token ids); it has "
            f"{sorted(columns)}. Set text_column or rename the column."
        )


# ----------------------------------------------------------------------------------------------- the card
CARD_CITATIONS = (CITATION, CONTRASTIVE_SEARCH_CITATION, HF_CONTRASTIVE_CITATION)


def _usage(repo_id: str) -> str:
    return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_contrastive.generation import contrastive_search

model = AutoModelForCausalLM.from_pretrained({json.dumps(repo_id)}).eval()
tokenizer = AutoTokenizer.from_pretrained({json.dumps(repo_id)}, padding_side="left")
inputs = tokenizer(["The history of the city"], return_tensors="pt")
ids = contrastive_search(model, **inputs, top_k=5, penalty_alpha=0.6, max_new_tokens=64)
print(tokenizer.batch_decode(ids, skip_special_tokens=True))
```

The same decoder runs inside `generate`: `model.generate(**inputs, custom_generate=contrastive_search_decoding,
penalty_alpha=0.6, top_k=5)` with `from hf_contrastive.generation import contrastive_search_decoding`."""


def _dataset_text(stats: dict[str, Any]) -> str:
    """Rows, columns and, when measured, text lengths (see ``hub.dataset_statistics``)."""
    lines = [f"- Rows: {stats['rows']:,}", f"- Columns: {', '.join(f'`{c}`' for c in stats['columns'])}"]
    for column, length in stats.get("lengths", {}).items():
        lines.append(
            f"- `{column}` length in {stats['length_unit']} (first {stats['sampled_rows']:,} rows): "
            f"min {length['min']}, mean {length['mean']}, max {length['max']}"
        )
    return "\n".join(lines)


def simctg_model_card(
    repo_id: str,
    args: SimCTGConfig,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    language: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    details: dict[str, Any] | None = None,
    dataset_stats: dict[str, Any] | None = None,
    training_summary: dict[str, Any] | None = None,
    eval_results: list[CardEvalResult] | None = None,
) -> ModelCard:
    """The card of a SimCTG-trained causal LM: Hub metadata, a contrastive-search usage snippet, the objective's
    settings, hyperparameters (non-default first), training log, evaluation, versions and BibTeX."""
    datasets = datasets or []
    title = repo_id.rstrip("/").split("/")[-1]
    arxiv_tags = [f"arxiv:{PAPER}", f"arxiv:{CONTRASTIVE_SEARCH_PAPER}"]
    metadata = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        language=language,
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[d for d in datasets if is_hub_id(d)] or None,
        tags=list(dict.fromkeys([*(tags or []), *arxiv_tags])),
        model_name=title if eval_results else None,
        eval_results=[result.to_eval_result() for result in eval_results or []] or None,
    )
    summary = (
        f"A causal language model trained with SimCTG ([arXiv:{PAPER}](https://arxiv.org/abs/{PAPER})): "
        f"next-token cross-entropy plus a token-level contrastive loss with margin {args.margin} (weight "
        f"{args.contrastive_weight}), which spreads its token representations apart, so that contrastive search "
        f"([arXiv:{CONTRASTIVE_SEARCH_PAPER}](https://arxiv.org/abs/{CONTRASTIVE_SEARCH_PAPER})) avoids repetition"
    )
    summary += f"; fine-tuned from `{base_model}`" if base_model else ""
    summary += f", on {', '.join(f'`{d}`' for d in datasets)}" if datasets else ""
    summary += ". Trained with the `hf_contrastive` library."
    non_default, default = split_non_default_args(args)
    objective = {
        "margin": args.margin,
        "contrastive_weight": args.contrastive_weight,
        "contrastive_normalization": args.contrastive_normalization,
        "max_length": args.max_length,
        "append_eos": args.append_eos,
    }
    sections = [
        f"---\n{metadata.to_yaml()}\n---",
        f"# {title}",
        summary,
        "## Usage",
        _usage(repo_id),
        "## Model details",
        bullets((f"**{k.replace('_', ' ').capitalize()}**", format_value(v)) for k, v in (details or {}).items()),
    ]
    if eval_results:
        rows = [
            (r.dataset_name, r.dataset_split or "", r.metric_name or r.metric_type, f"{r.value:.4f}")
            for r in eval_results
        ]
        sections += ["## Evaluation", markdown_table(("Dataset", "Split", "Metric", "Value"), rows)]
    sections += [
        "## Training details",
        "### Objective: SimCTG (`L = L_MLE + w * L_CL`)",
        markdown_table(("Setting", "Value"), [(f"`{k}`", format_value(v)) for k, v in objective.items()]),
    ]
    if dataset_stats:
        sections += ["### Training data", _dataset_text(dataset_stats)]
    sections += [
        "### Hyperparameters",
        "Changed from the `TrainingArguments` defaults:",
        bullets((f"`{k}`", format_value(v)) for k, v in non_default.items()),
        "<details><summary>Left at their defaults</summary>\n\n"
        + bullets((f"`{k}`", format_value(v)) for k, v in default.items())
        + "\n\n</details>",
    ]
    if training_summary:
        rows = [(k, format_value(round(v, 4) if isinstance(v, float) else v)) for k, v in training_summary.items()]
        sections += ["### Training log", markdown_table(("Quantity", "Value"), rows)]
    sections += ["## Framework versions", bullets(framework_versions().items()), "## Citation"]
    sections += [f"```bibtex\n{citation.strip()}\n```" for citation in CARD_CITATIONS]
    return ModelCard("\n\n".join(sections) + "\n")
