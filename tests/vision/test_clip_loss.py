"""CLIPLoss: hand-computed values, transformers' CLIP loss, label smoothing, gradients, distributed and cached."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.cache import GradientCache
from hf_contrastive.models.clip import image_embeddings, text_embeddings
from hf_contrastive.objectives.clip import CLIPLoss, clip_loss

from .helpers import CAPTIONS, random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer
from .multimodal_worker import assert_distributed_matches_single

CLIP_SCENARIO = {"objective": "hf_contrastive.objectives.clip:CLIPLoss", "dataset": "clip"}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_two_pairs_match_the_hand_computed_loss():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # scale 2: image logits [[1.2, 0], [1.6, 2]], text logits [[1.2, 1.6], [0, 2]]; CE of 2 classes = softplus(margin).
    expected = (softplus(-1.2) + softplus(-0.4) + softplus(0.4) + softplus(-2.0)) / 4
    assert clip_loss(images, texts, 2.0).item() == pytest.approx(expected, rel=1e-6)
    objective = CLIPLoss(temperature=0.5, learnable_temperature=False)
    output = objective({"image": images, "text": texts * 3.0}, {})  # the objective normalises
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    assert output.logs["accuracy"].item() == 1.0


def test_equals_transformers_clip_loss(tokenizer):
    model = tiny_clip(tokenizer).eval()
    processor = tiny_clip_processor(tokenizer)
    inputs = processor(text=CAPTIONS[:6], images=random_images(6), return_tensors="pt", padding=True)
    with torch.no_grad():
        model.logit_scale.fill_(1.7)
        reference = model(**inputs, return_loss=True).loss
        embeddings = {
            "image": image_embeddings(model, inputs["pixel_values"]),
            "text": text_embeddings(model, inputs["input_ids"], inputs["attention_mask"]),
        }
        objective = CLIPLoss()
        objective.log_scale.fill_(1.7)
        ours = objective(embeddings, {}).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_label_smoothing_equals_torch_cross_entropy():
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    labels = torch.arange(5)
    expected = (
        F.cross_entropy(3.0 * images @ texts.T, labels, label_smoothing=0.1)
        + F.cross_entropy(3.0 * texts @ images.T, labels, label_smoothing=0.1)
    ) / 2
    torch.testing.assert_close(clip_loss(images, texts, 3.0, label_smoothing=0.1), expected)


def test_label_smoothing_matches_the_spec_example():
    # N = 2, logits [10, -10]: CE_0.1 = -0.95 log p0 - 0.05 log p1 ~= 0.05 * 20 = 1.0, plain CE ~= 2e-9.
    images = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    loss = clip_loss(images, images, 10.0, label_smoothing=0.1)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
    assert clip_loss(images, images, 10.0).item() < 1e-8


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    images = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    def loss(a, b, s):
        return clip_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), s.exp(), label_smoothing=0.1)

    assert torch.autograd.gradcheck(loss, (images, texts, log_scale))


def test_scale_is_clamped_at_max_scale():
    objective = CLIPLoss(max_scale=100.0)
    with torch.no_grad():
        objective.log_scale.fill_(10.0)
    assert objective.scale().item() == pytest.approx(100.0)


def test_bad_options_and_single_pair_are_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        CLIPLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        CLIPLoss()({"image": torch.randn(1, 4), "text": torch.randn(1, 4)}, {})
    with pytest.raises(ValueError, match="missing"):
        CLIPLoss(text_column="caption")({"image": torch.randn(2, 4), "text": torch.randn(2, 4)}, {})


def test_cached_gradients_equal_uncached(tokenizer):
    processor = tiny_clip_processor(tokenizer)
    images = processor.image_processor(images=random_images(7), return_tensors="pt")["pixel_values"]
    texts = processor.tokenizer(CAPTIONS[:7], padding=True, return_tensors="pt")
    features = {"image": {"pixel_values": images}, "text": dict(texts)}

    def embed(model, batch):
        out = {}
        if "image" in batch:
            out["image"] = {"image": image_embeddings(model, batch["image"]["pixel_values"])}
        if "text" in batch:
            text = batch["text"]
            out["text"] = {"text": text_embeddings(model, text["input_ids"], text["attention_mask"])}
        return out

    def grads(cached: bool):
        model, objective = tiny_clip(tokenizer), CLIPLoss()
        if cached:
            cache = GradientCache(token_budget=20, row_budget=3)
            assert len(cache.plan_column(features["image"])) == 3 and len(cache.plan_column(features["text"])) > 1
            cache.step_columns(lambda b: embed(model, b), features, lambda e: (objective(e, {}).loss, {}))
        else:
            flat = {name: value for out in embed(model, features).values() for name, value in out.items()}
            objective(flat, {}).loss.backward()
        named = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return {**named, "log_scale": objective.log_scale.grad}

    cached, plain = grads(True), grads(False)
    assert cached.keys() == plain.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path, tokenizer):
    assert_distributed_matches_single(tmp_path, tokenizer, CLIP_SCENARIO)
