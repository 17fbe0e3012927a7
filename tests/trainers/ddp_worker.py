"""Run two short ContrastiveTrainer trainings (plain and cached) and save losses and gradients.

Launched by tests/trainers/test_distributed.py as
``torchrun --nproc_per_node 2 -m tests.trainers.ddp_worker TOKENIZER_DIR OUT_FILE PER_DEVICE_BATCH`` and called
in-process with world size 1 and the doubled batch as the reference.
"""

import os
import sys
import tempfile

import torch
from transformers import AutoTokenizer, TrainerCallback

from hf_contrastive.trainers import ContrastiveTrainer

from .helpers import config, dropout_free_encoder, gradients, triplet_dataset

MODES = {"plain": {}, "cached": {"gradient_cache": True, "cache_token_budget": 40}}


class CaptureGradients(TrainerCallback):
    def __init__(self, model, objective):
        self.model, self.objective, self.steps = model, objective, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        grads = gradients(self.model)
        grads["objective.log_scale"] = self.objective.log_scale.grad.detach().clone()
        self.steps.append(grads)


def run(tokenizer_dir: str, per_device_batch: int, output_dir: str) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    results = {}
    for mode, overrides in MODES.items():
        model = dropout_free_encoder(len(tokenizer))
        args = config(
            os.path.join(output_dir, mode),
            per_device_train_batch_size=per_device_batch,
            max_steps=2,
            max_length=16,
            learnable_temperature=True,
            ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
            **overrides,
        )
        trainer = ContrastiveTrainer(model, args, triplet_dataset(16), processing_class=tokenizer)
        capture = CaptureGradients(model, trainer.objective)
        trainer.add_callback(capture)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        results[mode] = {"losses": losses, "gradients": capture.steps, "world_size": args.world_size}
    return results


if __name__ == "__main__":
    tokenizer_dir, out_file, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(tokenizer_dir, batch, scratch)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_file)
