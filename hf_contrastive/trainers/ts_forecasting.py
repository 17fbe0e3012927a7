"""TSForecastingTrainer: train a :class:`~hf_contrastive.models.ts_forecaster.TSForecaster` end to end (arXiv 2306.12086).

    from hf_contrastive.data.timeseries import load_ett
    from hf_contrastive.trainers.ts_forecasting import TSForecastingConfig, TSForecastingTrainer

    series = load_ett("../shared/data/ett/ETTh1.csv", mode="multivariate")
    model = TSForecaster(TSForecasterConfig(enc_in=7, seq_len=48, pred_len=24, scaler=series.scaler.to_dict()))
    args = TSForecastingConfig(output_dir="outputs/ts-moco", num_train_epochs=20, eval_strategy="epoch",
                               save_strategy="epoch", load_best_model_at_end=True)
    trainer = TSForecastingTrainer(model, args, train_dataset=series.windows("train", 48, 24),
                                   eval_dataset=series.windows("validation", 48, 24))
    trainer.train()

Rows are ``{"past_values": [T, C], "future_values": [P, C_out]}`` (standardised;
:meth:`hf_contrastive.data.timeseries.ForecastSeries.windows` yields them); every row is checked before the first
step (shape and finite values, naming the row and column). A step minimises the model's ``(1 - lambda) MSE + lambda
L_cl`` and logs both terms (``loss_mse``, ``loss_contrastive``). Evaluation forecasts every window (no contrastive
branch, no queue update) and reports ``eval_mse`` / ``eval_mae`` on the standardised scale, the numbers early stopping
and the best checkpoint use (``metric_for_best_model="mse"``).

Why a subclass, and how the MoCo state moves: the step itself is the plain one (the model returns its loss, the
queue is updated inside the objective's training-mode forward). The momentum encoder follows the online one through
:class:`~hf_contrastive.trainers.ema.EMAUpdate` (added here when the model has a contrastive term) after every
optimizer step: with one forward per step this is the reference's update-before-keys sequence, and evaluation or
gradient accumulation cannot move it. The subclass adds what the plain Trainer lacks: row checks, float32 stacking,
the two loss logs, forecast metrics in evaluation, the reference's learning-rate schedule and the model card.

Optimiser (the reference's ``run_all-informer.sh``): Adam (AdamW without weight decay), lr 1e-3, batch 16, and
``halve_lr_each_epoch`` (Informer's "type1": the learning rate during epoch ``e``, counted from 1, is
``lr * 0.5 ** max(e - 2, 0)``; it is halved after the second epoch and every one after it). The reference drops the
last partial batch of every loader (test included) because its queue needs ``K % B == 0``; the queue here writes
modulo ``K``, so the default keeps every window (``dataloader_drop_last`` would also drop evaluation windows).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import EvalPrediction, Trainer

from ..evaluation.forecasting import forecast_errors
from ..hub import CardEvalResult
from ..models.ts_forecaster import forecaster_model_card
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id
from .ema import EMAUpdate

WINDOW_COLUMNS = ("past_values", "future_values")


@dataclass
class TSForecastingConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with the reference's optimiser, batch and schedule, and forecast-MSE model selection."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (reference: 1e-3)."})
    weight_decay: float = field(default=0.0, metadata={"help": "0: plain Adam, as the reference."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Windows per batch (reference: 16)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Replaced when halve_lr_each_epoch."})
    halve_lr_each_epoch: bool = field(
        default=True,
        metadata={"help": "Informer's 'type1' schedule: lr * 0.5 ** max(epoch - 2, 0) with epochs counted from 1."},
    )
    metric_for_best_model: str | None = field(
        default="mse", metadata={"help": "Validation forecast MSE selects the best checkpoint (reference)."}
    )
    greater_is_better: bool | None = field(default=False, metadata={"help": "Lower MSE is better."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: rows carry only the windows."})


def stack_windows(rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Collate rows into float32 ``past_values`` [B, T, C] and ``future_values`` [B, P, C_out]."""
    return {
        column: torch.stack([torch.as_tensor(np.asarray(row[column]), dtype=torch.float32) for row in rows])
        for column in WINDOW_COLUMNS
        if column in rows[0]
    }


def check_window_rows(dataset, seq_len: int, pred_len: int, enc_in: int, c_out: int, name: str) -> None:
    """Raise a ValueError naming the row and column of the first window that is not [T, C] / [P, C_out] or finite."""
    expected = {"past_values": (seq_len, enc_in), "future_values": (pred_len, c_out)}
    for index in range(len(dataset)):
        row = dataset[index]
        for column, shape in expected.items():
            if column not in row:
                raise ValueError(f"{name} row {index} has no {column!r} column; rows need {list(expected)}.")
            values = np.asarray(row[column], dtype=np.float64)
            if values.shape != shape:
                raise ValueError(
                    f"{name} row {index}: {column!r} has shape {values.shape}; the model expects {shape} "
                    "(seq_len/pred_len steps x channels)."
                )
            if not np.isfinite(values).all():
                step, channel = np.argwhere(~np.isfinite(values))[0]
                raise ValueError(
                    f"{name} row {index}: {column!r} has a NaN/inf at step {step}, channel {channel}; fill or drop "
                    "missing values before windowing."
                )


class TSForecastingTrainer(TrainerBookkeeping, Trainer):
    """``transformers.Trainer`` for TSForecaster: row checks, momentum updates, loss logs, MSE/MAE evaluation, card."""

    _tag_names = ["hf_contrastive", "time-series-forecasting", "moco", "ts-forecasting-sscl"]

    def __init__(
        self, model, args: TSForecastingConfig, train_dataset=None, eval_dataset=None, data_collator=None, **kwargs
    ):
        config = model.config
        shapes = (config.seq_len, config.pred_len, config.enc_in, config.c_out)
        for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if dataset is not None:
                check_window_rows(dataset, *shapes, name)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if model.objective.uses_contrastive_term:
            callbacks.append(EMAUpdate(config.moco_momentum))
        self.objective = model.objective
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator or stack_windows,
            compute_metrics=kwargs.pop("compute_metrics", None) or forecast_metrics,
            callbacks=callbacks,
            **kwargs,
        )
        self._init_bookkeeping()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(past_values=inputs["past_values"], future_values=inputs["future_values"])
        if model.training:
            logs = {"loss_mse": outputs.mse_loss, "loss_contrastive": outputs.contrastive_loss}
            self._accumulate_logs({key: value for key, value in logs.items() if value is not None})
            self._check_finite(outputs.loss)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Forecast a batch in eval mode: ``(MSE, prediction [B, P, C_out], future_values [B, P, C_out])``."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            prediction = model(past_values=inputs["past_values"]).prediction
        target = inputs["future_values"]
        loss = torch.nn.functional.mse_loss(prediction, target)
        return (loss, None, None) if prediction_loss_only else (loss, prediction, target)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.args.halve_lr_each_epoch:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            steps_per_epoch = max(len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps, 1)
            self.lr_scheduler = LambdaLR(
                self.optimizer if optimizer is None else optimizer,
                lambda step: type1_factor(step, steps_per_epoch),
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # ----------------------------------------------------------------------------------------------- card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        eval_results: list[CardEvalResult] | None = None,
        tags: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md`` into ``output_dir`` (``push_to_hub`` calls it): the model's card plus this run's
        hyperparameters, last validation MSE / MAE and training summary."""
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        repo_id = card_repo_id(self.args, model_name)
        if eval_results is None:
            eval_results = self._logged_eval_results(task_type="time-series-forecasting", task_name="Forecasting")
        card = forecaster_model_card(
            model,
            repo_id,
            model_name=model_name,
            datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
            tags=[*self._tag_names, *(tags or [])],
            training_args=self.args,
            eval_results=eval_results,
            training_summary=self._training_summary(),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))


def type1_factor(step: int, steps_per_epoch: int) -> float:
    """Informer's "type1" multiplier at optimizer step ``step``: ``0.5 ** max(epoch - 2, 0)``, epochs from 1."""
    epoch = step // steps_per_epoch + 1
    return math.pow(0.5, max(epoch - 2, 0))


def forecast_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """``{"mse", "mae"}`` of the evaluation forecasts on the standardised scale."""
    return forecast_errors(prediction.predictions, prediction.label_ids)
