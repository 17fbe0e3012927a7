"""Run short ContrastiveTrainer trainings in several modes and save their losses and gradients.

A *scenario* (JSON) names the objective, its options, the dataset layout, the modes to run, optional extra
config fields (``"config": {"text_views": 3}``) and optionally the trainer (``"trainer": "plackett_luce"`` trains
ranking rows with ``PlackettLuceTrainer``; ``"trainer": "reranker"`` trains a tiny Qwen2 answer-token reranker on
group rows with ``RerankerTrainer`` and the scenario's ``"loss"``; default ``ContrastiveTrainer``). Launched by
:func:`tests.trainers.distributed_check.assert_distributed_matches_single` as
``torchrun --nproc_per_node 2 -m tests.trainers.ddp_worker TOKENIZER_DIR OUT_FILE PER_DEVICE_BATCH SCENARIO_JSON``
and called in-process with world size 1 and the doubled batch as the reference.
"""

import json
import os
import sys
import tempfile
from dataclasses import fields

import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.trainers.plackett_luce import PlackettLuceConfig, PlackettLuceTrainer

from ..conftest import SENTENCES
from .helpers import config, dropout_free_encoder, gradients, triplet_dataset

CACHED = {"gradient_cache": True, "cache_token_budget": 40}
FSDP = {"fsdp": "full_shard", "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]}}
CHUNKED = {"forward_token_budget": 40}  # several length-sorted forwards before one backward
MODES = {"plain": CHUNKED, "cached": CACHED, "fsdp": FSDP, "fsdp_cached": {**FSDP, **CACHED}}
SHARDED = ("fsdp", "fsdp_cached")  # parameters (and gradients) are sharded: compare the losses only


def ranking_dataset(rows: int = 16) -> Dataset:
    """Ranking rows: 3-6 candidates per query, graded labels, one query without a relevant candidate, and
    judged grades (of a relevant document missing from the candidates) on every third row."""
    records = []
    for i in range(rows):
        relevant = (i * 5 + 3) % len(SENTENCES)
        others = [j for j in range(len(SENTENCES)) if j not in (i % len(SENTENCES), relevant)]
        candidates = [others[(i + 2 * j) % len(others)] for j in range(2 + i % 4)]
        candidates.insert(i % len(candidates), relevant)
        labels = [0 if i == 5 else 2 if j == relevant else int(j % 3 == 0) for j in candidates]
        records.append(
            {
                "query": f"{SENTENCES[i % len(SENTENCES)]} {i}",
                "documents": [f"{SENTENCES[j]} {i}" for j in candidates],
                "labels": labels,
                "judged_relevance": [*labels, 1] if i % 3 == 0 else None,
            }
        )
    return Dataset.from_list(records)


def ranking_config(output_dir, **overrides) -> PlackettLuceConfig:
    """``helpers.config``'s test settings and ``overrides`` as a PlackettLuceConfig (ranking defaults elsewhere)."""
    shared = config(output_dir, **overrides)
    defaults = ContrastiveConfig(output_dir=str(output_dir))
    changed = {
        f.name: getattr(shared, f.name)
        for f in fields(ContrastiveConfig)
        if f.init and (f.name in overrides or getattr(shared, f.name) != getattr(defaults, f.name))
    }
    return PlackettLuceConfig(**{**changed, "output_dir": str(output_dir)})


DATASETS = {
    "triplets": lambda: triplet_dataset(16),
    "text": lambda: Dataset.from_dict({"text": [f"{s} {i}" for i, s in enumerate(SENTENCES + SENTENCES[:4])]}),
    "ranking": lambda: ranking_dataset(16),
}
TRAINERS = {"contrastive": (ContrastiveTrainer, config), "plackett_luce": (PlackettLuceTrainer, ranking_config)}
INFO_NCE = {"objective": "info_nce", "options": {"learnable_temperature": True}, "dataset": "triplets"}
PLACKETT_LUCE = {
    "trainer": "plackett_luce",
    "objective": "plackett_luce",
    "options": {"k": 3, "num_samples": 4, "learnable_temperature": True},
    "dataset": "ranking",
}


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class CaptureGradients(TrainerCallback):
    """Gradients at every optimizer step: the model's and the objective's own parameters (a learned temperature)."""

    def __init__(self, model, objective, sharded):
        self.model, self.objective, self.sharded, self.steps = model, objective, sharded, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.sharded:
            return
        grads = gradients(self.model)
        grads.update({f"objective.{name}": grad for name, grad in gradients(self.objective).items()})
        self.steps.append(grads)


def reranker_groups(rows: int = 8) -> Dataset:
    """Group rows of one positive and 3 negatives each (equal group sizes: the SFT mean over pairs of every rank
    then averages to the global one)."""
    return Dataset.from_list(
        [
            {
                "query": SENTENCES[i % len(SENTENCES)].split(" ", 2)[1],
                "positive": SENTENCES[i % len(SENTENCES)],
                "negatives": [SENTENCES[(i + j) % len(SENTENCES)] for j in (3, 5, 7)],
            }
            for i in range(rows)
        ]
    )


def run_reranker(per_device_batch: int, output_dir: str, scenario: dict) -> dict:
    """RerankerTrainer on a tiny Qwen2 (no dropout) for 3 SGD steps; gradients captured at every step."""
    from transformers import TrainerCallback as Callback

    from hf_contrastive.trainers.reranker import RerankerConfig, RerankerTrainer

    from ..models.test_reranker import causal_reranker

    reranker = causal_reranker()

    class Capture(Callback):
        def __init__(self):
            self.steps = []

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.steps.append(gradients(reranker.model))

    args = RerankerConfig(
        output_dir=os.path.join(output_dir, "reranker"),
        loss=scenario["loss"],
        per_device_train_batch_size=per_device_batch,
        max_steps=3,
        learning_rate=1e-2,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        ddp_backend="gloo" if is_distributed_launch() else None,
    )
    trainer = RerankerTrainer(reranker, args, train_dataset=reranker_groups())
    capture = Capture()
    trainer.add_callback(capture)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"plain": {"losses": losses, "gradients": capture.steps, "world_size": args.world_size}}


def run(tokenizer_dir: str, per_device_batch: int, output_dir: str, scenario: dict = INFO_NCE) -> dict:
    if scenario.get("trainer") == "reranker":
        return run_reranker(per_device_batch, output_dir, scenario)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    results = {}
    for mode in scenario.get("modes", list(MODES)):
        overrides = MODES[mode]
        if not is_distributed_launch():  # the single-process reference runs without FSDP
            overrides = {k: v for k, v in overrides.items() if not k.startswith("fsdp")}
        model = dropout_free_encoder(len(tokenizer))
        trainer_class, make_config = TRAINERS[scenario.get("trainer", "contrastive")]
        args = make_config(
            os.path.join(output_dir, mode),
            per_device_train_batch_size=per_device_batch,
            max_steps=3,
            max_length=16,
            objective=scenario["objective"],
            objective_options=scenario.get("options"),
            ddp_backend="gloo" if is_distributed_launch() else None,
            **{**overrides, **scenario.get("config", {})},
        )
        trainer = trainer_class(model, args, DATASETS[scenario["dataset"]](), processing_class=tokenizer)
        capture = CaptureGradients(model, trainer.objective, sharded=mode in SHARDED)
        trainer.add_callback(capture)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        results[mode] = {"losses": losses, "gradients": capture.steps, "world_size": args.world_size}
    return results


if __name__ == "__main__":
    tokenizer_dir, out_file, batch, scenario = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(tokenizer_dir, batch, scratch, scenario)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_file)
