"""DebCSE with a frozen teacher: semantic similarity from ``batch["teacher_embeddings"]``, supplied by the trainer."""

import copy
import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from hf_contrastive.objectives import InfoNCE, build_objective
from hf_contrastive.objectives.debcse import DebCSE, debcse_loss
from hf_contrastive.trainers import ContrastiveTrainer

from ..conftest import SENTENCES, make_tiny_encoder
from ..trainers.distributed_check import assert_distributed_matches_single
from ..trainers.helpers import config, gradients
from .test_debcse import IDS, VECTORS, hand_objective, single_column_batch

# Teacher vectors of the three hand-made sentences: v01 = 0.28, v02 = 0.8, v12 = 0.224. The model (VECTORS) calls s1
# the neighbour of s0 (cos 0.8); the teacher calls s2 its neighbour (cos 0.8) and s1 a non-neighbour (0.28).
TEACHER = torch.tensor([[1.0, 0.0, 0.0], [0.28, 0.96, 0.0], [0.8, 0.0, 0.6]], dtype=torch.float64)
MINING = {"num_neighbors": 3, "positive_threshold": 0.9, "negative_threshold": 0.97}  # active on a random encoder


def teacher_batch(teacher: torch.Tensor = TEACHER) -> dict:
    """The hand-made single-column batch with the teacher's embeddings of both (identical) columns [2*3, 3]."""
    return {**single_column_batch(IDS), "teacher_embeddings": teacher.repeat(2, 1)}


# ----------------------------------------------------------------------------------------------- objective
def test_mined_positive_follows_the_teacher_not_the_model():
    """Hand-computed pools, bins (2 x 2), propensities and gates with v from the teacher, scores from the model.

    C+ = own + top-1 teacher neighbour: {0, 2}, {1, 0}, {2, 0}; bins (from test_debcse) 2, 0 | 2, 2 | 2, 0, so
    e+(2) = 4/6, e+(0) = 2/6; gates max(v - 0.7, 0): own 0.3, v02 0.1, v10 0.28 -> 0. Anchor 0: 0.3 / (4/6) = 0.45
    and 0.1 / (2/6) = 0.3 -> (0.6, 0, 0.4). C- = all others; bins (0,1), (1,0) in 2 (e- = 2/6), the rest in 0
    (4/6); gates max(0.5 - v, 0): 0.22 (v = 0.28), 0 (v = 0.8), 0.276 (v = 0.224).
    """
    out = hand_objective(semantic_source="teacher")({"anchor": VECTORS, "positive": VECTORS}, teacher_batch())
    positive = torch.tensor([[0.6, 0.0, 0.4], [0.0, 1.0, 0.0], [0.4, 0.0, 0.6]], dtype=torch.float64)
    w10, w12 = 0.22 / (2 / 6), 0.276 / (4 / 6)
    negative = torch.tensor(
        [[0.0, 1.0, 0.0], [w10 / (w10 + w12), 0.0, w12 / (w10 + w12)], [0.0, 1.0, 0.0]], dtype=torch.float64
    )
    scores = VECTORS @ VECTORS.T  # the loss scores the *model's* embeddings (tau = 1)
    expected = debcse_loss(scores, positive, negative, torch.zeros(3, 3, dtype=torch.bool)).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-9)
    assert out.logs["mined_positive_share"].item() == pytest.approx(0.8 / 3)
    assert out.logs["positive_surface"].item() == pytest.approx((0.6 + 1.0 + 0.6) / 3)  # u(s0, s2) = 0

    from_model = hand_objective(semantic_source="model")({"anchor": VECTORS, "positive": VECTORS}, teacher_batch())
    assert from_model.logs["mined_positive_share"].item() == pytest.approx(1 / 6)  # s1 for s0, as in test_debcse
    assert from_model.logs["positive_surface"].item() == pytest.approx((0.875 + 0.875 + 1.0) / 3)


def test_semantic_similarity_is_the_teacher_cosine_matrix_whatever_its_scale():
    objective = hand_objective(semantic_source="teacher")
    scaled = teacher_batch(TEACHER * torch.tensor([[2.0], [0.5], [7.0]], dtype=torch.float64))
    semantic = objective.semantic_similarity(VECTORS, VECTORS, scaled, ["positive"])
    torch.testing.assert_close(semantic, TEACHER @ TEACHER.T)


def test_teacher_source_without_teacher_embeddings_names_the_fix():
    with pytest.raises(ValueError, match="teacher_embeddings.*semantic_source='model'"):
        DebCSE()({"anchor": VECTORS, "positive": VECTORS}, single_column_batch(IDS))
    wrong_rows = {**single_column_batch(IDS), "teacher_embeddings": TEACHER}
    with pytest.raises(ValueError, match="3 rows.*2 columns x 3 rows = 6"):
        DebCSE()({"anchor": VECTORS, "positive": VECTORS}, wrong_rows)


def test_the_option_decides_whether_the_trainer_supplies_a_teacher():
    assert DebCSE().needs_teacher_embeddings and DebCSE().get_config_dict()["semantic_source"] == "teacher"
    assert not DebCSE(semantic_source="model").needs_teacher_embeddings
    assert build_objective("debcse", semantic_source="model").needs_teacher_embeddings is False
    assert not InfoNCE().needs_teacher_embeddings
    with pytest.raises(ValueError, match="semantic_source"):
        DebCSE(semantic_source="current")


# ----------------------------------------------------------------------------------------------- trainer
class RecordingDebCSE(DebCSE):
    """DebCSE that keeps the token ids and teacher embeddings of every batch it sees."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, embeddings, batch):
        keys = ("input_ids", "attention_mask", "teacher_embeddings")
        self.seen.append({key: batch[key].detach().clone() for key in keys})
        return super().forward(embeddings, batch)


def text_dataset() -> Dataset:
    return Dataset.from_dict({"text": [f"{s} {i}" for i, s in enumerate(SENTENCES)]})


def embed_eval(model, seen: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=seen["input_ids"], attention_mask=seen["attention_mask"]).embeddings


def test_teacher_is_the_initial_model_frozen_while_the_model_trains(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))  # dropout on: the teacher must run in eval mode
    initial = copy.deepcopy(model)
    objective = RecordingDebCSE(temperature=0.1, **MINING)
    args = config(tmp_path, max_steps=2, max_length=16, forward_token_budget=40)
    trainer = ContrastiveTrainer(model, args, text_dataset(), processing_class=tiny_tokenizer, objective=objective)
    trainer.train()

    assert len(objective.seen) == 2
    for seen in objective.seen:
        torch.testing.assert_close(seen["teacher_embeddings"], embed_eval(initial, seen), atol=1e-5, rtol=1e-5)
    trained = embed_eval(model, objective.seen[-1])
    assert (trained - objective.seen[-1]["teacher_embeddings"]).abs().max() > 1e-3  # the model moved, not T
    for (name, weight), (_, frozen) in zip(initial.named_parameters(), trainer.teacher.named_parameters()):
        assert torch.equal(frozen, weight), name
        assert not frozen.requires_grad
    assert not trainer.teacher.training
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in trainer.teacher.parameters()}
    assert trainer.contrastive_facts()["teacher"] == "frozen copy of the initial model"


def test_eval_loss_uses_the_teacher(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    objective = RecordingDebCSE(temperature=0.1, **MINING)
    args = config(tmp_path, max_length=16, per_device_eval_batch_size=4)
    trainer = ContrastiveTrainer(
        model, args, text_dataset(), text_dataset(), processing_class=tiny_tokenizer, objective=objective
    )
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and len(objective.seen) == 3  # 12 rows in batches of 4
    for seen in objective.seen:
        torch.testing.assert_close(seen["teacher_embeddings"], embed_eval(model, seen), atol=1e-5, rtol=1e-5)


def test_explicit_teacher_and_teacher_path(tmp_path, tiny_tokenizer):
    student = make_tiny_encoder(len(tiny_tokenizer), pooling="cls")
    other = make_tiny_encoder(len(tiny_tokenizer), seed=3)
    args = config(tmp_path, objective="debcse")
    trainer = ContrastiveTrainer(student, args, text_dataset(), processing_class=tiny_tokenizer, teacher=other)
    assert trainer.teacher is other and not other.training and not any(p.requires_grad for p in other.parameters())
    assert trainer.contrastive_facts()["teacher"] == "frozen model passed as teacher"

    other.save_pretrained(tmp_path / "encoder")
    student.backbone.save_pretrained(tmp_path / "backbone")
    batch = trainer.data_collator([{"text": s} for s in SENTENCES[:3]])
    for name, reference in (("encoder", other), ("backbone", student)):  # a bare backbone gets the student's pooling
        path = str(tmp_path / name)
        args = config(tmp_path, objective="debcse", teacher_name_or_path=path)
        trainer = ContrastiveTrainer(student, args, text_dataset(), processing_class=tiny_tokenizer)
        assert trainer.contrastive_facts()["teacher"] == f"frozen {path}"
        torch.testing.assert_close(embed_eval(trainer.teacher, batch), embed_eval(reference, batch))


@pytest.mark.parametrize(("objective", "options"), [("info_nce", None), ("debcse", {"semantic_source": "model"})])
def test_a_teacher_for_an_objective_that_ignores_it_is_refused(tmp_path, tiny_tokenizer, objective, options):
    model = make_tiny_encoder(len(tiny_tokenizer))
    args = config(tmp_path, objective=objective, objective_options=options)
    with pytest.raises(ValueError, match="does not use teacher embeddings"):
        ContrastiveTrainer(model, args, text_dataset(), processing_class=tiny_tokenizer, teacher=model)
    trainer = ContrastiveTrainer(model, args, text_dataset(), processing_class=tiny_tokenizer)
    assert trainer.teacher is None and "teacher" not in trainer.contrastive_facts()


def test_cached_step_with_a_teacher_has_the_gradients_of_the_uncached_step(tmp_path, tiny_tokenizer):
    """Dropout on, same chunks: the cache replays the student's dropout; the teacher draws no random numbers."""
    runs = {}
    for cached in (False, True):
        model = make_tiny_encoder(len(tiny_tokenizer))
        args = config(
            tmp_path / str(cached),
            objective="debcse",
            objective_options={**MINING, "simcse_weight": 0.5},
            gradient_cache=cached,
            cache_token_budget=40,
            forward_token_budget=40,
            max_length=16,
        )
        trainer = ContrastiveTrainer(model, args, text_dataset(), processing_class=tiny_tokenizer)
        steps = []
        trainer.add_callback(CaptureGradients(model, steps))
        trainer.train()
        history = [entry for entry in trainer.state.log_history if "loss" in entry]
        runs[cached] = ([entry["loss"] for entry in history], steps)
        assert all(entry["mined_positive_share"] > 0 for entry in history)
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    for step, (cached_grads, plain_grads) in enumerate(zip(runs[True][1], runs[False][1])):
        for name, grad in plain_grads.items():
            torch.testing.assert_close(cached_grads[name], grad, atol=1e-5, rtol=1e-5, msg=f"step {step} {name}")


class CaptureGradients(TrainerCallback):
    """Record the gradients the optimizer is about to apply at every step."""

    def __init__(self, model, steps: list) -> None:
        self.model, self.steps = model, steps

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append(gradients(self.model))


# ----------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
@pytest.mark.parametrize("semantic_source", ["teacher", "model"])
def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path, tiny_tokenizer, semantic_source):
    options = {**MINING, "semantic_source": semantic_source, "simcse_weight": 0.5}
    scenario = {"objective": "debcse", "options": options, "dataset": "text", "modes": ["plain", "cached"]}
    assert_distributed_matches_single(tmp_path, tiny_tokenizer, scenario)
