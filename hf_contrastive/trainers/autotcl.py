"""AutoTCLTrainer: alternate augmentation-network and encoder updates, and keep the averaged encoder.

    from hf_contrastive.trainers.autotcl import AutoTCLTrainer, AutoTCLTrainingConfig

    args = AutoTCLTrainingConfig(output_dir="outputs/autotcl", learning_rate=3e-5, num_train_epochs=115)
    trainer = AutoTCLTrainer(AutoTCLModel(config), args, train_dataset=chunks)   # rows {"past_values": [T, C]}
    trainer.train()

One training step on a batch ``x`` (the released ``AutoTCL_CoST.py`` loop):

1. every ``config.ratio_step`` steps (counted from 0; never with ``config.augmentation="fixed"``), the augmenter step: the encoder in eval mode, the view sampled
   with gradient, ``L_aug`` differentiated with respect to the augmentation network only (the encoder accumulates
   no gradient from it) and that network stepped (its own AdamW with ``config.meta_lr``);
2. the encoder step: a new view sampled without gradient, ``L_enc`` minimised by the Trainer's optimizer, which
   holds the encoder's parameters only;
3. after the optimizer step, the averaged (SWA) encoder takes in the new weights.

Logs: ``loss`` (the encoder loss), ``loss_global``, ``loss_local`` and the augmenter's ``aug_loss_*`` terms.
Gradient accumulation is refused (the augmenter would step on every micro-batch). Under DDP the augmenter step runs
on the unwrapped model and its gradients are averaged over ranks by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback

from .. import distributed
from ..hub import CardEvalResult, ContrastiveCardData, build_model_card
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id, evaluation_by_evaluator_only


@dataclass
class AutoTCLTrainingConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with AutoTCL's ETTh1 univariate defaults (batch 32, AdamW lr 3e-5, decay 0.01)."""

    learning_rate: float = field(default=3e-5, metadata={"help": "Encoder AdamW learning rate (ETTh1 preset)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of both optimizers (default)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Series chunks per batch (preset)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "The released code keeps lr constant."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: rows are past_values only."})


class AveragedEncoderUpdate(TrainerCallback):
    """After every optimizer step, fold the encoder into ``model.averaged_encoder`` (equal weights)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.update_average()


class AutoTCLTrainer(TrainerBookkeeping, Trainer):
    """``transformers.Trainer`` with AutoTCL's alternating step (see the module docstring).

    ``evaluator(encode) -> dict`` is called with ``encode(past_values [B, T, C]) -> [B, T, D]`` of the averaged
    encoder (e.g. a closure running :func:`hf_contrastive.evaluation.forecasting.ridge_forecast_evaluation`).
    """

    _tag_names = ["hf_contrastive", "autotcl", "time-series", "contrastive-learning"]

    def __init__(
        self,
        model,
        args: AutoTCLTrainingConfig,
        train_dataset=None,
        eval_dataset=None,
        evaluator: Callable[[Callable[[torch.Tensor], torch.Tensor]], dict[str, float]] | None = None,
        **trainer_kwargs,
    ):
        if args.gradient_accumulation_steps != 1:
            raise ValueError(
                "AutoTCLTrainer needs gradient_accumulation_steps=1: the augmenter steps once per training step, "
                f"got {args.gradient_accumulation_steps}."
            )
        self.objective = model.encoder_objective
        with evaluation_by_evaluator_only(args, evaluator, eval_dataset):
            super().__init__(
                model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **trainer_kwargs
            )
        self.evaluator = evaluator
        self._init_bookkeeping()
        self.aug_optimizer = torch.optim.AdamW(
            model.augmenter.parameters(), lr=model.config.meta_lr, weight_decay=args.weight_decay
        )
        self.add_callback(AveragedEncoderUpdate())

    def create_optimizer(self, model=None):
        """AdamW (the Trainer's choice from ``args``) over the encoder's parameters only."""
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            encoder = self.accelerator.unwrap_model(self.model).encoder
            self.optimizer = optimizer_cls(
                [{"params": list(encoder.parameters()), "weight_decay": self.args.weight_decay}], **optimizer_kwargs
            )
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The augmenter step (every ``ratio_step`` steps), then the Trainer's encoder step."""
        unwrapped = self.accelerator.unwrap_model(model)
        config = unwrapped.config
        if config.augmentation == "learned" and self.state.global_step % config.ratio_step == 0:
            self.augmenter_step(unwrapped, self._prepare_inputs(inputs)["past_values"])
        return super().training_step(model, inputs, num_items_in_batch)

    def augmenter_step(self, model, past_values: torch.Tensor) -> torch.Tensor:
        """One AdamW step of the augmentation network on ``L_aug`` with the encoder in eval mode; returns the loss."""
        model.train()
        model.encoder.eval()
        try:
            output = model(past_values=past_values, mode="augmenter")
            self._check_finite(output.loss)
            # autograd.grad, not backward: DDP counts a gradient accumulated into any of its parameters, even outside
            # its forward, as use in its next backward, where the augmenter (unused by the encoder step) then fails
            # DDP's reducer ("Encountered gradient which is undefined").
            parameters = list(model.augmenter.parameters())
            gradients = torch.autograd.grad(output.loss, parameters, allow_unused=True)
            for parameter, gradient in zip(parameters, gradients):
                parameter.grad = gradient
            self._average_augmenter_gradients(model)
            self.aug_optimizer.step()
        finally:
            model.augmenter.zero_grad(set_to_none=True)  # DDP must see no stale augmenter gradient in the encoder step
            model.encoder.train()
        self._accumulate_logs({"aug_loss": output.loss, **{f"aug_{k}": v for k, v in output.logs.items()}})
        return output.loss.detach()

    @staticmethod
    def _average_augmenter_gradients(model) -> None:
        if not distributed.is_distributed():
            return
        for parameter in model.augmenter.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                parameter.grad /= distributed.world_size()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(past_values=inputs["past_values"], mode="encoder")
        if model.training:
            self._accumulate_logs(outputs.logs)
            self._check_finite(outputs.loss)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def evaluator_argument(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``encode(past_values) -> [B, T, D]`` of the averaged encoder, on the model's device."""
        model = self.accelerator.unwrap_model(self.model)
        return lambda past_values: model.encode(past_values.to(model.device))

    # ----------------------------------------------------------------------------------------------- card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        eval_results: list[CardEvalResult] | None = None,
        tags: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md`` into ``output_dir`` (``eval_results`` default to the evaluator's last metrics)."""
        if not self.is_world_process_zero():
            return
        repo_id = card_repo_id(self.args, model_name)
        model = self.accelerator.unwrap_model(self.model)
        config = model.config
        card = build_model_card(
            ContrastiveCardData(
                objective=self.objective.name,
                repo_id=repo_id,
                model_name=model_name,
                paper=self.objective.paper,
                objective_config={
                    **self.objective.get_config_dict(),
                    **model.augmenter_objective.get_config_dict(),
                },
                datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
                pipeline_tag="feature-extraction",
                summary=self._card_summary(model),
                usage=self._card_usage(repo_id),
                tags=[*self._tag_names, *(tags or [])],
                model_details={
                    key: getattr(config, key)
                    for key in ("input_dims", "repr_dims", "hidden_dims", "depth", "kernels", "aug_dim", "hard_mask")
                },
                contrastive_facts={
                    "world_size": self.args.world_size,
                    "global_batch": self.args.per_device_train_batch_size * self.args.world_size,
                    "temperature": config.contrastive_temperature,
                    "ratio_step": config.ratio_step,
                    "meta_lr": config.meta_lr,
                    "averaged encoder iterates": int(model.n_averaged),
                    "scaler saved": config.scaler is not None,
                },
                training_args=self.args,
                eval_results=eval_results
                if eval_results is not None
                else self._logged_eval_results(task_type="time-series-forecasting", task_name="Forecasting"),
                training_summary=self._training_summary(),
                citations=[self.objective.citation],
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    @staticmethod
    def _card_summary(model) -> str:
        return (
            f"An AutoTCL time-series encoder ({model.config.input_dims} input channels, {model.config.repr_dims}-d "
            "per-step representations) trained with a learned factorised augmentation (mask h(x), scale g(x)) "
            "using the `hf_contrastive` library. Inputs must be standardised with the saved training-split scaler "
            "(`model.scaler`); `model.encode` uses the equal-weight average of the encoder iterates."
        )

    @staticmethod
    def _card_usage(repo_id: str) -> str:
        return (
            "```python\nimport torch\nimport hf_contrastive  # registers AutoTCL with AutoModel\n"
            "from transformers import AutoModel\n\n"
            f'model = AutoModel.from_pretrained("{repo_id}")\n'
            "raw = torch.randn(1, 200, model.config.input_dims)  # [B, T, C] in the raw units\n"
            "representations = model.encode(model.scaler.transform(raw))  # [B, T, D]\n```"
        )
