"""DenseCLIPTrainer: train a :class:`~hf_contrastive.models.denseclip.DenseCLIPSegmenter` with the paper's optimiser.

    from hf_contrastive.trainers.dense import DenseCLIPTrainer, DenseCLIPTrainingConfig

    args = DenseCLIPTrainingConfig(output_dir="outputs/denseclip", max_steps=80_000, warmup_steps=1500)
    trainer = DenseCLIPTrainer(model, args, train_dataset=rows, evaluator=SegmentationEvaluator(val_rows, collator))
    trainer.train()

Rows are ``{"image": PIL/array/path, "label": H x W mask}`` (column names in the config); every row is checked before
the first step (:func:`hf_contrastive.data.segmentation.check_segmentation_dataset`) and collated by a
:class:`~hf_contrastive.data.segmentation.SegmentationCollator` with the model's normalisation and ignore index.
A step minimises the model's ``L_seg + aux_loss_weight * L_aux`` and logs both terms (``loss_seg``, ``loss_aux``).

Optimiser (the released mmseg configs): AdamW, lr 1e-4, weight decay 1e-4; learning-rate multipliers per parameter
group: image encoder ``backbone_lr_multiplier`` (0.1), text encoder ``text_encoder_lr_multiplier`` (0: the encoder is
frozen, ``requires_grad=False``, while gradients still pass through it to the learnable context), everything else 1;
no weight decay on normalisation layers (LayerNorm, GroupNorm, BatchNorm). Schedule: poly decay (power 0.9) to
``lr_end`` 1e-6 after ``warmup_steps`` of linear warm-up (``transformers``' polynomial schedule scales every group's
learning rate by the same factor, so a group's floor is ``lr_end`` times its multiplier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..data.segmentation import SegmentationCollator, check_segmentation_dataset
from .common import GuardedTrainingArguments, TrainerBookkeeping, evaluation_by_evaluator_only

NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


@dataclass
class DenseCLIPTrainingConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with DenseCLIP's optimiser defaults and the segmentation data columns."""

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the head (paper: 1e-4)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay, not on norms (paper: 1e-4)."})
    lr_scheduler_type: str = field(default="polynomial", metadata={"help": "Poly schedule (paper)."})
    lr_scheduler_kwargs: dict | str | None = field(
        default_factory=lambda: {"power": 0.9, "lr_end": 1e-6},
        metadata={"help": "Poly power 0.9 down to lr 1e-6 (paper)."},
    )
    backbone_lr_multiplier: float = field(
        default=0.1, metadata={"help": "Learning-rate multiplier of the CLIP image encoder (paper: 0.1)."}
    )
    text_encoder_lr_multiplier: float = field(
        default=0.0, metadata={"help": "Multiplier of the CLIP text encoder (paper: 0 = frozen; the context learns)."}
    )
    image_column: str = field(default="image", metadata={"help": "Column with the images."})
    mask_column: str = field(default="label", metadata={"help": "Column with the H x W class-id masks."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the image and mask columns."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("backbone_lr_multiplier", "text_encoder_lr_multiplier"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


class DenseCLIPTrainer(TrainerBookkeeping, Trainer):
    """``transformers.Trainer`` for DenseCLIP segmenters: row checks, lr multipliers, no decay on norms, loss logs.

    ``evaluator(predict) -> dict`` (e.g. :class:`~hf_contrastive.evaluation.segmentation.SegmentationEvaluator`) is
    called with ``predict(pixel_values [B, 3, H, W]) -> logits [B, K, H, W]`` of the current model in eval mode.
    """

    _tag_names = ["hf_contrastive", "denseclip", "image-segmentation", "clip"]

    def __init__(
        self,
        model,
        args: DenseCLIPTrainingConfig,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        evaluator: Callable[[Callable[[torch.Tensor], torch.Tensor]], dict[str, float]] | None = None,
        **trainer_kwargs,
    ):
        config = model.config
        columns = {"image_column": args.image_column, "mask_column": args.mask_column}
        for dataset in (train_dataset, eval_dataset):
            if dataset is not None:  # one pass that decodes every row: bad rows fail here, not at step n
                check_segmentation_dataset(dataset, config.num_classes, ignore_index=config.ignore_index, **columns)
        if data_collator is None:
            data_collator = SegmentationCollator(
                config.num_classes, config.image_mean, config.image_std, config.ignore_index, **columns
            )
        if args.text_encoder_lr_multiplier == 0:
            for name, parameter in model.named_parameters():
                if name.startswith(model.text_encoder_prefixes):
                    parameter.requires_grad_(False)
        self.objective = model.objective
        with evaluation_by_evaluator_only(args, evaluator, eval_dataset):
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                data_collator=data_collator,
                **trainer_kwargs,
            )
        self.evaluator = evaluator
        self._init_bookkeeping()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
        if model.training:
            self._accumulate_logs({key: outputs[key] for key in ("loss_seg", "loss_aux") if key in outputs})
            self._check_finite(outputs.loss)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    # ----------------------------------------------------------------------------------------------- optimizer
    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Trainable parameters grouped by (learning-rate multiplier, weight decay); empty groups left out."""
        model = self.accelerator.unwrap_model(model)
        no_decay = {
            id(p) for module in model.modules() if isinstance(module, NORM_LAYERS) for p in module.parameters()
        }
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            key = (self._lr_multiplier(model, name), 0.0 if id(parameter) in no_decay else self.args.weight_decay)
            groups.setdefault(key, []).append(parameter)
        return [
            {"params": params, "lr": self.args.learning_rate * multiplier, "weight_decay": decay}
            for (multiplier, decay), params in groups.items()
            if multiplier > 0
        ]

    def _lr_multiplier(self, model: nn.Module, name: str) -> float:
        if name.startswith(model.backbone_prefixes):
            return self.args.backbone_lr_multiplier
        if name.startswith(model.text_encoder_prefixes):
            return self.args.text_encoder_lr_multiplier
        return 1.0

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(self.parameter_groups(opt_model), **optimizer_kwargs)
        return self.optimizer

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``predict(pixel_values) -> logits [B, K, H, W]`` with the model as it is now (eval mode, no grad)."""
        model = self.accelerator.unwrap_model(self.model)

        def predict(pixel_values: torch.Tensor) -> torch.Tensor:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return model(pixel_values=pixel_values.to(model.device)).logits
            finally:
                model.train(was_training)

        return predict
