"""RerankerTrainer: train an answer-token reranker (LLM or encoder) with SFT, full-vocabulary SFT, CL or the URL probes.

Dai et al. 2025 (arXiv:2510.14824) compare two ways to train a pointwise LLM reranker on the same data: SFT on a
"yes"/"no" answer token and contrastive learning over one positive and n negatives per query, and split each
gradient into a *weight* (how much a pair is updated) and a *direction* (which way). This trainer offers both, the
full-vocabulary SFT that ``trl``'s ``SFTTrainer`` runs, and the Unified Reranking Loss that mixes the weight of one
with the direction of the other; with ``diagnostics`` it logs the weights and directions during training (see
:mod:`hf_contrastive.objectives.reranking`).

    args = RerankerConfig(output_dir="out", loss="sft", per_device_train_batch_size=4, learning_rate=1e-4)
    trainer = RerankerTrainer(model, args, train_dataset=groups, processing_class=tokenizer, evaluator=evaluator)
    trainer.train()
    reranker = AnswerTokenReranker.from_pretrained("out")   # after trainer.save_model()

Rows: group rows ``{query, positive, negatives[, instruction]}`` for every loss, or pair rows ``{query, document,
label[, instruction]}`` for the SFT losses (see :mod:`hf_contrastive.data.reranking`). SFT on group rows flattens each
group into its pairs, so a run of each loss on the same dataset sees the same pairs per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from transformers import Trainer

from ..data.reranking import validate_reranker_dataset
from ..hub import CardEvalResult, dataset_statistics
from ..models.reranker import AnswerTokenReranker, RerankerCardData, RerankerSettings, reranker_model_card
from ..objectives.reranking import CL_SCORES, LOSSES, SCHEMES, SCORE_KINDS, URL_NORMALIZATIONS, RerankingObjective
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id, evaluation_by_evaluator_only

_SETTINGS_FIELDS = ("prompt_template", "instruction", "yes_token", "no_token", "max_length")


@dataclass
class RerankerConfig(GuardedTrainingArguments):
    """``TrainingArguments`` plus the reranker's loss, prompt and answer settings (every field fits a recipe YAML)."""

    loss: str = field(
        default="sft",
        metadata={
            "help": f"One of {list(LOSSES)}: 'sft' = BCE on z_yes - z_no (two-way softmax); 'sft_full_vocab' = "
            "next-token CE over the vocabulary at the answer position (trl's SFTTrainer on a one-token completion); "
            "'contrastive' = listwise InfoNCE over 1 positive + n negatives per query; 'url' = Unified Reranking "
            "Loss (weight_scheme x direction_scheme)."
        },
    )
    weight_scheme: str = field(
        default="sft",
        metadata={"help": f"URL weight scheme {list(SCHEMES)}: CL group-softmax weights or SFT per-pair weights."},
    )
    direction_scheme: str = field(
        default="sft",
        metadata={"help": f"URL direction scheme {list(SCHEMES)}: CL moves z_yes (w_yes), SFT z_yes - z_no."},
    )
    url_normalization: str = field(
        default="auto",
        metadata={
            "help": f"URL normalisation {list(URL_NORMALIZATIONS)}; 'auto' = mean over groups for CL weights, over "
            "pairs for SFT weights (the paper's choice is unverified)."
        },
    )
    cl_score: str = field(
        default="yes_logit",
        metadata={"help": f"CL score {list(CL_SCORES)}: z_yes (the paper's reading) or log softmax_vocab(z)_yes."},
    )
    cl_temperature: float = field(default=1.0, metadata={"help": "tau of the CL softmax (the paper has none: 1.0)."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Prompt with {instruction} {query} {document}; the answer is read right after it. Default: the "
            "given AnswerTokenReranker's, else hf_contrastive.data.reranking.DEFAULT_PROMPT_TEMPLATE."
        },
    )
    instruction: str | None = field(
        default=None, metadata={"help": "Instruction for rows without one (default: the reranker's / the default)."}
    )
    yes_token: str | None = field(
        default=None, metadata={"help": "Exact 'yes' answer string, one token of the tokenizer (default 'yes')."}
    )
    no_token: str | None = field(
        default=None, metadata={"help": "Exact 'no' answer string, one token of the tokenizer (default 'no')."}
    )
    inference_score: str | None = field(
        default=None,
        metadata={
            "help": f"Score the saved reranker ranks by, {list(SCORE_KINDS)}. Default: the one that matches the loss "
            "(sft -> 'sft'; sft_full_vocab -> 'yes_logprob'; contrastive -> cl_score; url -> by direction_scheme)."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per prompt; documents are shortened to fit (default 512)."}
    )
    max_negatives: int | None = field(
        default=None, metadata={"help": "Use the first k negatives of each group (default: all of them)."}
    )
    diagnostics: bool = field(
        default=True,
        metadata={"help": "Log the SFT/CL weights on positives and negatives and the w_yes / w_yes - w_no norms."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: reranker rows are not model forward arguments."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.build_objective()  # refuses unknown loss / scheme names now, not at the first step
        if self.inference_score is not None and self.inference_score not in SCORE_KINDS:
            raise ValueError(
                f"inference_score must be one of {list(SCORE_KINDS)} or None, got {self.inference_score!r}."
            )

    def build_objective(self) -> RerankingObjective:
        return RerankingObjective(
            loss=self.loss,
            weight_scheme=self.weight_scheme,
            direction_scheme=self.direction_scheme,
            cl_score=self.cl_score,
            temperature=self.cl_temperature,
            url_normalization=self.url_normalization,
            diagnostics=self.diagnostics,
        )

    def settings_overrides(self) -> dict[str, Any]:
        """The prompt/answer fields set in this config (the others keep the reranker's values)."""
        return {name: getattr(self, name) for name in _SETTINGS_FIELDS if getattr(self, name) is not None}


class RerankerTrainer(TrainerBookkeeping, Trainer):
    """Train an :class:`~hf_contrastive.models.reranker.AnswerTokenReranker` with ``args.loss``.

    Args:
        model: an ``AnswerTokenReranker``, or a causal / masked LM (PEFT-wrapped or not) together with
            ``processing_class``. The config's prompt and answer fields override the reranker's settings.
        args: a :class:`RerankerConfig`.
        train_dataset / eval_dataset: group rows or pair rows (checked before training; contrastive losses need
            group rows with at least one negative each).
        processing_class: the tokenizer (required with a bare LM).
        evaluator: an object with ``score_pairs(pair_scorer) -> dict[str, float]`` (e.g. ``RerankingEvaluator``) or
            a callable ``evaluator(pair_scorer)``; run on the main process (every rank with ``runs_on_all_ranks``).
        data_collator: default :meth:`AnswerTokenReranker.collator`.

    The model in training is ``trainer.reranker`` (a new wrapper around the given model, with the config's settings
    and the inference score that matches the loss: a CL model is never scored with ``sigmoid(z_yes - z_no)``).
    ``save_model(dir)`` writes what ``AnswerTokenReranker.from_pretrained(dir)`` reads.
    """

    _tag_names = ["hf_contrastive", "reranker", "text-ranking"]
    # compute_loss returns a per-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: RerankerConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        evaluator=None,
        data_collator=None,
        **kwargs,
    ) -> None:
        args = args or RerankerConfig(output_dir="outputs")
        if not isinstance(args, RerankerConfig):
            raise TypeError(f"args must be a RerankerConfig, got {type(args).__name__}.")
        self.objective = args.build_objective()
        self.reranker = self._build_reranker(model, processing_class, args)
        self.reranker.settings.score = args.inference_score or self.objective.inference_score
        self.reranker.training_info = self.objective.get_config_dict()
        self.evaluator = evaluator
        for dataset in (train_dataset, eval_dataset):
            if dataset is not None:
                validate_reranker_dataset(dataset, require_negatives=self.objective.needs_groups)
        with evaluation_by_evaluator_only(args, evaluator, eval_dataset):
            super().__init__(
                model=self.reranker.model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=self.reranker.tokenizer,
                data_collator=data_collator or self.reranker.collator(args.max_negatives),
                **kwargs,
            )
        # The loss is a mean per batch, not per token: no label counting (nor its all-reduce) for num_items_in_batch.
        self.model_accepts_loss_kwargs = False
        self._init_bookkeeping()

    @staticmethod
    def _build_reranker(model, tokenizer, args: RerankerConfig) -> AnswerTokenReranker:
        if model is None:
            raise ValueError("RerankerTrainer needs a model: an AnswerTokenReranker or a causal / masked LM.")
        if isinstance(model, AnswerTokenReranker):
            settings = replace(model.settings, **args.settings_overrides())
            return AnswerTokenReranker(model.model, tokenizer or model.tokenizer, settings, model.model_kind)
        if tokenizer is None:
            raise ValueError("RerankerTrainer needs processing_class (the tokenizer) with a bare LM.")
        return AnswerTokenReranker(model, tokenizer, RerankerSettings(**args.settings_overrides()))

    # ----------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        answer_logits = self.reranker.answer_logits(inputs, model)
        answer_rows = self.reranker.answer_rows() if self.objective.diagnostics else None
        output = self.objective(answer_logits, inputs, self.reranker.answer_token_ids, answer_rows)
        self._check_finite(output.loss)
        if model.training:
            self._accumulate_logs(output.logs)
        return (output.loss, {"answer_logits": answer_logits}) if return_outputs else output.loss

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self):
        """``pair_scorer(queries, documents) -> list[float]`` with the model as it is now (eval mode, no grad)."""
        self.reranker.model = self.accelerator.unwrap_model(self.model)
        return partial(self.reranker.score, batch_size=self.args.eval_batch_size)

    def _call_evaluator(self) -> dict[str, float]:
        """``evaluator.score_pairs(pair_scorer)`` (e.g. ``RerankingEvaluator``), else ``evaluator(pair_scorer)``."""
        evaluate = getattr(self.evaluator, "score_pairs", self.evaluator)
        return evaluate(self.evaluator_argument())

    # ----------------------------------------------------------------------------------------------- saving, card
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            self.reranker.save_config(output_dir or self.args.output_dir)

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
        """Write the reranker card (``README.md``) into ``output_dir``; ``push_to_hub`` calls it too.

        ``eval_results`` default to the last ``eval_*`` metrics the evaluator logged.
        """
        if not self.is_world_process_zero():
            return
        if eval_results is None:
            eval_results = self._logged_eval_results(task_type="text-ranking", task_name="Reranking")
        data = RerankerCardData.from_reranker(
            self.reranker,
            repo_id=card_repo_id(self.args, model_name),
            model_name=model_name,
            datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
            dataset_stats=self._dataset_stats(),
            training_args=self.args,
            eval_results=eval_results,
            training_summary=self._training_summary(),
            tags=[*self._tag_names, *(tags or [])],
            language=language,
            license=license,
        )
        if finetuned_from:
            data.base_model = finetuned_from
        reranker_model_card(data).save(os.path.join(self.args.output_dir, "README.md"))

    def _dataset_stats(self, max_rows: int = 1000) -> dict[str, Any] | None:
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            return None
        columns = getattr(dataset, "column_names", None) or list(dataset[0])
        is_groups = "negatives" in columns
        text_columns = ["query", "positive"] if is_groups else ["query", "document"]
        stats = dataset_statistics(dataset, text_columns, self.reranker.tokenizer, max_rows=max_rows)
        if is_groups:
            counts = [len(dataset[i]["negatives"]) for i in range(min(len(dataset), max_rows))]
            stats["negatives_per_query"] = {
                "min": min(counts),
                "mean": round(sum(counts) / len(counts), 2),
                "max": max(counts),
            }
        return stats
