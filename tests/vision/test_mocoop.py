"""MoCoOp: the spec's correctness checks, the frozen CLIP, save/reload, the trainer and base-to-new evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from hf_contrastive.evaluation.base_to_new import (
    BaseToNewEvaluator,
    ClassSplit,
    ZeroShotClassifier,
    accuracy,
    harmonic_mean,
)
from hf_contrastive.models.clip import image_embeddings, text_embeddings
from hf_contrastive.models.mocoop import MoCoOpConfig, MoCoOpModel, hard_prompt_features
from hf_contrastive.objectives.mocoop import (
    gate_loss,
    gate_target,
    group_prototypes,
    mix_expert_features,
    text_to_text_loss,
    top_k_routing,
)
from hf_contrastive.trainers.prompt_learning import PromptLearningConfig, PromptLearningTrainer

from .helpers import random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer

TEMPLATES = [
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {} written by hand.",
    "a small picture of the numeral {}.",
]
GROUPS = [1, 1, 2]
BASE = ["zero", "one", "two"]
ALL = ["zero", "one", "two", "three", "four"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return tiny_clip_processor(tokenizer)


@pytest.fixture(scope="module")
def pixels(processor):
    return processor(images=random_images(6, seed=1), return_tensors="pt")["pixel_values"]


def _model(tokenizer, seed: int = 0, **options) -> MoCoOpModel:
    clip = tiny_clip(tokenizer, seed=seed)
    return MoCoOpModel.from_clip(clip, tokenizer, BASE, TEMPLATES, GROUPS, all_classnames=ALL, **options)


# ------------------------------------------------------------------------------------------------ the math, by hand
def test_group_prototypes_average_each_group():
    h = F.normalize(torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    prototypes = group_prototypes(h, [1, 2])
    torch.testing.assert_close(prototypes[0], h[0])
    torch.testing.assert_close(prototypes[1], F.normalize(h[1] + h[2], dim=-1))
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(2, 4))


def test_top2_mixing_hand_case():
    router_logits = torch.tensor([[3.0, 1.0, 2.0]])
    indices, weights = top_k_routing(router_logits, k=2)
    assert indices.tolist() == [[0, 2]]
    torch.testing.assert_close(weights, torch.tensor([[0.7311, 0.2689]]), atol=1e-4, rtol=0)
    experts = torch.randn(3, 4, 5)
    mixed = mix_expert_features(experts, indices, weights)
    torch.testing.assert_close(mixed[0], weights[0, 0] * experts[0] + weights[0, 1] * experts[2])


def test_gate_target_sharpens_top2_hand_case():
    target = gate_target(torch.tensor([[0.2, 0.3, 0.1]]), k=2)
    torch.testing.assert_close(target, torch.tensor([[0.4750, 0.5250, 1.95e-5]]), atol=1e-4, rtol=2e-2)
    # g = <f, P_{k, y}>: unit vectors make g exactly [0.2, 0.3, 0.1].
    image = torch.tensor([[1.0, 0.0]])
    prototypes = torch.tensor([[[0.2, 0.98], [0.3, 0.954], [0.1, 0.995]]])
    router_logits = torch.tensor([[0.5, -1.0, 2.0]])
    q = gate_target(torch.tensor([[0.2, 0.3, 0.1]]), k=2)
    expected = -(q * router_logits.log_softmax(dim=-1)).sum()
    torch.testing.assert_close(gate_loss(router_logits, image, prototypes, k=2), expected)


def test_gate_target_carries_gradient_unless_detached():
    image = F.normalize(torch.randn(2, 4), dim=-1).requires_grad_(True)
    prototypes, router_logits = F.normalize(torch.randn(2, 3, 4), dim=-1), torch.randn(2, 3, requires_grad=True)
    gate_loss(router_logits, image, prototypes, k=2).backward()
    assert image.grad.abs().sum() > 0
    image.grad = None
    gate_loss(router_logits, image, prototypes, k=2, detach_target=True).backward()
    assert image.grad is None


def test_text_loss_hand_case_and_no_temperature_bound():
    identity = torch.eye(2).unsqueeze(0)  # one expert, two classes, T = P: logits [[1, 0], [0, 1]]
    torch.testing.assert_close(text_to_text_loss(identity, identity), torch.tensor(math.log(1 + math.exp(-1))))
    generator = torch.Generator().manual_seed(0)
    for classes in (2, 10, 50):
        features = F.normalize(torch.randn(3, classes, 16, generator=generator), dim=-1)
        prototypes = F.normalize(torch.randn(3, classes, 16, generator=generator), dim=-1)
        assert text_to_text_loss(features, prototypes) >= math.log(classes) - 2
        assert text_to_text_loss(prototypes, prototypes) >= math.log(classes) - 2


# ------------------------------------------------------------------------------------------------ the model
def test_single_expert_at_init_equals_zero_shot_clip(tokenizer, pixels):
    """E = 1, no auxiliary losses, contexts at init and w = 0: zero-shot CLIP with the template (no period)."""
    clip = tiny_clip(tokenizer, seed=2)
    model = MoCoOpModel.from_clip(
        clip, tokenizer, BASE, ["a photo of the digit {}."], [1], text_loss_weight=0.0, gate_loss_weight=0.0
    )
    encoded = tokenizer([f"a photo of the digit {name}" for name in BASE], padding=True, return_tensors="pt")
    text = F.normalize(text_embeddings(clip, encoded["input_ids"], encoded["attention_mask"]), dim=-1)
    image = F.normalize(image_embeddings(clip, pixels), dim=-1)
    expected = clip.logit_scale.exp() * image @ text.T
    torch.testing.assert_close(model(pixels).logits, expected, atol=1e-5, rtol=0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(model(pixels, labels=labels).loss, F.cross_entropy(expected, labels))


def test_prototypes_are_the_grouped_hard_prompts(tokenizer):
    model = _model(tokenizer)
    h = hard_prompt_features(model.clip, tokenizer, TEMPLATES, ALL)
    torch.testing.assert_close(model.prototypes[2], F.normalize(h[2] + h[3], dim=-1))
    assert model.config.context_lengths == [[5, 0], [2, 0], [2, 3]]  # words before / after {} of each first template


def test_text_loss_gradient_reaches_context_and_bias_not_prototypes(tokenizer):
    model = _model(tokenizer)
    model.correction.data.normal_(std=0.1)  # away from 0 so the bias gradient is generic
    text_to_text_loss(model.expert_text_features(), model.prototypes).backward()
    assert model.ctx_before[0].grad.abs().sum() > 0 and model.ctx_after[2].grad.abs().sum() > 0
    assert model.correction.grad.abs().sum() > 0
    assert not model.prototypes.requires_grad and model.prototypes.grad is None


def test_gradients_reach_only_the_prompt_learner(tokenizer, pixels):
    model = _model(tokenizer)
    output = model(pixels, labels=torch.tensor([0, 1, 2, 2, 1, 0]))
    assert {"loss_ce", "loss_text", "loss_gate"} <= {key for key, value in output.items() if value is not None}
    output.loss.backward()
    trained = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert {
        "router.weight",
        "correction",
        "ctx_before.0",
        "vision_layernorms.encoder__layers__0__layer_norm1__weight",
    } <= trained
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in model.clip.parameters())
    assert not any(name.startswith(("clip", "_clip")) for name, _ in model.named_parameters())


def test_save_reload_same_logits_without_clip_weights(tokenizer, pixels, tmp_path):
    model = _model(tokenizer).eval()
    with torch.no_grad():
        model.router.weight.normal_()
        model.ctx_before[1].add_(0.3)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    clip_tensors = sum(tensor.numel() for tensor in model.clip.state_dict().values())
    assert not any(key.startswith(("text_model", "vision_model", "clip", "logit_scale")) for key in saved)
    assert sum(tensor.numel() for tensor in saved.values()) < clip_tensors / 10
    AutoConfig.register(MoCoOpConfig.model_type, MoCoOpConfig, exist_ok=True)
    AutoModel.register(MoCoOpConfig, MoCoOpModel, exist_ok=True)
    reloaded = AutoModel.from_pretrained(tmp_path, clip_model=model.clip)
    assert isinstance(reloaded, MoCoOpModel)
    for classnames in (None, ["three", "four"]):
        torch.testing.assert_close(
            reloaded(pixels, classnames=classnames).logits, model(pixels, classnames=classnames).logits
        )


def test_reload_loads_clip_from_its_path(tokenizer, pixels, tmp_path):
    clip = tiny_clip(tokenizer, seed=4)
    clip.save_pretrained(tmp_path / "clip")
    model = MoCoOpModel.from_clip(clip, tokenizer, BASE, TEMPLATES, GROUPS, clip_name_or_path=str(tmp_path / "clip"))
    model.save_pretrained(tmp_path / "prompts")
    reloaded = MoCoOpModel.from_pretrained(tmp_path / "prompts")
    torch.testing.assert_close(reloaded(pixels).logits, model(pixels).logits)


def test_reload_without_clip_path_asks_for_clip(tokenizer, tmp_path):
    _model(tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="clip_model="):
        MoCoOpModel.from_pretrained(tmp_path)


def test_bad_inputs_are_refused(tokenizer, pixels):
    model = _model(tokenizer)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(pixels, labels=torch.tensor([0, 1, 2, 3, 0, 0]))
    with pytest.raises(ValueError, match=r"\['nine'\] are unknown"):
        model(pixels, classnames=["nine"])
    with pytest.raises(ValueError, match="no tokens"):
        MoCoOpModel.from_clip(model.clip, tokenizer, ["zero", " "], TEMPLATES, GROUPS)
    with pytest.raises(ValueError, match="exceed the text tower's 24 positions"):
        MoCoOpModel.from_clip(model.clip, tokenizer, [" ".join(["zero"] * 20)], TEMPLATES, GROUPS)
    with pytest.raises(ValueError, match="summing to the 4 templates"):
        MoCoOpModel.from_clip(model.clip, tokenizer, BASE, TEMPLATES, [1, 1])
    with pytest.raises(ValueError, match="missing from all_classnames"):
        MoCoOpModel.from_clip(model.clip, tokenizer, BASE, TEMPLATES, GROUPS, all_classnames=["zero"])


# ------------------------------------------------------------------------------------------------ trainer
def _rows(count: int, seed: int = 0) -> Dataset:
    return Dataset.from_dict({"image": random_images(count, seed=seed), "label": [i % 3 for i in range(count)]})


def test_trainer_two_lr_groups_logs_terms_and_leaves_clip_frozen(tokenizer, processor, tmp_path):
    model = _model(tokenizer)
    clip_before = {name: tensor.clone() for name, tensor in model.clip.state_dict().items()}
    args = PromptLearningConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=6, max_steps=3, learning_rate=0.05, optim="sgd",
        logging_steps=3, report_to=[], save_strategy="no", use_cpu=True, vision_layernorm_lr_ratio=0.1,
    )  # fmt: skip
    trainer = PromptLearningTrainer(model, args, image_processor=processor.image_processor, train_dataset=_rows(12))
    trainer.train()
    prompt_group, layernorm_group = trainer.optimizer.param_groups
    assert layernorm_group["initial_lr"] == pytest.approx(0.1 * prompt_group["initial_lr"])
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.clip.parameters()}
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert {"loss_ce", "loss_text", "loss_gate"} <= set(logged)
    assert sum(logged[f"router_usage_{expert}"] for expert in range(len(GROUPS))) == pytest.approx(1.0, abs=1e-3)
    for name, tensor in model.clip.state_dict().items():
        torch.testing.assert_close(tensor, clip_before[name])


def test_trainer_refuses_missing_image_column(tokenizer, processor, tmp_path):
    args = PromptLearningConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    rows = Dataset.from_dict({"picture": random_images(2), "label": [0, 1]})
    with pytest.raises(ValueError, match=r"no column\(s\) \['image'\]"):
        PromptLearningTrainer(_model(tokenizer), args, image_processor=processor.image_processor, train_dataset=rows)


# ------------------------------------------------------------------------------------------------ base-to-new
def test_accuracy_and_harmonic_mean_by_hand():
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1])) == pytest.approx(
        200 / 3
    )
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_base_to_new_classifies_each_split_among_its_own_classes():
    """Hand-built 2-D embeddings: 'pixels' are the image features themselves."""
    names = ["a", "b", "c", "d"]
    class_embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]]), dim=-1)
    classify = ZeroShotClassifier(lambda features: features, class_embeddings, names)
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.2, 1.0], [0.0, 1.0]])
    labels = [0, 1, 2, 3, 2]  # the last novel image (class c) looks like d: wrong among {c, d}
    base = ClassSplit.from_labelled(images, labels, [0, 1], names)
    novel = ClassSplit.from_labelled(images, labels, [2, 3], names)
    assert base.labels.tolist() == [0, 1] and novel.labels.tolist() == [0, 1, 0] and novel.classnames == ["c", "d"]
    metrics = BaseToNewEvaluator(base, novel, batch_size=2)(classify)
    assert metrics["base_accuracy"] == pytest.approx(100.0)  # among {a, b}; among all four, image 0 -> c would win
    assert metrics["novel_accuracy"] == pytest.approx(200 / 3)
    assert metrics["harmonic_mean"] == pytest.approx(harmonic_mean(100.0, 200 / 3))
