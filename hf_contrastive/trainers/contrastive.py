"""ContrastiveTrainer: a ``transformers.Trainer`` for any objective over an embedding matrix.

The trainer owns what is common to every in-batch objective: one merged forward for all text columns, the
objective picked by name from the config, the gradient cache, the global no-duplicates sampler, exact gathers
across ranks (inside the objective), evaluator hooks, start-up checks and the model card. Objectives only see
``{column: embeddings}``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from ..cache import GradientCache, embed_by_plan, plan_mini_batches
from ..data import ContrastiveCollator, NoDuplicatesBatchSampler, infer_text_columns, validate_contrastive_columns
from ..hub import CardEvalResult, ContrastiveCardData, build_model_card, dataset_statistics, encoder_details
from ..models.encoder import ContrastiveEncoder
from ..models.packed import enable_unpadding
from ..objectives import ContrastiveObjective, build_objective, split_columns
from ..objectives.info_nce import negative_columns
from .common import (
    GuardedTrainingArguments,
    ObjectiveParameters,
    TrainerBookkeeping,
    card_repo_id,
    evaluation_by_evaluator_only,
)

logger = logging.getLogger(__name__)


@dataclass
class ContrastiveConfig(GuardedTrainingArguments):
    """``TrainingArguments`` plus the contrastive settings; every field can be set from a recipe YAML."""

    objective: str = field(default="info_nce", metadata={"help": "Objective name (see hf_contrastive.objectives)."})
    objective_options: dict | str | None = field(
        default=None,
        metadata={
            "help": "Objective-specific hyperparameters, e.g. {num_groups: 4} (a YAML mapping, or JSON on the "
            "command line); they override the shared fields below, and unknown names are refused."
        },
    )
    temperature: float = field(default=0.05, metadata={"help": "Softmax temperature tau (SimCSE: 0.05)."})
    learnable_temperature: bool = field(default=False, metadata={"help": "Learn log(1/tau), CLIP-style."})
    similarity: str = field(default="cosine", metadata={"help": "'cosine' or 'dot'."})
    symmetric: bool = field(default=False, metadata={"help": "Add the positive-to-anchor direction."})
    mask_false_negatives: bool = field(
        default=True, metadata={"help": "Mask in-batch candidates whose input text equals the anchor's or positive's."}
    )
    gather_across_devices: bool = field(
        default=True, metadata={"help": "Negatives from every rank (local loss, exact gradients)."}
    )
    gradient_cache: bool = field(
        default=False, metadata={"help": "GradCache: large batches at the memory of one mini-batch."}
    )
    cache_token_budget: int | None = field(
        default=None,
        metadata={
            "help": "Tokens (rows x padded length) per cached mini-batch; bounds memory. Default: 1024 on CPU, "
            "8192 on GPU (BERT-base bf16 fits in ~8 GiB)."
        },
    )
    forward_token_budget: int | None = field(
        default=None,
        metadata={
            "help": "Uncached step: embed the merged batch in length-sorted chunks of at most this many padded "
            "tokens (all with gradient) to cut padding. Default: 1024 on CPU, 65536 on GPU; 0 = one padded forward."
        },
    )
    no_duplicates_sampler: bool = field(
        default=True, metadata={"help": "Build global batches with no repeated text across ranks."}
    )
    unpad_inputs: bool = field(
        default=False,
        metadata={
            "help": "Padding-free forward: all real tokens of a batch in one row with variable-length attention "
            "(flash varlen on CUDA in bf16/fp16). No attention-probability dropout on that path (see models/packed.py)."
        },
    )
    text_views: int = field(
        default=2,
        metadata={
            "help": "Views of a single `text` column per row (dropout makes them differ): anchor, positive, ..."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Truncate texts to this many tokens."})
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Frozen teacher for objectives that need one (DebCSE): a saved ContrastiveEncoder, or a backbone "
            "wrapped with the trained model's pooling; it must use the same tokenizer. Default: a frozen copy of the "
            "model as it is when the trainer is built."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: contrastive columns are not model forward arguments."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Equal batch sizes on every rank (required by the gather)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.objective_options, str):
            self.objective_options = json.loads(self.objective_options)

    def objective_kwargs(self) -> dict[str, Any]:
        """The shared fields offered to every objective (``build_objective`` keeps those it accepts)."""
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "similarity": self.similarity,
            "symmetric": self.symmetric,
            "mask_false_negatives": self.mask_false_negatives,
            "gather_across_devices": self.gather_across_devices,
        }


# CPU: measured with benchmarks/embeddings.py on one thread (tiny BERT, lengths 16-128): 1024-token chunks were the
# fastest of 512..16384 (1.6x the single padded forward). CUDA: not measured yet. On an H200 (BERT-base, bf16)
# length-sorted chunks of 512 rows gained 1.08x and chunks of 256 rows lost, so the forward default keeps >= 512 rows
# of 128 tokens; 8192 cache tokens is the estimate that keeps BERT-base under 8 GiB. unpad_inputs is the GPU path.
DEFAULT_TOKEN_BUDGETS = {"cpu": {"forward": 1024, "cache": 1024}, "cuda": {"forward": 65536, "cache": 8192}}


def resolve_token_budget(value: int | None, kind: str, device: torch.device) -> int:
    """The configured budget, or the default for ``kind`` ("forward" / "cache") on this device type."""
    if value is not None:
        return value
    return DEFAULT_TOKEN_BUDGETS.get(device.type, DEFAULT_TOKEN_BUDGETS["cuda"])[kind]


class ContrastiveTrainer(ObjectiveParameters, TrainerBookkeeping, Trainer):
    """Train a :class:`~hf_contrastive.ContrastiveEncoder` (or any model returning ``.embeddings``).

    Args:
        model: the encoder (a PEFT-wrapped one works too).
        args: a :class:`ContrastiveConfig`.
        train_dataset / eval_dataset: ``datasets.Dataset`` with a ``text`` column (unsupervised, two dropout
            views) or ``anchor, positive[, negative_1..k]``.
        processing_class: the tokenizer (required unless ``data_collator`` is given).
        objective: an objective instance; default: ``args.objective`` built with the shared fields and
            ``args.objective_options``.
        evaluator: callable ``evaluator(encode_fn) -> dict[str, float]`` (e.g. ``STSEvaluator``), run on the main
            process at each evaluation, its metrics broadcast to all ranks.
        text_columns: the ordered text columns; inferred from ``train_dataset`` when omitted.
        teacher: a frozen teacher model (same tokenizer) for an objective with ``needs_teacher_embeddings``;
            default: ``args.teacher_name_or_path`` if set, else a deep copy of ``model`` taken here, before any
            training (hence the *initial* model, also when resuming from a checkpoint). The teacher is put in eval
            mode with ``requires_grad=False`` on the training device; it is not saved, not in the optimizer, not
            wrapped by DDP/FSDP (a full copy on every rank), and embeds every step's merged batch without gradient
            into ``batch["teacher_embeddings"]`` [C*B, D_teacher] before the objective runs.
    """

    _tag_names = ["hf_contrastive", "contrastive-learning", "sentence-embeddings"]
    # compute_loss returns a per-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: ContrastiveConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        objective: ContrastiveObjective | None = None,
        evaluator=None,
        text_columns: list[str] | None = None,
        data_collator=None,
        teacher=None,
        **kwargs,
    ) -> None:
        args = args or ContrastiveConfig(output_dir="outputs")
        if not isinstance(args, ContrastiveConfig):
            raise TypeError(f"args must be a ContrastiveConfig, got {type(args).__name__}.")
        # The model's embedding size is offered too (objectives with a head need it); explicit options win.
        defaults = {
            **args.objective_kwargs(),
            "embedding_dim": getattr(getattr(model, "config", None), "embedding_dim", None),
        }
        self.objective = objective or build_objective(
            args.objective, defaults=defaults, **(args.objective_options or {})
        )
        self.evaluator = evaluator
        self.text_columns = text_columns or (infer_text_columns(train_dataset.column_names) if train_dataset else None)
        if train_dataset is not None:
            validate_contrastive_columns(train_dataset, self.text_columns)
        if eval_dataset is not None:
            validate_contrastive_columns(eval_dataset, self.text_columns)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("ContrastiveTrainer needs processing_class (the tokenizer) or a data_collator.")
            check_tokenizer_matches_model(processing_class, model)
            data_collator = ContrastiveCollator(
                processing_class, self.text_columns, max_length=args.max_length, single_column_views=args.text_views
            )
        with evaluation_by_evaluator_only(args, evaluator, eval_dataset):
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                data_collator=data_collator,
                **kwargs,
            )
        self.objective.to(self.args.device)
        self._encoder().config.training_objective = self.objective.name  # saved with the model; read by its card
        self.padding_side = getattr(processing_class, "padding_side", "right")
        self.forward_token_budget = resolve_token_budget(args.forward_token_budget, "forward", self.args.device)
        self.cache_token_budget = resolve_token_budget(args.cache_token_budget, "cache", self.args.device)
        self.gradient_cache = (
            GradientCache(self.cache_token_budget, padding_side=self.padding_side) if args.gradient_cache else None
        )
        self.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # the loop resets it per step
        self._init_objective_parameters()
        self._init_bookkeeping()
        self.check_configuration()
        self.teacher, self.teacher_description = self._build_teacher(model, teacher)

    # ----------------------------------------------------------------------------------------------- checks
    def check_configuration(self) -> None:
        """Refuse flag combinations that would train silently wrong; called before any step."""
        args = self.args
        if args.unpad_inputs:
            enable_unpadding(self._encoder())  # refuses an unsupported backbone now, not at the first step
        if args.gradient_cache and self.is_deepspeed_enabled:
            raise ValueError(
                "gradient_cache=True is not supported with DeepSpeed (its engine owns backward); use DDP or FSDP."
            )
        if args.gradient_cache and self.cache_token_budget < args.max_length:
            raise ValueError(
                f"cache_token_budget={self.cache_token_budget} is smaller than max_length={args.max_length}: a "
                "mini-batch of one long row would exceed the memory the budget promises."
            )
        if args.world_size > 1 and args.gather_across_devices and not args.dataloader_drop_last:
            raise ValueError(
                "gather_across_devices=True needs dataloader_drop_last=True: every rank must gather the same "
                "number of rows."
            )
        self.check_negatives()

    def check_negatives(self) -> None:
        """In-batch negatives need at least 2 (gathered) rows unless a hard-negative column brings its own."""
        if self.text_columns is None:
            return
        args = self.args
        has_negatives = bool(negative_columns(tuple(self._role_names())))
        global_batch = args.per_device_train_batch_size * (args.world_size if args.gather_across_devices else 1)
        if global_batch < 2 and not has_negatives:
            raise ValueError(
                f"In-batch negatives need at least 2 rows per (gathered) batch, but the batch holds {global_batch} "
                "and there is no negative column: raise per_device_train_batch_size."
            )

    # ----------------------------------------------------------------------------------------------- teacher
    def _build_teacher(self, model, teacher) -> tuple[Any, str | None]:
        """The frozen teacher (eval, no grad, on the device) and how it was obtained; ``(None, None)`` if unused."""
        explicit = teacher is not None or self.args.teacher_name_or_path is not None
        if not getattr(self.objective, "needs_teacher_embeddings", False):
            if explicit:
                raise ValueError(
                    f"A teacher was given, but the {self.objective.name} objective (as configured) does not use "
                    "teacher embeddings: remove teacher / teacher_name_or_path, or configure the objective to use it."
                )
            return None, None
        if teacher is not None:
            description = "frozen model passed as teacher"
        elif self.args.teacher_name_or_path is not None:
            pooling = getattr(self._encoder().config, "pooling", "mean")  # a bare backbone pools like the student
            teacher = ContrastiveEncoder.load(self.args.teacher_name_or_path, pooling=pooling)
            description = f"frozen {self.args.teacher_name_or_path}"
        elif model is not None:
            teacher = copy.deepcopy(model)
            description = "frozen copy of the initial model"
        else:
            raise ValueError(
                f"The {self.objective.name} objective needs a teacher: pass model, teacher or teacher_name_or_path."
            )
        check_tokenizer_matches_model(self.processing_class, teacher)
        teacher.requires_grad_(False)
        return teacher.eval().to(self.args.device), description

    def add_teacher_embeddings(self, inputs: dict) -> None:
        """Put the teacher's embeddings of the merged batch in ``inputs["teacher_embeddings"]`` [C*B, D_teacher].

        No gradient, eval mode (no dropout, no RNG draw), under the step's autocast; uncached steps embed like the
        model (``forward_token_budget`` chunks), cached steps in the gradient cache's token-budgeted mini-batches.
        """
        if self.teacher is None:
            return
        features = self.model_features(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.gradient_cache is None:
                embeddings = self.embed(self.teacher, features)
            else:
                plan = self.gradient_cache.plan(features["attention_mask"])
                embeddings = embed_by_plan(partial(self.model_embed, self.teacher), features, plan, self.padding_side)
        inputs["teacher_embeddings"] = embeddings

    def _role_names(self) -> tuple[str, ...]:
        collator = self.data_collator
        return tuple(getattr(collator, "column_names", None) or self.text_columns)

    # ----------------------------------------------------------------------------------------------- facts
    def contrastive_facts(self) -> dict[str, Any]:
        """What a reader of the run needs to know about its batches and negatives (logged and put in the card)."""
        args = self.args
        world = args.world_size if args.gather_across_devices else 1
        global_batch = args.per_device_train_batch_size * args.world_size
        gathered_rows = args.per_device_train_batch_size * world
        negatives_per_row = len(negative_columns(self._role_names()))
        return {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch": global_batch,
            "effective_negatives_per_anchor": self.objective.effective_negatives(gathered_rows, negatives_per_row),
            "hard_negatives_per_anchor": negatives_per_row,
            "objective": self.objective.name,
            "temperature": getattr(self.objective, "temperature", None),
            "learnable_temperature": getattr(self.objective, "learnable_temperature", None),
            "gather_across_devices": args.gather_across_devices,
            "gradient_cache": args.gradient_cache,
            "cache_token_budget": self.cache_token_budget if args.gradient_cache else None,
            "forward_token_budget": None if args.gradient_cache else (self.forward_token_budget or None),
            "unpad_inputs": args.unpad_inputs,
            "sampler": "no-duplicates (global)" if args.no_duplicates_sampler else "random",
            "mask_false_negatives": getattr(self.objective, "mask_false_negatives", None),
            **({"teacher": self.teacher_description} if self.teacher is not None else {}),
        }

    def start_message(self, facts: dict[str, Any]) -> str:
        """One line logged when training starts: batches, negatives, cache and sampler."""
        message = (
            f"Contrastive training: global batch {facts['global_batch']} over {facts['world_size']} process(es), "
            f"{facts['effective_negatives_per_anchor']} negatives per anchor "
            f"({facts['hard_negatives_per_anchor']} hard), gradient cache "
            f"{'on (' + str(facts['cache_token_budget']) + ' tokens)' if facts['gradient_cache'] else 'off'}, "
            f"sampler {facts['sampler']}."
        )
        if self.args.gradient_accumulation_steps > 1:
            message += " Gradient accumulation adds no negatives; use gradient_cache for larger in-batch pools."
        return message

    def train(self, *args, **kwargs):
        message = self.start_message(self.contrastive_facts())
        if self.is_world_process_zero():
            logger.warning(message)
        return super().train(*args, **kwargs)

    # ----------------------------------------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        if not self.args.no_duplicates_sampler or self.train_dataset is None:
            return super().get_train_dataloader()
        sampler = NoDuplicatesBatchSampler(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            text_columns=self.text_columns,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=True,
        )
        if len(sampler) == 0:
            raise ValueError(
                f"The no-duplicates sampler found no global batch of {sampler.global_batch_size} rows without a "
                "repeated text: the columns repeat too much (e.g. label descriptions). Set no_duplicates_sampler=False "
                "(false negatives are still masked by input hash) or lower the batch size."
            )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type != "cpu",
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        return self.accelerator.prepare(loader)

    # ----------------------------------------------------------------------------------------------- loss
    def model_embed(self, model, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """One model call: token features [n, L] -> embeddings [n, D] (packed when ``unpad_inputs``)."""
        if self.args.unpad_inputs:
            return model(**features, unpad=True).embeddings
        return model(**features).embeddings

    def embed(self, model, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed the merged batch [N, L] -> [N, D], in length-sorted chunks when ``forward_token_budget`` is set.

        Chunks (planned like the gradient cache's mini-batches, all with gradient) remove most padding: same
        result, fewer positions computed; and every chunk is smaller than one merged forward.
        """
        if not self.forward_token_budget or self.args.unpad_inputs:  # a packed forward has no padding to cut
            return self.model_embed(model, features)
        plan = plan_mini_batches(features["attention_mask"].sum(dim=1).tolist(), self.forward_token_budget)
        if len(plan) == 1 and plan[0].length == features["attention_mask"].shape[1]:
            return self.model_embed(model, features)
        return embed_by_plan(partial(self.model_embed, model), features, plan, self.padding_side)

    @staticmethod
    def model_features(inputs: dict) -> dict[str, torch.Tensor]:
        return {key: inputs[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in inputs}

    def objective_loss(self, embeddings: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, dict]:
        output = self.objective(split_columns(embeddings, tuple(inputs["column_names"])), inputs)
        self._check_finite(output.loss)
        return output.loss, output.logs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.add_teacher_embeddings(inputs)
        embeddings = self.embed(model, self.model_features(inputs))
        loss, logs = self.objective_loss(embeddings, inputs)
        if model.training:
            self._accumulate_logs(logs)
        return (loss, {"embeddings": embeddings}) if return_outputs else loss

    def _cached_training_step(self, model, inputs) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        self.add_teacher_embeddings(inputs)

        def embed(features):
            with self.compute_loss_context_manager():
                return self.model_embed(model, features)

        loss, logs = self.gradient_cache.step(
            embed,
            self.model_features(inputs),
            loss_fn=lambda embeddings: self.objective_loss(embeddings, inputs),
            loss_scale=1.0 / self.current_gradient_accumulation_steps,
            backward=self.accelerator.backward,
            no_sync=partial(self.accelerator.no_sync, model) if self.args.world_size > 1 else None,
        )
        self._accumulate_logs(logs)
        return loss / self.current_gradient_accumulation_steps

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self):
        """``encode_fn(texts) -> [n, D]`` with the model as it is now."""
        model = self.accelerator.unwrap_model(self.model)
        return partial(
            model.encode,
            tokenizer=self.processing_class,
            batch_size=self.args.eval_batch_size,
            max_length=self.args.max_length,
        )

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
        """Write ``README.md`` into ``output_dir`` from what this run knows (``push_to_hub`` calls it too).

        ``eval_results`` default to the last ``eval_*`` metrics logged by the evaluator.
        """
        if not self.is_world_process_zero():
            return
        card = build_model_card(
            ContrastiveCardData(
                objective=self.objective.name,
                repo_id=card_repo_id(self.args, model_name),
                model_name=model_name,
                base_model=finetuned_from or self._base_model_name(),
                paper=self.objective.paper,
                objective_config=self.objective.get_config_dict(),
                datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
                language=language,
                license=license,
                tags=[*self._tag_names, *(tags or [])],
                model_details=self._model_details(),
                dataset_stats=self._dataset_stats(),
                contrastive_facts=self.contrastive_facts(),
                training_args=self.args,
                eval_results=eval_results if eval_results is not None else self._logged_eval_results(),
                training_summary=self._training_summary(),
                citations=[self.objective.citation] if self.objective.citation else [],
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _encoder(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _base_model_name(self) -> str | None:
        return getattr(self._encoder().config, "base_model_name_or_path", None)

    def _model_details(self) -> dict[str, Any]:
        details = {**encoder_details(self._encoder()), "max_length": self.args.max_length}
        if self.model is not self._encoder():
            details["adapter"] = "PEFT (see adapter_config.json)"
        return details

    def _dataset_stats(self) -> dict[str, Any] | None:
        if self.train_dataset is None or not hasattr(self.train_dataset, "__len__") or len(self.train_dataset) == 0:
            return None
        return dataset_statistics(self.train_dataset, self.text_columns, self.processing_class)


def check_tokenizer_matches_model(tokenizer, model) -> None:
    """Refuse a tokenizer whose ids the model's embedding table cannot hold (a mismatched tokenizer)."""
    if tokenizer is None or model is None or not hasattr(model, "get_input_embeddings"):
        return
    try:
        vocab_rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return
    if len(tokenizer) > vocab_rows:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding table has {vocab_rows} rows: "
            "they do not belong together. Load the tokenizer saved with the model, or resize the embeddings."
        )
