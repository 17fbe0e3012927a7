"""Run short ContrastiveTrainer trainings (plain, cached, FSDP, FSDP + cached); save losses and gradients.

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

CACHED = {"gradient_cache": True, "cache_token_budget": 40}
FSDP = {"fsdp": "full_shard", "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]}}
CHUNKED = {"forward_token_budget": 40}  # several length-sorted forwards before one backward
MODES = {"plain": CHUNKED, "cached": CACHED, "fsdp": FSDP, "fsdp_cached": {**FSDP, **CACHED}}
SHARDED = ("fsdp", "fsdp_cached")  # parameters (and gradients) are sharded: compare the losses only


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class CaptureGradients(TrainerCallback):
    def __init__(self, model, objective, sharded):
        self.model, self.objective, self.sharded, self.steps = model, objective, sharded, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.sharded:
            return
        grads = gradients(self.model)
        grads["objective.log_scale"] = self.objective.log_scale.grad.detach().clone()
        self.steps.append(grads)


def run(tokenizer_dir: str, per_device_batch: int, output_dir: str) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    results = {}
    for mode, overrides in MODES.items():
        if not is_distributed_launch():  # the single-process reference runs without FSDP
            overrides = {k: v for k, v in overrides.items() if not k.startswith("fsdp")}
        model = dropout_free_encoder(len(tokenizer))
        args = config(
            os.path.join(output_dir, mode),
            per_device_train_batch_size=per_device_batch,
            max_steps=3,
            max_length=16,
            learnable_temperature=True,
            ddp_backend="gloo" if is_distributed_launch() else None,
            **overrides,
        )
        trainer = ContrastiveTrainer(model, args, triplet_dataset(16), processing_class=tokenizer)
        capture = CaptureGradients(model, trainer.objective, sharded=mode in SHARDED)
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
