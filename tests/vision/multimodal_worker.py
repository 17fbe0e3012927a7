"""Run short MultiModalTrainer trainings in several modes and save their losses and gradients (2-process checks).

A *scenario* (JSON) names the objective (a registered name, or ``"module:Class"``), its ``options``, the ``dataset``
kind, the ``modes`` to run (default both) and optional extra config fields (``"config": {...}``):

- ``"clip"``: a tiny ``CLIPModel`` on 16 random images with distinct digit captions (columns ``image``, ``text``);
- ``"vectors"``: 16 rows of float vectors in columns ``a``, ``b``, ``c`` (``VECTOR_DIM`` each), stacked by
  ``stack_vectors`` and embedded by :class:`VectorTowers` (one ``Linear`` per column).

:func:`assert_distributed_matches_single` launches
``torchrun --nproc_per_node 2 -m tests.vision.multimodal_worker TOKENIZER_DIR OUT_FILE PER_DEVICE_BATCH SCENARIO``
and compares with the same run in-process on one process with the doubled batch.
"""

import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoTokenizer, TrainerCallback

from hf_contrastive.data.multimodal import MultiModalCollator, stack_vectors
from hf_contrastive.models.clip import clip_processor
from hf_contrastive.objectives import build_objective
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer

from .helpers import CAPTIONS, IMAGE_SIZE, random_images, tiny_clip

VECTOR_COLUMNS = ("a", "b", "c")
VECTOR_DIM = 4
EMBEDDING_DIM = 8
MODES = {
    "plain": {},
    # 3 images / 30 tokens per mini-batch: several mini-batches per column at 4 and 8 rows.
    "cached": {"gradient_cache": True, "cache_row_budget": 3, "cache_token_budget": 30},
}


class VectorTowers(nn.Module):
    """One ``Linear(VECTOR_DIM, EMBEDDING_DIM)`` per vector column: ``embed_column(c, {"values": [n, d]}) -> [n, D]``."""

    def __init__(self, columns=VECTOR_COLUMNS, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.towers = nn.ModuleDict({column: nn.Linear(VECTOR_DIM, EMBEDDING_DIM) for column in columns})

    def embed_column(self, column: str, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.towers[column](features["values"])


def clip_dataset(rows: int = 16) -> Dataset:
    return Dataset.from_dict({"image": random_images(rows, seed=1), "text": CAPTIONS[: 3 * rows : 3]})


def vector_dataset(rows: int = 16, labelled: bool = False) -> Dataset:
    """Gaussian vectors in columns a, b, c; ``labelled`` adds a ``label`` column of 3 classes (row index mod 3)."""
    rng = np.random.default_rng(0)
    columns = {c: rng.normal(size=(rows, VECTOR_DIM)).tolist() for c in VECTOR_COLUMNS}
    if labelled:
        columns["label"] = [index % 3 for index in range(rows)]
    return Dataset.from_dict(columns)


def build(kind: str, tokenizer) -> tuple[nn.Module, Dataset, dict]:
    """Model, dataset and trainer keyword arguments (processor or collator) of a dataset kind."""
    if kind == "clip":
        return tiny_clip(tokenizer), clip_dataset(), {"processing_class": clip_processor(tokenizer, IMAGE_SIZE)}
    if kind in ("vectors", "labelled_vectors"):
        labelled = kind == "labelled_vectors"
        collator = MultiModalCollator(
            dict.fromkeys(VECTOR_COLUMNS, stack_vectors), label_column="label" if labelled else None
        )
        return VectorTowers(), vector_dataset(labelled=labelled), {"data_collator": collator}
    raise ValueError(f"Unknown dataset kind {kind!r}; expected 'clip', 'vectors' or 'labelled_vectors'.")


def make_objective(name: str, options: dict | None):
    """A registered objective by name, or ``module:Class`` (before the lead registers it)."""
    if ":" not in name:
        return build_objective(name, **(options or {}))
    module, class_name = name.split(":")
    return getattr(importlib.import_module(module), class_name)(**(options or {}))


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


class CaptureGradients(TrainerCallback):
    """The model's and the objective's gradients at every optimizer step."""

    def __init__(self, model, objective):
        self.model, self.objective, self.steps = model, objective, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        grads = gradients(self.model)
        grads.update({f"objective.{name}": grad for name, grad in gradients(self.objective).items()})
        self.steps.append(grads)


def config(output_dir: str, **overrides) -> MultiModalConfig:
    values = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
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
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return MultiModalConfig(**values)


def run(tokenizer_dir: str, per_device_batch: int, output_dir: str, scenario: dict) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    results = {}
    for mode in scenario.get("modes", list(MODES)):
        model, dataset, trainer_kwargs = build(scenario["dataset"], tokenizer)
        args = config(
            os.path.join(output_dir, mode),
            per_device_train_batch_size=per_device_batch,
            ddp_backend="gloo" if is_distributed_launch() else None,
            **{**MODES[mode], **scenario.get("config", {})},
        )
        objective = make_objective(scenario["objective"], scenario.get("options"))
        trainer = MultiModalTrainer(model, args, train_dataset=dataset, objective=objective, **trainer_kwargs)
        capture = CaptureGradients(model, trainer.objective)
        trainer.add_callback(capture)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        results[mode] = {"losses": losses, "gradients": capture.steps, "world_size": args.world_size}
    return results


def assert_distributed_matches_single(tmp_path: Path, tokenizer, scenario: dict, per_device_batch: int = 4) -> None:
    """2 processes x ``per_device_batch`` == 1 process x twice that: losses and every gradient at 3 steps."""
    from tests.trainers.distributed_check import run_two_processes

    distributed = run_two_processes("tests.vision.multimodal_worker", tmp_path, tokenizer, scenario, per_device_batch)
    single = run(str(tmp_path / "tokenizer"), 2 * per_device_batch, str(tmp_path / "single"), scenario)
    for mode in scenario.get("modes", list(MODES)):
        assert distributed[mode]["world_size"] == 2 and single[mode]["world_size"] == 1
        torch.testing.assert_close(
            torch.tensor(distributed[mode]["losses"]), torch.tensor(single[mode]["losses"]), rtol=1e-5, atol=1e-5
        )
        assert len(distributed[mode]["gradients"]) == len(single[mode]["gradients"]) == 3
        for step, (got, expected) in enumerate(zip(distributed[mode]["gradients"], single[mode]["gradients"])):
            assert got.keys() == expected.keys(), mode
            for name in expected:
                torch.testing.assert_close(
                    got[name], expected[name], atol=1e-5, rtol=1e-4, msg=f"{mode} step {step} {name}"
                )


if __name__ == "__main__":
    tokenizer_dir, out_file, batch, scenario = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(tokenizer_dir, batch, scratch, scenario)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_file)
