"""What every Trainer of the library shares: objective logs, a finite-loss guard, the evaluator hook, card facts.

``TrainerBookkeeping`` is mixed in before ``transformers.Trainer`` (``class X(TrainerBookkeeping, Trainer)``); its
``log`` and ``evaluate`` call the Trainer's through ``super()``. A subclass says what its evaluator is called with
(``evaluator_argument``: an ``encode_fn`` for bi-encoders, a ``pair_scorer`` for rerankers).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from .. import distributed
from ..hub import CardEvalResult

TRAINER_METRICS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
OBJECTIVE_STATE_FILE = "objective.pt"

logger = logging.getLogger(__name__)


@dataclass
class GuardedTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the switch of :class:`TrainerBookkeeping`'s finite-loss guard: the base of every
    trainer configuration of the library."""

    raise_on_nonfinite_loss: bool = field(
        default=True, metadata={"help": "Stop with an error at the first NaN/inf loss instead of training on."}
    )


@contextlib.contextmanager
def evaluation_by_evaluator_only(args, evaluator, eval_dataset) -> Iterator[None]:
    """Build a Trainer (inside the block) that evaluates with an evaluator but no ``eval_dataset``.

    ``Trainer.__init__`` refuses an eval strategy without ``eval_dataset``; our ``evaluate()`` runs the evaluator
    alone. The strategy is switched off while the Trainer is built and restored afterwards.
    """
    eval_strategy = args.eval_strategy
    if evaluator is not None and eval_dataset is None:
        args.eval_strategy = "no"
    try:
        yield
    finally:
        args.eval_strategy = eval_strategy


class LossOnlyPrediction:
    """``prediction_step`` that computes the training loss without gradient and returns no predictions."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


def card_repo_id(args, model_name: str | None = None) -> str:
    """The id a trainer's card names the model by: ``hub_model_id``, else ``model_name``, else the output folder."""
    return args.hub_model_id or model_name or os.path.basename(os.path.abspath(args.output_dir))


class TrainerBookkeeping(LossOnlyPrediction):
    """Objective logs summed on the device and averaged into the Trainer's logs, the NaN guard, evaluators."""

    evaluator = None

    def _init_bookkeeping(self) -> None:
        self._objective_log_sums: dict[str, torch.Tensor] = {}
        self._objective_log_counts: dict[str, int] = {}

    # ----------------------------------------------------------------------------------------------- logs
    def _accumulate_logs(self, logs: dict[str, torch.Tensor]) -> None:
        """Sum the objective's logs on the device; they are read (one sync) only when the Trainer logs.

        Each key is averaged over the steps that logged it (a term that switches on mid-window is not diluted).
        """
        for key, value in logs.items():
            self._objective_log_sums[key] = self._objective_log_sums.get(key, 0.0) + value.detach()
            self._objective_log_counts[key] = self._objective_log_counts.get(key, 0) + 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every rank is here (the Trainer has just averaged "loss" over ranks)
            logs.update(self._objective_log_means())
            self._objective_log_sums, self._objective_log_counts = {}, {}
        super().log(logs, start_time)

    def _objective_log_means(self) -> dict[str, float]:
        """Each objective log averaged over the steps that logged it and, under DDP, over the ranks, as ``loss`` is.

        The keys are unioned across ranks first (a rank whose batches never logged a key contributes no count), then
        the sums and counts travel in one ``all_reduce``; this runs only at logging steps.
        """
        keys = sorted(self._objective_log_sums)
        if distributed.is_distributed():
            every_rank: list[list[str]] = [[] for _ in range(distributed.world_size())]
            torch.distributed.all_gather_object(every_rank, keys)
            keys = sorted(set().union(*every_rank))
        if not keys:
            return {}
        device = distributed.collective_device()
        totals = torch.stack(
            [
                torch.as_tensor(self._objective_log_sums.get(key, 0.0), dtype=torch.float64, device=device)
                for key in keys
            ]
        )
        counts = torch.tensor([self._objective_log_counts.get(key, 0) for key in keys], dtype=torch.float64)
        summed = distributed.all_reduce_sum(torch.cat([totals, counts.to(device)]))
        return {key: round(float(summed[i] / summed[len(keys) + i]), 4) for i, key in enumerate(keys)}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if self.args.raise_on_nonfinite_loss and not torch.isfinite(loss.detach()).item():
            raise FloatingPointError(
                f"The {self.objective.name} loss is {loss.item()} at step {self.state.global_step}. Lower the "
                "learning_rate, raise the temperature, use bf16 rather than fp16, or check the inputs for empty "
                "texts; set raise_on_nonfinite_loss=False to skip such steps instead."
            )

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self) -> Any:  # pragma: no cover - every trainer defines it
        """What the evaluator is called with (``encode_fn`` or ``pair_scorer``)."""
        raise NotImplementedError

    def _call_evaluator(self) -> dict[str, float]:
        return self.evaluator(self.evaluator_argument())

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        has_dataset = eval_dataset is not None or self.eval_dataset is not None
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix) if has_dataset else {}
        if self.evaluator is not None:
            evaluator_metrics = self.run_evaluator(metric_key_prefix)
            self.log(evaluator_metrics)
            metrics.update(evaluator_metrics)
            if not has_dataset:  # super().evaluate did not run: tell the callbacks (resets should_evaluate)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def run_evaluator(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Run the evaluator and share its metrics with every rank.

        By default it runs once, on the main process. An evaluator with ``runs_on_all_ranks = True`` (a corpus
        encoder that shards its work, e.g. ``RetrievalEvaluator``) is called on every rank and must return the same
        metrics everywhere.
        """
        if getattr(self.evaluator, "runs_on_all_ranks", False):
            return {f"{metric_key_prefix}_{k}": v for k, v in self._call_evaluator().items()}
        results: list[dict[str, float] | None] = [None]
        if self.args.process_index == 0:
            results[0] = {f"{metric_key_prefix}_{k}": v for k, v in self._call_evaluator().items()}
        if distributed.is_distributed():
            torch.distributed.broadcast_object_list(results, src=0)
        return results[0]

    # ----------------------------------------------------------------------------------------------- card facts
    def _logged_eval_results(self, **card_fields: Any) -> list[CardEvalResult]:
        """The last logged value of every evaluator metric, for the card (``card_fields``: e.g. the task type)."""
        latest = {}
        for entry in self.state.log_history:
            latest.update({k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, float)})
        return [
            CardEvalResult(
                dataset_name="evaluator",
                dataset_type="evaluator",
                metric_type=key[len("eval_") :],
                value=value,
                **card_fields,
            )
            for key, value in latest.items()
            if key not in TRAINER_METRICS
        ]

    def _training_summary(self) -> dict[str, Any]:
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        summary = {"steps": self.state.global_step, "epochs": round(self.state.epoch or 0.0, 3)}
        if losses:
            summary["final train loss"] = round(losses[-1], 4)
        return summary


class ObjectiveParameters:
    """Train an objective's own parameters (a learned temperature, heads) next to the model's; mixed in first.

    The objective sits outside the model (and outside DDP), so this mixin gives its parameters an optimizer group
    without weight decay, averages their gradients over ranks after each training step (plain, or the trainer's
    ``_cached_training_step`` when it has a ``gradient_cache``), clears them after every optimizer step and saves /
    restores the objective's whole ``state_dict`` (parameters, buffers, random state) with checkpoints.
    """

    objective: torch.nn.Module

    def _init_objective_parameters(self) -> None:
        # The Trainer zeroes only the model's gradients after each optimizer step; the objective's are ours.
        self.add_callback(ZeroObjectiveGradients(self.objective))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step, or the gradient-cached one (``self.gradient_cache``); then average objective grads."""
        if getattr(self, "gradient_cache", None) is None:
            loss = super().training_step(model, inputs, num_items_in_batch)
        else:
            loss = self._cached_training_step(model, inputs)
        self._average_objective_gradients()
        return loss

    def _average_objective_gradients(self) -> None:
        """Objective parameters sit outside DDP: average their gradients by hand."""
        if not distributed.is_distributed():
            return
        for parameter in self.objective.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                parameter.grad /= distributed.world_size()

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        parameters = [p for p in self.objective.parameters() if p.requires_grad]
        if parameters:
            optimizer.add_param_group({"params": parameters, "weight_decay": 0.0})
        return optimizer

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # Parameters, buffers (running statistics) or extra state (the random state of ResumableRandomState).
        if self.args.should_save and self.objective.state_dict():
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            torch.save(self.objective.state_dict(), os.path.join(folder, OBJECTIVE_STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, OBJECTIVE_STATE_FILE)
        if os.path.exists(path):
            load_objective_state(self.objective, torch.load(path, map_location=self.args.device), path)


def load_objective_state(objective: torch.nn.Module, state: dict, source: str) -> None:
    """``objective.load_state_dict(state)``, strict, except for a checkpoint saved before objectives carried their
    random state (``ResumableRandomState``): that run resumes with a warning and fresh draws instead of failing."""
    missing, unexpected = objective.load_state_dict(state, strict=False)
    missing_random_state = [key for key in missing if key.endswith("_extra_state")]
    if unexpected or len(missing_random_state) < len(missing):
        objective.load_state_dict(state)  # raises, naming every mismatched key
    if missing_random_state:
        logger.warning(
            "%s has no random state for %s (saved by an older hf_contrastive): the resumed run draws fresh random "
            "numbers there, so it will not repeat the uninterrupted run exactly.",
            source,
            missing_random_state,
        )


class ZeroObjectiveGradients(TrainerCallback):
    """Clear the objective's gradients after every optimizer step (they would otherwise accumulate forever)."""

    def __init__(self, objective: torch.nn.Module) -> None:
        self.objective = objective

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.objective.zero_grad(set_to_none=True)
