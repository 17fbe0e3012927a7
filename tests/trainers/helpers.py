"""Small builders shared by the trainer tests and the distributed worker (no pytest imports here)."""

from __future__ import annotations

import torch
from datasets import Dataset

from hf_contrastive.trainers import ContrastiveConfig

from ..conftest import SENTENCES, make_tiny_encoder


def triplet_dataset(rows: int = 16) -> Dataset:
    """(anchor, positive, negative_1) rows with all-distinct texts."""
    anchors, positives, negatives = [], [], []
    for i in range(rows):
        base = SENTENCES[i % len(SENTENCES)]
        anchors.append(f"{base} {i}")
        positives.append(f"{i} {base} again")
        negatives.append(f"{SENTENCES[(i + 5) % len(SENTENCES)]} no {i}")
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "negative_1": negatives})


def config(output_dir, **overrides) -> ContrastiveConfig:
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        temperature=0.1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        optim="sgd",
        lr_scheduler_type="constant",
        warmup_steps=0,
    )
    values.update(overrides)
    return ContrastiveConfig(**values)


def dropout_free_encoder(vocab_size: int, seed: int = 0):
    model = make_tiny_encoder(vocab_size, seed=seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
