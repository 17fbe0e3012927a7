"""Three TSForecastingTrainer steps per MoCo queue size; saves what DDP must keep equal to one process.

``torchrun --nproc_per_node 2 -m tests.timeseries.ts_forecasting_worker OUT_DIR PER_DEVICE_BATCH`` trains every
scenario with the windows split over 2 gloo ranks and saves each rank's results to ``OUT_DIR/rank{r}.pt``;
:func:`run` called in-process with the doubled batch is the reference.

Deterministic on purpose: dropout is off (its masks depend on the local batch size) and the key sees the window
itself (``augmentation="none"``, the paper's default; CoST's jitter draws its noise per rank, which no split of one
process's batch reproduces). The random time step comes from the torch RNG, which the Trainer seeds alike on every
rank, so every rank reads the step the single process reads.
"""

import os
import sys
import tempfile

import numpy as np
import torch
from transformers import TrainerCallback, set_seed

from hf_contrastive.models.ts_forecaster import TSForecaster, TSForecasterConfig
from hf_contrastive.trainers.ts_forecasting import TSForecastingConfig, TSForecastingTrainer

from ..trainers.distributed_check import worker_training_args

QUEUE_SIZES = (16, 12)  # global batch 8: a multiple of it, and one that wraps inside the second step's keys
STEPS = 3
SEQ_LEN, PRED_LEN, CHANNELS = 12, 4, 3


def tiny_windows(count: int = 24) -> list[dict[str, np.ndarray]]:
    """``count`` standard-normal windows (fixed seed): one epoch of three global batches of 8."""
    rng = np.random.default_rng(0)
    return [
        {
            "past_values": rng.standard_normal((SEQ_LEN, CHANNELS)).astype(np.float32),
            "future_values": rng.standard_normal((PRED_LEN, CHANNELS)).astype(np.float32),
        }
        for _ in range(count)
    ]


def tiny_forecaster(queue_size: int) -> TSForecaster:
    """A one-layer forecaster without dropout; momentum 0.5 so that the key encoder moves visibly each step."""
    config = TSForecasterConfig(
        enc_in=CHANNELS,
        seq_len=SEQ_LEN,
        pred_len=PRED_LEN,
        hidden_size=8,
        representation_dim=8,
        ffn_dim=8,
        num_layers=1,
        num_heads=2,
        dropout=0.0,
        moco_queue_size=queue_size,
        moco_momentum=0.5,
    )
    return TSForecaster(config)


class CaptureMoCoState(TrainerCallback):
    """Per optimizer step: the (DDP-averaged) gradients, then, after the momentum update, the MoCo state."""

    def __init__(self, model: TSForecaster) -> None:
        self.model, self.steps = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        gradients = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}
        self.steps.append({"gradients": gradients})

    def on_step_end(self, args, state, control, **kwargs):
        objective = self.model.objective
        self.steps[-1].update(
            queue=objective.queue.clone(),
            queue_ptr=int(objective.queue_ptr),
            momentum_encoder={n: p.detach().clone() for n, p in self.model.momentum_encoder.named_parameters()},
        )


def run(per_device_batch: int, output_dir: str) -> dict:
    """``{queue_size: {"losses", "steps", "world_size"}}`` after three steps of each scenario on this process."""
    windows, results = tiny_windows(), {}
    for queue_size in QUEUE_SIZES:
        set_seed(0)
        model = tiny_forecaster(queue_size)
        args = worker_training_args(
            TSForecastingConfig, os.path.join(output_dir, str(queue_size)), per_device_batch, STEPS
        )
        trainer = TSForecastingTrainer(model, args, train_dataset=windows)
        capture = CaptureMoCoState(model)
        trainer.add_callback(capture)  # after the trainer's EMAUpdate: on_step_end sees the updated key encoder
        trainer.train()
        # "loss" and the objective's terms ("loss_mse", "loss_contrastive"), which TrainerBookkeeping averages over ranks
        losses = [
            {key: value for key, value in entry.items() if key.startswith("loss")}
            for entry in trainer.state.log_history
            if "loss" in entry
        ]
        results[queue_size] = {"losses": losses, "steps": capture.steps, "world_size": args.world_size}
    return results


if __name__ == "__main__":
    out_dir, batch = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(batch, scratch)
    torch.save(results, os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
