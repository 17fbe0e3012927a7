"""Train a prompt learner (MoCoOp) on a frozen CLIP from ``{"image", "label"}`` rows.

Why a Trainer subclass rather than a plain ``transformers.Trainer`` (which would already work, since the model's
forward returns the loss):

- **Two learning rates.** The released MoCoOp configs fine-tune the vision blocks' LayerNorm affines at 0.1x the
  prompt learning rate (``vision_layernorm_lr_ratio``); a plain Trainer has one group (and would exclude LayerNorm
  from weight decay, which Dassl does not).
- **Logs** of the loss terms (``loss_ce``, ``loss_text``, ``loss_gate``) and of router usage (``router_usage_e``:
  the share of the top-k slots given to expert e), averaged between logging steps, so a collapsed router shows up.
- **Images in, checked before training:** the collator opens images with the multimodal loaders (clear errors for a
  missing or unreadable image column) and feeds ``pixel_values`` and ``labels`` to the model.

The frozen CLIP is not a submodule of the prompt learner, so it can never reach the optimizer or DDP. bf16 /
accelerate work as for any Trainer. Recipe: ``recipes/mocoop_digits.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..data.multimodal import MultiModalCollator, process_images, validate_multimodal_dataset
from .common import GuardedTrainingArguments, TrainerBookkeeping, evaluation_by_evaluator_only


@dataclass
class PromptLearningConfig(GuardedTrainingArguments):
    """``TrainingArguments`` for :class:`PromptLearningTrainer`; MoCoOp's SGD, warmup and clipping are set by the recipe."""

    vision_layernorm_lr_ratio: float = field(
        default=0.1, metadata={"help": "Learning-rate multiplier of the fine-tuned vision LayerNorm affines."}
    )
    image_column: str = field(default="image", metadata={"help": "Dataset column of the images."})
    label_column: str = field(default="label", metadata={"help": "Dataset column of the class indices."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator reads the raw columns."})


class ImageLabelCollator:
    """Rows ``{image_column, label_column}`` -> ``{"pixel_values": [B, 3, S, S], "labels": [B]}``."""

    def __init__(self, image_processor, image_column: str = "image", label_column: str = "label") -> None:
        self.image_column = image_column
        self.collator = MultiModalCollator(
            {image_column: partial(process_images, image_processor)}, label_column=label_column
        )

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(rows)
        return {"pixel_values": batch["features"][self.image_column]["pixel_values"], "labels": batch["labels"]}


class PromptLearningTrainer(TrainerBookkeeping, Trainer):
    """Trainer for prompt learners whose forward returns ``loss``, ``loss_*`` terms and ``topk_indices``.

    Args:
        model: a prompt learner (e.g. :class:`hf_contrastive.models.mocoop.MoCoOpModel`) with CLIP attached.
        image_processor: turns images into ``pixel_values`` (e.g. ``CLIPProcessor.image_processor``); builds the
            collator unless ``data_collator`` is given.
        evaluator: ``evaluator(classify) -> metrics`` with ``classify(pixel_values, classnames) -> logits`` (e.g.
            :class:`hf_contrastive.evaluation.base_to_new.BaseToNewEvaluator`).
    """

    _tag_names = ["hf-contrastive", "prompt-learning", "clip"]

    def __init__(self, model, args: PromptLearningConfig, image_processor=None, evaluator=None, **kwargs) -> None:
        if kwargs.get("data_collator") is None:
            if image_processor is None:
                raise ValueError("PromptLearningTrainer needs an image_processor (or a data_collator).")
            kwargs["data_collator"] = ImageLabelCollator(image_processor, args.image_column, args.label_column)
        for split in ("train_dataset", "eval_dataset"):
            if kwargs.get(split) is not None:
                validate_multimodal_dataset(kwargs[split], [args.image_column, args.label_column])
        self.objective = model.objective
        with evaluation_by_evaluator_only(args, evaluator, kwargs.get("eval_dataset")):
            super().__init__(model=model, args=args, **kwargs)
        self.evaluator = evaluator
        self._init_bookkeeping()

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss
        self._check_finite(loss)
        if model.training:
            logs = {key: outputs[key] for key in ("loss_ce", "loss_text", "loss_gate") if outputs.get(key) is not None}
            usage = F.one_hot(outputs.topk_indices, outputs.router_logits.shape[-1]).float().mean(dim=(0, 1))
            logs.update({f"router_usage_{expert}": share for expert, share in enumerate(usage)})
            self._accumulate_logs(logs)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, *args, **kwargs):
        """Two groups: prompt learner at ``learning_rate``, vision LayerNorms at ``vision_layernorm_lr_ratio`` x."""
        if self.optimizer is None:
            trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
            layernorms = [p for name, p in trainable if name.startswith("vision_layernorms.")]
            prompts = [p for name, p in trainable if not name.startswith("vision_layernorms.")]
            base_lr = self.args.learning_rate
            groups = [{"params": prompts, "lr": base_lr, "weight_decay": self.args.weight_decay}]
            if layernorms:
                ln_lr = base_lr * self.args.vision_layernorm_lr_ratio
                groups.append({"params": layernorms, "lr": ln_lr, "weight_decay": self.args.weight_decay})
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def evaluator_argument(self):
        model = self.accelerator.unwrap_model(self.model)

        def classify(pixel_values: torch.Tensor, classnames: list[str]) -> torch.Tensor:
            was_training = model.training
            model.eval()
            with torch.no_grad(), self.compute_loss_context_manager():
                logits = model(pixel_values.to(self.args.device), classnames=classnames).logits
            model.train(was_training)
            return logits

        return classify
