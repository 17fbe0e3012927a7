"""MultiModalTrainer: CLIP-style training of image, text and other modality columns with any objective.

The trainer embeds every collated column (``image*`` with the CLIP image tower, ``text*`` with the text tower, any
column through the model's ``embed_column``), hands ``{embedding name: [B, ...]}`` to the objective, and owns what is
common to every such objective: the objective's parameters (temperatures; a ``CLIPModel``'s ``logit_scale`` is
moved into the objective and written back on save), their clamp and gradient averaging, the multi-column gradient
cache, start-up checks of the data, evaluators called with ``embed(column, values)``, and the model card.

Launch (one process or ``accelerate launch``/``torchrun``): see ``recipes/clip_digits.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from ..cache import GradientCache
from ..data.multimodal import (
    MultiModalCollator,
    clip_processors,
    is_image_column,
    is_text_column,
    validate_multimodal_dataset,
)
from ..hub import CardEvalResult, ContrastiveCardData, build_model_card, dataset_statistics, encoder_details
from ..models.clip import image_embeddings, text_embeddings
from ..objectives import ContrastiveObjective, build_objective
from .common import (
    GuardedTrainingArguments,
    ObjectiveParameters,
    TrainerBookkeeping,
    card_repo_id,
    evaluation_by_evaluator_only,
)

logger = logging.getLogger(__name__)

ColumnFeatures = dict[str, dict[str, torch.Tensor]]  # {column: {feature name: [B, ...]}}
ColumnEmbeddings = dict[str, dict[str, torch.Tensor]]  # {column: {embedding name: [B, ...]}}


@dataclass
class MultiModalConfig(GuardedTrainingArguments):
    """``TrainingArguments`` plus the multimodal contrastive settings; every field can be set from a recipe YAML."""

    objective: str = field(default="clip", metadata={"help": "Objective name (see hf_contrastive.objectives)."})
    objective_options: dict | str | None = field(
        default=None,
        metadata={"help": "Objective hyperparameters, e.g. {label_smoothing: 0.1} (a YAML mapping or JSON)."},
    )
    gather_across_devices: bool = field(
        default=True, metadata={"help": "Negatives from every rank (local loss, exact gradients)."}
    )
    max_logit_scale: float = field(
        default=100.0,
        metadata={
            "help": "After each step every objective parameter named *log_scale is clamped to "
            "[ln(min_logit_scale), ln(max_logit_scale)]."
        },
    )
    min_logit_scale: float = field(
        default=1.0,
        metadata={"help": "Lower clamp of the learned 1/temperature (CLIP: 1; Symile's XOR example starts at 0.74)."},
    )
    gradient_cache: bool = field(
        default=False, metadata={"help": "GradCache over every column: large batches at the memory of mini-batches."}
    )
    cache_row_budget: int = field(
        default=64, metadata={"help": "Images (or vectors) per cached mini-batch of a non-text column."}
    )
    cache_token_budget: int = field(
        default=4096, metadata={"help": "Tokens (rows x padded length) per cached mini-batch of a text column."}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Require every image to be image_size x image_size pixels (set it when the image processor does "
            "not resize); None accepts any size."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Truncate texts to this many tokens (default: the text tower's max_position_embeddings)."},
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "A column of class labels, collated as batch['labels'] (objectives may use it)."},
    )
    validation_rows: int = field(
        default=256, metadata={"help": "Rows checked before training (all of a smaller dataset)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the columns are not model forward arguments."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Equal batch sizes on every rank (required by the gather)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.objective_options, str):
            self.objective_options = json.loads(self.objective_options)


@contextlib.contextmanager
def column_forward(module: nn.Module, forward: Callable) -> Iterator[None]:
    """Let ``module(...)`` run ``forward`` inside the block (an instance attribute shadows the class's forward).

    Why: DDP synchronises gradients only for forwards that pass through its wrapper, whose ``forward`` calls the
    wrapped module. Routing the per-column embedding through the wrapper keeps DDP exact without wrapping the model
    in another class (which would change what is saved). An instance-level forward set by accelerate (autocast) is
    restored afterwards.
    """
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


def named_embeddings(column: str, output: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{column: tensor}``; a dict output's ``"embedding"`` is named ``column``, any other key ``k`` ``column.k``."""
    if isinstance(output, torch.Tensor):
        return {column: output}
    return {column if key == "embedding" else f"{column}.{key}": value for key, value in output.items()}


class MultiModalTrainer(ObjectiveParameters, TrainerBookkeeping, Trainer):
    """Train a ``CLIPModel`` (PEFT-wrapped or not), or any module with ``embed_column``, with a contrastive objective.

    Args:
        model: a ``CLIPModel`` (``image*`` columns are embedded with ``get_image_features``, ``text*`` columns with
            ``get_text_features``), or a module with ``embed_column(column, features) -> Tensor[n, D] | dict``.
        args: a :class:`MultiModalConfig`.
        train_dataset / eval_dataset: ``datasets.Dataset`` with one column per role (``image``, ``text``, ...).
        processing_class: a ``CLIPProcessor`` (required unless ``data_collator`` is given).
        objective: an objective instance; default ``args.objective`` built with ``args.objective_options``.
        evaluator: ``evaluator(embed) -> dict[str, float]``, called with ``embed(column, values) -> Tensor[n, D]``.
        data_collator: default ``MultiModalCollator(clip_processors(processing_class), views, label_column)``.
        views: ``{view_column: (source_column, transform)}`` for the default collator (augmented views).

    A ``CLIPModel``'s ``logit_scale`` initialises the objective's ``log_scale`` and is frozen in the model (the
    objective owns the temperature); ``save_model`` writes the trained value back, so ``CLIPModel.from_pretrained``
    reloads it. (A PEFT adapter saves only its adapter weights: the temperature is then in the checkpoint's
    ``objective.pt``.)
    """

    _tag_names = ["hf_contrastive", "contrastive-learning", "vision-language"]
    # compute_loss returns a per-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: MultiModalConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        objective: ContrastiveObjective | None = None,
        evaluator=None,
        data_collator=None,
        views: dict | None = None,
        **kwargs,
    ) -> None:
        args = args or MultiModalConfig(output_dir="outputs")
        if not isinstance(args, MultiModalConfig):
            raise TypeError(f"args must be a MultiModalConfig, got {type(args).__name__}.")
        self.objective = objective or build_objective(
            args.objective,
            defaults={"gather_across_devices": args.gather_across_devices},
            **(args.objective_options or {}),
        )
        self.evaluator = evaluator
        if data_collator is None:
            if processing_class is None:
                raise ValueError("MultiModalTrainer needs processing_class (a CLIPProcessor) or a data_collator.")
            text_config = getattr(getattr(model, "config", None), "text_config", None)
            max_length = args.max_length or getattr(text_config, "max_position_embeddings", None)
            data_collator = MultiModalCollator(
                clip_processors(processing_class, max_length),
                views=views,
                label_column=args.label_column,
                image_size=args.image_size,
            )
        for split, dataset in (("training", train_dataset), ("evaluation", eval_dataset)):
            if dataset is not None:
                self.check_dataset(model, data_collator, dataset, split, args.validation_rows)
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
        self._take_temperature_from_model()
        self.objective.to(self.args.device)
        self._init_objective_parameters()
        self.add_callback(ClampLogScales(self.objective, args.min_logit_scale, args.max_logit_scale))
        self._init_bookkeeping()
        self.gradient_cache = (
            GradientCache(args.cache_token_budget, row_budget=args.cache_row_budget) if args.gradient_cache else None
        )
        self.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # the loop resets it per step
        self.check_configuration()

    # ----------------------------------------------------------------------------------------------- checks
    def check_dataset(self, model, collator, dataset, split: str, sample_size: int) -> None:
        """Refuse, before any step, a dataset that lacks a column the objective reads or holds unusable values."""
        column_names = list(dataset.column_names)
        columns = collator.columns(column_names) if hasattr(collator, "columns") else column_names
        missing = [name for name in self.objective.required_columns if name.split(".")[0] not in columns]
        if missing:
            raise ValueError(
                f"The {self.objective.name} objective reads the embeddings {list(self.objective.required_columns)}, "
                f"but the {split} dataset yields the columns {columns} (dataset columns {column_names}): missing "
                f"{missing}. Add or rename the column(s), or give the collator a processor or view for them."
            )
        if not hasattr(collator, "source_columns"):
            return
        image_size = getattr(collator, "image_size", None)
        validate_multimodal_dataset(dataset, collator.source_columns(columns), image_size, sample_size)
        for column in columns:
            if not (hasattr(model, "embed_column") or is_image_column(column) or is_text_column(column)):
                raise ValueError(
                    f"Column {column!r} is neither an image* nor a text* column, and {type(model).__name__} has no "
                    "embed_column(column, features) to embed it."
                )
        self._check_pixel_values(model, collator([dataset[0]]), split)

    @staticmethod
    def _check_pixel_values(model, batch: dict, split: str) -> None:
        """The processor's images must have the size the vision tower was built for."""
        vision = getattr(getattr(model, "config", None), "vision_config", None)
        for column, features in batch["features"].items():
            pixels = features.get("pixel_values")
            if vision is not None and pixels is not None and tuple(pixels.shape[-2:]) != (vision.image_size,) * 2:
                raise ValueError(
                    f"Column {column!r} ({split}): the processor makes {pixels.shape[-2]}x{pixels.shape[-1]} images "
                    f"but the model takes {vision.image_size}x{vision.image_size} (vision_config.image_size): use a "
                    "processor that resizes to the model's size."
                )

    def check_configuration(self) -> None:
        """Refuse flag combinations that would train silently wrong; called before any step."""
        args = self.args
        if args.gradient_cache and not getattr(self.objective, "supports_gradient_cache", True):
            raise ValueError(
                f"The {self.objective.name} objective cannot run under the gradient cache: set gradient_cache=False."
            )
        if args.gradient_cache and not getattr(self._base_model(), "supports_gradient_cache", True):
            raise ValueError(
                f"{type(self._base_model()).__name__} cannot run under the gradient cache (e.g. BatchNorm statistics "
                "differ between mini-batches and the full batch): set gradient_cache=False."
            )
        if args.gradient_cache and self.is_deepspeed_enabled:
            raise ValueError("gradient_cache=True is not supported with DeepSpeed (its engine owns backward).")
        if args.world_size > 1 and args.gather_across_devices and not args.dataloader_drop_last:
            raise ValueError(
                "gather_across_devices=True needs dataloader_drop_last=True: every rank must gather the same rows."
            )
        gathered = args.per_device_train_batch_size * (args.world_size if args.gather_across_devices else 1)
        if gathered < 2:
            raise ValueError(
                f"In-batch negatives need at least 2 rows per (gathered) batch, got {gathered}: raise "
                "per_device_train_batch_size."
            )

    # ----------------------------------------------------------------------------------------------- temperature
    def _logit_scale(self) -> nn.Parameter | None:
        """The model's own ``logit_scale`` parameter (``CLIPModel``), if any."""
        scale = getattr(self._base_model(), "logit_scale", None)
        return scale if isinstance(scale, nn.Parameter) else None

    def _take_temperature_from_model(self) -> None:
        model_scale, objective_scale = self._logit_scale(), getattr(self.objective, "log_scale", None)
        if model_scale is None or not isinstance(objective_scale, nn.Parameter):
            return
        with torch.no_grad():
            objective_scale.copy_(model_scale)
        model_scale.requires_grad_(False)  # trained in the objective; a frozen copy keeps DDP from waiting on it

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the objective's trained ``log_scale`` into the model's ``logit_scale``, then save."""
        model_scale, objective_scale = self._logit_scale(), getattr(self.objective, "log_scale", None)
        if model_scale is not None and isinstance(objective_scale, nn.Parameter):
            with torch.no_grad():
                model_scale.copy_(objective_scale)
        super().save_model(output_dir, _internal_call)

    # ----------------------------------------------------------------------------------------------- embedding
    def _base_model(self):
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @staticmethod
    def embed_column(model, column: str, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{embedding name: [n, ...]}`` of one column's features (see :func:`named_embeddings`)."""
        if hasattr(model, "embed_column"):
            return named_embeddings(column, model.embed_column(column, features))
        if is_image_column(column):
            return {column: image_embeddings(model, features["pixel_values"])}
        if is_text_column(column):
            return {column: text_embeddings(model, features["input_ids"], features.get("attention_mask"))}
        raise ValueError(f"Column {column!r}: {type(model).__name__} has no embed_column to embed it.")

    def _embed_columns(self, module, features: ColumnFeatures) -> ColumnEmbeddings:
        return {column: self.embed_column(module, column, values) for column, values in features.items()}

    def forward_columns(self, model, features: ColumnFeatures) -> ColumnEmbeddings:
        """Embed every column of ``features`` in one call of ``model`` (the DDP wrapper, if any: see column_forward)."""
        module = self.accelerator.unwrap_model(model)
        with column_forward(module, partial(self._embed_columns, module)):
            return model(features)

    # ----------------------------------------------------------------------------------------------- loss
    def objective_loss(self, embeddings: dict[str, torch.Tensor], inputs: dict) -> tuple[torch.Tensor, dict]:
        output = self.objective(embeddings, inputs)
        self._check_finite(output.loss)
        return output.loss, output.logs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        columns = self.forward_columns(model, inputs["features"])
        embeddings = {name: value for outputs in columns.values() for name, value in outputs.items()}
        loss, logs = self.objective_loss(embeddings, inputs)
        if model.training:
            self._accumulate_logs(logs)
        return (loss, {"embeddings": embeddings}) if return_outputs else loss

    def _cached_training_step(self, model, inputs) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)

        def embed(features: ColumnFeatures) -> ColumnEmbeddings:
            with self.compute_loss_context_manager():
                return self.forward_columns(model, features)

        loss, logs = self.gradient_cache.step_columns(
            embed,
            inputs["features"],
            loss_fn=lambda embeddings: self.objective_loss(embeddings, inputs),
            loss_scale=1.0 / self.current_gradient_accumulation_steps,
            backward=self.accelerator.backward,
            no_sync=partial(self.accelerator.no_sync, model) if self.args.world_size > 1 else None,
        )
        self._accumulate_logs(logs)
        return loss / self.current_gradient_accumulation_steps

    # ----------------------------------------------------------------------------------------------- evaluation
    def embed_values(self, column: str, values: list) -> torch.Tensor:
        """Embed raw ``values`` of ``column``'s modality with the current model: [n, D] float32, no gradient."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        chunks = []
        batch_size = self.args.eval_batch_size
        with torch.no_grad(), self.compute_loss_context_manager():
            for start in range(0, len(values), batch_size):
                features = self._prepare_inputs(
                    self.data_collator.process(column, values[start : start + batch_size], start, augment=False)
                )
                chunks.append(self.embed_column(model, column, features)[column].float())
        model.train(was_training)
        return torch.cat(chunks)

    def evaluator_argument(self):
        """``embed(column, values) -> Tensor[n, D]`` with the model as it is now."""
        return self.embed_values

    # ----------------------------------------------------------------------------------------------- facts and card
    def contrastive_facts(self) -> dict[str, Any]:
        """Batches, negatives, temperature and cache of this run (logged at start and put in the card)."""
        args = self.args
        world = args.world_size if args.gather_across_devices else 1
        scale = self.objective.scale() if hasattr(self.objective, "scale") else None
        return {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch": args.per_device_train_batch_size * args.world_size,
            "effective_negatives_per_anchor": self.objective.effective_negatives(
                args.per_device_train_batch_size * world, 0
            ),
            "objective": self.objective.name,
            "temperature": round(1.0 / float(torch.as_tensor(scale).detach()), 5) if scale is not None else None,
            "gather_across_devices": args.gather_across_devices,
            "gradient_cache": args.gradient_cache,
            "cache_row_budget": args.cache_row_budget if args.gradient_cache else None,
            "cache_token_budget": args.cache_token_budget if args.gradient_cache else None,
        }

    def train(self, *args, **kwargs):
        facts = self.contrastive_facts()
        if self.is_world_process_zero():
            logger.warning(
                "Multimodal contrastive training: global batch %s over %s process(es), %s negatives per anchor, "
                "gradient cache %s.",
                facts["global_batch"],
                facts["world_size"],
                facts["effective_negatives_per_anchor"],
                "on" if facts["gradient_cache"] else "off",
            )
        return super().train(*args, **kwargs)

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
        """Write ``README.md`` into ``output_dir`` (``eval_results`` default to the evaluator's last metrics)."""
        if not self.is_world_process_zero():
            return
        repo_id = card_repo_id(self.args, model_name)
        pipeline_tag, summary, usage = card_texts(self._base_model(), self.objective, repo_id)
        card = build_model_card(
            ContrastiveCardData(
                objective=self.objective.name,
                repo_id=repo_id,
                model_name=model_name,
                base_model=finetuned_from or getattr(self._base_model().config, "_name_or_path", None) or None,
                paper=self.objective.paper,
                objective_config=self.objective.get_config_dict(),
                datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
                language=language,
                license=license,
                pipeline_tag=pipeline_tag,
                summary=summary,
                usage=usage,
                tags=[*self._tag_names, *(tags or [])],
                model_details=encoder_details(self._base_model()),
                dataset_stats=self._dataset_stats(),
                contrastive_facts=self.contrastive_facts(),
                training_args=self.args,
                eval_results=eval_results if eval_results is not None else self._logged_eval_results(),
                training_summary=self._training_summary(),
                citations=[self.objective.citation] if self.objective.citation else [],
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _dataset_stats(self) -> dict[str, Any] | None:
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "column_names") or len(dataset) == 0:
            return None
        text_columns = [c for c in dataset.column_names if is_text_column(c)]
        if not text_columns:
            return None
        tokenizer = getattr(self.processing_class, "tokenizer", None)
        return dataset_statistics(dataset.select_columns(text_columns), text_columns, tokenizer)


def card_texts(model, objective: ContrastiveObjective, repo_id: str) -> tuple[str, str, str]:
    """Pipeline tag, summary paragraph and usage snippet of the card: CLIP (zero-shot) or a column encoder."""
    what = f"trained with the `{objective.name}` objective using the `hf_contrastive` library"
    if is_clip_model(model):
        model_class = type(model).__name__
        summary = (
            f"A CLIP-style {model_class} (image and text towers in one embedding space) {what}. Classify images "
            "zero-shot by the cosine between an image embedding and the embeddings of class prompts; the trained "
            "temperature is the model's `logit_scale`."
        )
        usage = f"""```python
import torch
from PIL import Image
from transformers import AutoProcessor, {model_class}

model = {model_class}.from_pretrained({json.dumps(repo_id)})
processor = AutoProcessor.from_pretrained({json.dumps(repo_id)})
prompts = ["a photo of the digit three", "a photo of the digit seven"]  # the prompts the recipe trained on
inputs = processor(text=prompts, images=[Image.open("digit.png")], return_tensors="pt", padding=True)
with torch.no_grad():
    probabilities = model(**inputs).logits_per_image.softmax(dim=-1)  # [1, 2]
print(dict(zip(prompts, probabilities[0].tolist())))
```"""
        return "zero-shot-image-classification", summary, usage
    summary = f"A multimodal encoder ({type(model).__name__}) {what}. It embeds each input column into one space."
    column = objective.required_columns[0] if objective.required_columns else "a"
    usage = f"""```python
import torch
from transformers import AutoModel

import hf_contrastive  # noqa: F401  (registers the model class with AutoModel)

model = AutoModel.from_pretrained({json.dumps(repo_id)}).eval()
features = ...  # one column's batch as the training collator built it, e.g. {{"values": torch.Tensor [n, d]}}
with torch.no_grad():
    embeddings = model.embed_column({json.dumps(column)}, features)
```"""
    return "feature-extraction", summary, usage


def is_clip_model(model) -> bool:
    """A ``CLIPModel``-like dual encoder (``CLIPModel``, ``VisionTextDualEncoderModel``, ...): a vision config and
    image / text feature methods."""
    return hasattr(getattr(model, "config", None), "vision_config") and hasattr(model, "get_image_features")


class ClampLogScales(TrainerCallback):
    """Clamp every objective parameter named ``*log_scale`` to ``[ln(min_scale), ln(max_scale)]`` after each step."""

    def __init__(self, objective: nn.Module, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"Need 0 < min_logit_scale <= max_logit_scale, got {min_scale} and {max_scale}.")
        self.parameters = [p for name, p in objective.named_parameters() if name.endswith("log_scale")]
        self.bounds = (math.log(min_scale), math.log(max_scale))

    def on_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for parameter in self.parameters:
                parameter.clamp_(*self.bounds)
