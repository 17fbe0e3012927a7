"""Objectives with private random state resume exactly: a restored state dict continues the uninterrupted draws.

Hydra (partner generator), Symile (``"n"`` permutations), DebCSE (``mode="sample"``), SupReMix (Mix-neg ``lam``),
Plackett-Luce (Gumbel noise without a trainer step) and WhitenedCSE (channel permutations) keep the state that
decides their next draws outside the global RNG; ``ResumableRandomState`` puts it in ``state_dict()``, which the
trainers save as ``objective.pt`` with every checkpoint.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from hf_contrastive.objectives.debcse import DebCSE
from hf_contrastive.objectives.hydra import HydraLoss
from hf_contrastive.objectives.plackett_luce import PlackettLuceObjective
from hf_contrastive.objectives.supremix import SupReMixLoss
from hf_contrastive.objectives.symile import SymileLoss
from hf_contrastive.objectives.whitenedcse import WhitenedCSE
from hf_contrastive.trainers.common import OBJECTIVE_STATE_FILE
from hf_contrastive.trainers.multimodal import MultiModalTrainer

from ..vision.multimodal_worker import build, config, make_objective
from .test_debcse import single_column_batch
from .test_plackett_luce import ranking_batch
from .test_whitenedcse import batch_for


def random_columns(rows: int, dim: int, *columns: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {column: torch.randn(rows, dim, generator=generator) for column in columns}


@dataclass
class Case:
    """An objective that draws from private state, and one (embeddings, batch) input it is called on repeatedly."""

    build: Callable[[], torch.nn.Module]
    embeddings: dict[str, torch.Tensor]
    batch: dict


CASES = {
    "hydra": lambda: Case(
        lambda: HydraLoss(num_classes=3, embedding_dim=5, label_embedding_dim=4, gate_hidden_dim=6),
        random_columns(6, 5, "x_view_1", "x_view_2"),
        {"labels": torch.tensor([0, 1, 1, 2, 2, 2])},
    ),
    "hydra_distinct": lambda: Case(
        lambda: HydraLoss(num_classes=3, embedding_dim=5, pair_mode="distinct", gate="open"),
        random_columns(6, 5, "x_view_1", "x_view_2"),
        {"labels": torch.tensor([0, 1, 1, 2, 2, 2])},
    ),
    "symile": lambda: Case(lambda: SymileLoss(negative_sampling="n"), random_columns(6, 4, "a", "b", "c"), {}),
    "debcse_sample": lambda: Case(
        lambda: DebCSE(
            num_neighbors=5, positive_threshold=-1.0, negative_threshold=1.0, mode="sample", semantic_source="model"
        ),
        random_columns(6, 8, "anchor", "positive"),
        single_column_batch(torch.randint(3, 50, (6, 6), generator=torch.Generator().manual_seed(1))),
    ),
    "supremix": lambda: Case(
        lambda: SupReMixLoss(window=5.0),
        random_columns(6, 4, "x_view_1", "x_view_2"),
        {"labels": torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])},
    ),
    "plackett_luce": lambda: Case(
        lambda: PlackettLuceObjective(k=2, num_samples=4, temperature=0.2),
        {**random_columns(2, 8, "query"), **random_columns(7, 8, "documents")},
        ranking_batch([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]], mask=[[1, 1, 1, 0], [1, 1, 1, 1]]),
    ),
    "whitenedcse": lambda: Case(
        lambda: WhitenedCSE(embedding_dim=8, num_groups=2),
        random_columns(6, 8, "anchor", "positive", "positive_2"),
        batch_for(batch_size=6),
    ),
}


def losses_of(objective: torch.nn.Module, case: Case, calls: int) -> list[float]:
    return [objective(case.embeddings, case.batch).loss.item() for _ in range(calls)]


def through_checkpoint_file(state: dict) -> dict:
    """``state`` after ``torch.save`` and the trainer's ``torch.load`` (weights only): a copy, as ``objective.pt``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_restored_state_dict_continues_the_draws_of_the_uninterrupted_object(name):
    case = CASES[name]()
    uninterrupted = case.build()
    losses_of(uninterrupted, case, 2)
    saved = through_checkpoint_file(uninterrupted.state_dict())
    expected = losses_of(uninterrupted, case, 3)

    resumed = case.build()
    resumed.load_state_dict(saved)
    assert losses_of(resumed, case, 3) == expected  # bit for bit: the same draws in the same order
    assert losses_of(case.build(), case, 3) != expected  # the draws matter: a fresh object repeats calls 1-3


def logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


TRAINER_SCENARIOS = {
    # No parameters and no buffers: the random state alone must make the trainer write objective.pt.
    "symile": {
        "objective": "symile",
        "options": {"negative_sampling": "n", "logit_scale_init": 1.0, "learnable_logit_scale": False},
        "dataset": "vectors",
    },
    "hydra": {
        "objective": "hydra",
        "options": {
            "num_classes": 3,
            "embedding_dim": 8,
            "view_columns": ["a", "b"],
            "label_embedding_dim": 4,
            "gate_hidden_dim": 6,
        },
        "dataset": "labelled_vectors",
        "config": {"label_column": "label"},
    },
}


def train_vectors(output_dir, scenario: dict, resume_from_checkpoint: str | None = None) -> MultiModalTrainer:
    """4 SGD steps of the scenario on the worker's vector towers, checkpointing every 2 steps."""
    model, dataset, trainer_kwargs = build(scenario["dataset"], tokenizer=None)
    args = config(str(output_dir), max_steps=4, save_strategy="steps", save_steps=2, **scenario.get("config", {}))
    objective = make_objective(scenario["objective"], scenario["options"])
    trainer = MultiModalTrainer(model, args, train_dataset=dataset, objective=objective, **trainer_kwargs)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


@pytest.mark.parametrize("name", sorted(TRAINER_SCENARIOS))
def test_a_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path, name):
    scenario = TRAINER_SCENARIOS[name]
    full = train_vectors(tmp_path / "full", scenario)
    assert (tmp_path / "full" / "checkpoint-2" / OBJECTIVE_STATE_FILE).exists()
    resumed = train_vectors(tmp_path / "resumed", scenario, str(tmp_path / "full" / "checkpoint-2"))
    assert logged_losses(resumed) == pytest.approx(logged_losses(full), abs=1e-6)
    for (parameter, expected), got in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7, msg=parameter)
    expected_state, resumed_state = full.objective.state_dict(), resumed.objective.state_dict()
    assert expected_state.keys() == resumed_state.keys()
    for key, expected in expected_state.items():
        if key.endswith("_extra_state"):  # the draw counter or generator state after step 4
            assert_equal_random_state(resumed_state[key], expected)
        else:
            torch.testing.assert_close(resumed_state[key], expected, rtol=0, atol=1e-7, msg=key)


def assert_equal_random_state(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        same = torch.equal(got[name], value) if isinstance(value, torch.Tensor) else got[name] == value
        assert same, f"random state {name!r} differs"


def test_a_checkpoint_without_random_state_loads_with_a_warning_and_other_mismatches_still_fail(caplog):
    from hf_contrastive.trainers.common import load_objective_state

    case = CASES["hydra"]()
    saved = case.build().state_dict()
    old_format = {key: value for key, value in saved.items() if not key.endswith("_extra_state")}
    objective = case.build()
    with caplog.at_level("WARNING", logger="hf_contrastive.trainers.common"):
        load_objective_state(objective, old_format, "checkpoint-2/objective.pt")
    assert "checkpoint-2/objective.pt has no random state for ['_extra_state']" in caplog.text
    for key, value in old_format.items():  # everything the old checkpoint had is loaded
        torch.testing.assert_close(objective.state_dict()[key], value, rtol=0, atol=0)

    parameter = next(key for key in old_format if not key.endswith("_extra_state"))
    with pytest.raises(RuntimeError, match=parameter):
        load_objective_state(case.build(), {k: v for k, v in saved.items() if k != parameter}, "objective.pt")
