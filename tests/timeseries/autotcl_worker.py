"""Three AutoTCLTrainer steps (augmenter step, then encoder step); saves both networks' gradients at every step.

``torchrun --nproc_per_node 2 -m tests.timeseries.autotcl_worker OUT_DIR PER_DEVICE_BATCH`` trains with the series
split over 2 gloo ranks and saves each rank's results to ``OUT_DIR/rank{r}.pt``; :func:`run` called in-process with
the doubled batch and ``per_rank_terms=2`` is the reference.

Two terms are per rank by design, so the reference evaluates them per half of its batch (:class:`PerRankEncoderLoss`,
:class:`PerRankAugmenterLoss`): the encoder's local InfoNCE reads the first series of each rank's batch, and the
augmenter's loss (MMD with a bandwidth taken from the batch) is a statistic of each rank's batch whose gradients the
trainer averages over ranks by hand. Everything else must be the one process's: the global InfoNCE gathers every
rank's views, DDP averages the encoder's gradients.

Deterministic on purpose, as no split of one process's random draws reproduces another's:
- ``gumbel_bias`` 1/2 - 1e-9: the mask noise ``u ~ U(b, 1 - b)`` rounds to exactly 1/2 in float32, so every element's
  ``log u - log(1 - u)`` is 0 whatever the RNG draws (the sampler's noisy branch then equals its deterministic one,
  spec check 1), while the hard mask and its straight-through gradient still run;
- dropout is off (its masks depend on the local batch size);
- T = 32 = 16 segments x 2 steps: the local InfoNCE's window is the whole series, so its random start is always 0;
- ``regular_weight`` 0 (the preset): no random anchors of the temporal-consistency term.
"""

import os
import sys
import tempfile

import numpy as np
import torch
from transformers import TrainerCallback, set_seed

from hf_contrastive.models.autotcl import AutoTCLConfig, AutoTCLModel
from hf_contrastive.objectives.autotcl import AutoTCLEncoderLoss, global_infonce, local_infonce
from hf_contrastive.objectives.base import ContrastiveObjective, ObjectiveOutput
from hf_contrastive.trainers.autotcl import AutoTCLTrainer, AutoTCLTrainingConfig

from ..trainers.distributed_check import worker_training_args

STEPS, CHANNELS, SEGMENTS = 3, 2, 16
STEPS_PER_SERIES = 2 * SEGMENTS  # the local InfoNCE's window is the whole series
DETERMINISTIC_GUMBEL_BIAS = 0.5 - 1e-9


class PerRankEncoderLoss(AutoTCLEncoderLoss):
    """``AutoTCLEncoderLoss`` as ``ranks`` ranks compute it together, in one process: the global InfoNCE over all
    rows, the local InfoNCE averaged over the first series of each rank's block of rows."""

    def __init__(self, ranks: int, **options) -> None:
        super().__init__(**options)
        self.ranks = ranks

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict | None = None) -> ObjectiveOutput:
        original = embeddings["original"]
        global_loss = global_infonce(original, embeddings["view"], self.temperature)
        blocks = original.chunk(self.ranks)
        local_loss = torch.stack(
            [local_infonce(block, self.local_segments, self.temperature) for block in blocks]
        ).mean()
        loss = global_loss + self.local_weight * local_loss
        return ObjectiveOutput(loss, {"loss_global": global_loss.detach(), "loss_local": local_loss.detach()})


class PerRankAugmenterLoss(ContrastiveObjective):
    """The mean of ``objective`` over ``ranks`` blocks of rows: the loss whose gradient is the rank average of the
    per-rank augmenter gradients."""

    def __init__(self, objective: ContrastiveObjective, ranks: int) -> None:
        super().__init__()
        self.objective, self.ranks = objective, ranks

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict | None = None) -> ObjectiveOutput:
        blocks = {column: rows.chunk(self.ranks) for column, rows in embeddings.items()}
        outputs = [self.objective({column: rows[r] for column, rows in blocks.items()}) for r in range(self.ranks)]
        logs = {key: torch.stack([output.logs[key] for output in outputs]).mean() for key in outputs[0].logs}
        return ObjectiveOutput(torch.stack([output.loss for output in outputs]).mean(), logs)


def tiny_series(count: int = 24) -> list[dict[str, np.ndarray]]:
    """``count`` standard-normal series [T, C] (fixed seed): one epoch of three global batches of 8."""
    rng = np.random.default_rng(0)
    return [
        {"past_values": rng.standard_normal((STEPS_PER_SERIES, CHANNELS)).astype(np.float32)} for _ in range(count)
    ]


def tiny_autotcl(per_rank_terms: int | None) -> AutoTCLModel:
    """A tiny AutoTCL in the deterministic setting of the module docstring (hard mask, the preset's weights)."""
    config = AutoTCLConfig(
        input_dims=CHANNELS,
        repr_dims=8,
        hidden_dims=8,
        depth=2,
        kernels=[1, 2, 4],
        dropout=0.0,
        aug_hidden_dims=8,
        aug_dim=4,
        gumbel_bias=DETERMINISTIC_GUMBEL_BIAS,
        local_segments=SEGMENTS,
        meta_lr=0.05,
    )
    model = AutoTCLModel(config)
    if per_rank_terms:
        options = {"temperature": config.contrastive_temperature, "local_weight": config.local_weight}
        model.encoder_objective = PerRankEncoderLoss(per_rank_terms, **options, local_segments=SEGMENTS)
        model.augmenter_objective = PerRankAugmenterLoss(model.augmenter_objective, per_rank_terms)
    return model


class CaptureGradients(TrainerCallback):
    """Per step: the augmenter's gradients as its optimizer steps (after the ranks' average) and the encoder's as the
    Trainer's optimizer steps (after DDP's); at the end, the averaged encoder."""

    def __init__(self, model: AutoTCLModel, aug_optimizer: torch.optim.Optimizer) -> None:
        self.model, self.steps, self.averaged_encoder = model, [], None
        aug_optimizer.register_step_pre_hook(self._capture_augmenter)

    def _capture_augmenter(self, optimizer, args, kwargs) -> None:
        self.steps.append({"augmenter": self._gradients()})

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps[-1]["encoder"] = self._gradients()

    def on_train_end(self, args, state, control, **kwargs):
        self.averaged_encoder = {n: p.detach().clone() for n, p in self.model.averaged_encoder.named_parameters()}

    def _gradients(self) -> dict[str, torch.Tensor]:
        return {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


def run(per_device_batch: int, output_dir: str, per_rank_terms: int | None = None) -> dict:
    """``{"losses", "steps", "averaged_encoder", "world_size"}`` after three alternating steps on this process."""
    set_seed(0)
    model = tiny_autotcl(per_rank_terms)
    args = worker_training_args(AutoTCLTrainingConfig, output_dir, per_device_batch, STEPS)
    trainer = AutoTCLTrainer(model, args, train_dataset=tiny_series())
    trainer.aug_optimizer = torch.optim.SGD(
        model.augmenter.parameters(), lr=model.config.meta_lr
    )  # SGD, as the encoder
    capture = CaptureGradients(model, trainer.aug_optimizer)
    trainer.add_callback(capture)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "losses": losses,
        "steps": capture.steps,
        "averaged_encoder": capture.averaged_encoder,
        "world_size": args.world_size,
    }


if __name__ == "__main__":
    out_dir, batch = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(batch, scratch)
    torch.save(results, os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
