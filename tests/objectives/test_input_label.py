"""InputLabelContrast: hand-computed losses of both forms, label masking, gradients, cache, DDP and a short training."""

import math

import pytest
import torch
from datasets import Dataset

from hf_contrastive.cache import GradientCache
from hf_contrastive.data.collator import text_hash
from hf_contrastive.data.label_contrast import label_contrast_dataset
from hf_contrastive.evaluation.classification import LabelAccuracyEvaluator
from hf_contrastive.objectives import build_objective
from hf_contrastive.objectives.input_label import InputLabelContrast, first_occurrence, label_candidate_mask
from hf_contrastive.trainers import ContrastiveTrainer

from ..conftest import SENTENCES, make_tiny_encoder
from ..test_cache import cached_gradients, reference_gradients
from ..trainers.distributed_check import assert_distributed_matches_single
from ..trainers.helpers import config

COLUMNS = ("anchor", "positive", "negative_1")
ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POSITIVES = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
NEGATIVES = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
# cos(anchor_i, positive_i) = [1, 0.8], cos(anchor_i, negative_i) = [0, 0]; at tau = 0.5 the logits are
# row 0: [2, 0], row 1: [1.6, 0].
EMBEDDINGS = {"anchor": ANCHORS, "positive": POSITIVES, "negative_1": NEGATIVES}
# Row 0 has label A (description hash 1), negative B (2); row 1 has label B, negative A.
LABEL_HASHES = [[10, 11], [1, 2], [2, 1]]


def softplus(x):
    return math.log1p(math.exp(x))


def batch_for(hashes, columns=COLUMNS):
    return {"column_names": tuple(columns), "input_hashes": torch.as_tensor(hashes)}


def test_softmax_over_own_labels_matches_hand_computation():
    out = InputLabelContrast(temperature=0.5)(EMBEDDINGS, batch_for(LABEL_HASHES))
    assert out.loss.item() == pytest.approx((softplus(-2.0) + softplus(-1.6)) / 2, rel=1e-6)
    assert out.logs["accuracy"].item() == 1.0
    assert out.logs["effective_negatives"].item() == 1.0


def test_softmax_over_in_batch_labels_counts_each_label_once():
    # Candidates [P0 (A), P1 (B), N0 (B), N1 (A)]: row 0 logits [2, 1.2, 0, 2] keep P0 (target) and P1 (first B);
    # row 1 logits [0, 1.6, 2, 0] keep P0 (first A) and P1 (target). N0, N1 repeat labels already offered.
    out = InputLabelContrast(temperature=0.5, in_batch_labels=True)(EMBEDDINGS, batch_for(LABEL_HASHES))
    assert out.loss.item() == pytest.approx((softplus(1.2 - 2.0) + softplus(0.0 - 1.6)) / 2, rel=1e-6)
    assert out.logs["effective_negatives"].item() == 1.0


def test_in_batch_labels_with_distinct_texts_is_infonce_with_hard_negatives():
    objective = InputLabelContrast(temperature=0.5, in_batch_labels=True)
    out = objective(EMBEDDINGS, batch_for([[10, 11], [1, 2], [3, 4]]))
    reference = build_objective("info_nce", temperature=0.5)(EMBEDDINGS, batch_for([[10, 11], [1, 2], [3, 4]]))
    assert out.loss.item() == pytest.approx(reference.loss.item(), rel=1e-6)


def test_binary_form_matches_hand_computation():
    # z = logit + b with b = -1: row 0 z = [1, -1], row 1 z = [0.6, -1]; l = -log s(z+) - log s(-z-).
    out = InputLabelContrast(form="binary", temperature=0.5, bias=-1.0)(EMBEDDINGS, batch_for(LABEL_HASHES))
    expected = (softplus(-1.0) + softplus(-1.0) + softplus(-0.6) + softplus(-1.0)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.logs["bias"].item() == -1.0


def test_binary_form_in_batch_sums_over_distinct_labels_only():
    # Row 0 keeps P0 (z = 2 - 1) and P1 (z = 1.2 - 1); row 1 keeps P0 (z = 0 - 1) and P1 (z = 1.6 - 1).
    objective = InputLabelContrast(form="binary", temperature=0.5, bias=-1.0, in_batch_labels=True)
    out = objective(EMBEDDINGS, batch_for(LABEL_HASHES))
    expected = (softplus(-1.0) + softplus(0.2) + softplus(-1.0) + softplus(-0.6)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_binary_terms_at_logit_zero_cost_log_two_each():
    zeros = {name: torch.zeros(3, 4) for name in ("anchor", "positive", "negative_1", "negative_2")}
    hashes = torch.arange(12).view(4, 3)
    objective = InputLabelContrast(form="binary", similarity="dot")
    out = objective(zeros, batch_for(hashes, ("anchor", "positive", "negative_1", "negative_2")))
    assert out.loss.item() == pytest.approx(3 * math.log(2), rel=1e-6)


def test_softmax_with_equal_scores_is_log_of_the_number_of_labels():
    same = torch.tensor([[0.3, 0.4]]).repeat(2, 1)
    columns = ("anchor", "positive", "negative_1", "negative_2", "negative_3")
    out = InputLabelContrast()({name: same for name in columns}, batch_for(torch.arange(10).view(5, 2), columns))
    assert out.loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_negative_repeating_the_positive_text_is_masked():
    # Row 1's negative has the text of its own positive: dropped, so row 1 has no negative left (loss 0).
    out = InputLabelContrast(temperature=0.5)(EMBEDDINGS, batch_for([[10, 11], [1, 2], [3, 2]]))
    assert out.loss.item() == pytest.approx(softplus(-2.0) / 2, rel=1e-6)
    assert out.logs["effective_negatives"].item() == 0.5


def test_label_candidate_mask_keeps_target_and_first_copy_of_each_other_label():
    candidates = torch.tensor([[7, 5, 7, 5, 9, 3], [7, 5, 7, 5, 9, 3]])
    anchors = torch.tensor([3, 1])
    target = torch.tensor([2, 1])
    mask = label_candidate_mask(candidates, anchors, target)
    # row 0: target is the 2nd copy of 7 (the 1st is dropped); 5 and 9 once; 3 is the anchor's own text.
    assert mask.tolist() == [[False, True, True, False, True, False], [True, True, False, False, True, True]]


def test_first_occurrence_per_row():
    hashes = torch.tensor([[4, 4, 2, 4, 2], [1, 2, 3, 1, 0]])
    expected = [[True, False, True, False, False], [True, True, True, False, True]]
    assert first_occurrence(hashes).tolist() == expected


@pytest.mark.parametrize(
    "options",
    [
        {"form": "softmax"},
        {"form": "softmax", "in_batch_labels": True},
        {"form": "binary", "bias": -0.5},
        {"form": "binary", "in_batch_labels": True, "similarity": "dot"},
    ],
    ids=["softmax", "softmax-in-batch", "binary", "binary-in-batch-dot"],
)
def test_gradients_match_finite_differences(options):
    torch.manual_seed(0)
    columns = ("anchor", "positive", "negative_1", "negative_2")
    inputs = [torch.randn(3, 5, dtype=torch.float64, requires_grad=True) for _ in columns]
    hashes = torch.tensor([[10, 11, 12], [1, 2, 1], [2, 3, 2], [3, 1, 3]])  # labels repeat across rows
    objective = InputLabelContrast(temperature=0.5, **options)

    def loss(*tensors):
        return objective(dict(zip(columns, tensors)), batch_for(hashes, columns)).loss

    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


def test_learnable_temperature_and_bias_get_gradients():
    objective = InputLabelContrast(
        form="binary", temperature=0.5, learnable_temperature=True, bias=-1.0, learnable_bias=True
    )
    objective(EMBEDDINGS, batch_for(LABEL_HASHES)).loss.backward()
    assert objective.log_scale.grad is not None and objective.log_scale.grad.item() != 0
    assert objective.bias.grad is not None and objective.bias.grad.item() != 0
    assert objective.get_config_dict()["bias"] == -1.0


def test_build_objective_ignores_shared_fields_it_does_not_use():
    objective = build_objective(
        "input_label", defaults={"temperature": 0.1, "symmetric": True, "mask_false_negatives": True}, form="binary"
    )
    assert isinstance(objective, InputLabelContrast)
    assert objective.form == "binary" and objective.temperature == 0.1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"form": "hinge"}, "form must be"),
        ({"bias": -1.0}, "form='binary' only"),
        ({"learnable_bias": True}, "form='binary' only"),
        ({"temperature": 0.0}, "temperature"),
        ({"similarity": "l2"}, "similarity"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        InputLabelContrast(**options)


def test_a_text_without_negative_labels_is_refused():
    with pytest.raises(ValueError, match="at least one negative label"):
        InputLabelContrast()(
            {"anchor": ANCHORS, "positive": POSITIVES}, batch_for([[10, 11], [1, 2]], ("anchor", "positive"))
        )


# ----------------------------------------------------------------------------------------------- with an encoder
DESCRIPTIONS = {"weather": "rain falls on the quiet town", "sport": "the team won the final match"}


def label_batch(tokenizer):
    """3 texts x (anchor, positive, negative_1) where the two descriptions repeat across rows."""
    anchors = [SENTENCES[0], SENTENCES[7], SENTENCES[5]]
    labels = ["weather", "weather", "sport"]
    other = {"weather": "sport", "sport": "weather"}
    texts = anchors + [DESCRIPTIONS[y] for y in labels] + [DESCRIPTIONS[other[y]] for y in labels]
    features = tokenizer(texts, padding=True, return_tensors="pt")
    features.pop("token_type_ids", None)
    hashes = torch.tensor([text_hash(t) for t in texts]).view(3, 3)
    return dict(features), {"column_names": COLUMNS, "input_hashes": hashes}


@pytest.mark.parametrize("options", [{"form": "softmax", "in_batch_labels": True}, {"form": "binary", "bias": -2.0}])
def test_cached_gradients_equal_uncached(tiny_tokenizer, options):
    features, batch = label_batch(tiny_tokenizer)
    objective = InputLabelContrast(temperature=0.1, **options)
    cache = GradientCache(token_budget=24)
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    torch.manual_seed(5)
    ref_loss, ref_grads = reference_gradients(model, objective, features, batch, cache)
    model.zero_grad()
    torch.manual_seed(5)
    loss, grads = cached_gradients(model, objective, features, batch, cache)
    assert len(cache.plan(features["attention_mask"])) > 1
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_trainer_learns_labels_from_descriptions(tiny_tokenizer, tmp_path):
    texts = [SENTENCES[i] for i in (0, 7, 10, 4, 8, 5)]
    labels = ["weather", "weather", "weather", "sport", "sport", "sport"]
    descriptions = {"weather": "rain falls on the quiet town", "sport": "the band played a loud song"}
    rows = label_contrast_dataset(Dataset.from_dict({"text": texts, "label": labels}), descriptions)
    model = make_tiny_encoder(len(tiny_tokenizer), seed=1)
    args = config(
        tmp_path, objective="input_label", max_steps=30, learning_rate=3e-3, optim="adamw_torch",
        per_device_train_batch_size=3, no_duplicates_sampler=False,
    )  # fmt: skip
    evaluator = LabelAccuracyEvaluator(texts, labels, descriptions, name="train")
    trainer = ContrastiveTrainer(model, args, rows, processing_class=tiny_tokenizer, evaluator=evaluator)
    assert trainer.run_evaluator("before")["before_train_accuracy"] == 0.5
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert trainer.run_evaluator()["eval_train_accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"in_batch_labels": True, "learnable_temperature": True},
        {"form": "binary", "in_batch_labels": True, "bias": -10.0, "learnable_bias": True},  # SigLIP init
    ],
    ids=["softmax", "binary"],
)
def test_two_processes_match_one_process_with_the_global_batch(tmp_path, tiny_tokenizer, options):
    scenario = {"objective": "input_label", "options": options, "dataset": "triplets", "modes": ["plain", "cached"]}
    assert_distributed_matches_single(tmp_path, tiny_tokenizer, scenario)


def test_effective_negatives_are_the_sampled_labels_unless_in_batch():
    assert InputLabelContrast().effective_negatives(gathered_rows=32, negatives_per_row=2) == 2
    assert InputLabelContrast(in_batch_labels=True).effective_negatives(gathered_rows=32, negatives_per_row=2) == 95
