"""CL2LLoss (CLIP-rocket) on hand-computed cases, and CLIPRocketModel: heads, local mode, save/reload, trainer."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import CLIPModel

from hf_contrastive.data.augment import clip_rocket_views
from hf_contrastive.models.clip_rocket import CLIPRocketConfig, CLIPRocketModel
from hf_contrastive.objectives.clip import CLIPLoss
from hf_contrastive.objectives.clip_rocket import CL2LLoss
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer
from tests.vision.helpers import CAPTIONS, random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer


def _views(num_augs, batch=4, dim=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    names = ["image", "text"] + [f"{m}_view_{k}" for m in ("image", "text") for k in range(1, num_augs + 1)]
    return {name: torch.randn(batch, dim, generator=generator, dtype=torch.float64) for name in names}


def _smoothed_ce(logits, label, eps):
    """Hand-written CE with label smoothing: -(1 - eps) log p_y - eps / N sum_j log p_j (one row)."""
    log_p = [x - math.log(sum(math.exp(v) for v in logits)) for x in logits]
    return -(1 - eps) * log_p[label] - eps / len(logits) * sum(log_p)


def _direction(queries, candidates, scale, eps):
    """Mean over rows of the smoothed CE of ``scale * q_i . c_j`` (rows normalised), labels = row index."""
    q, c = F.normalize(queries, dim=-1), F.normalize(candidates, dim=-1)
    logits = (scale * q @ c.T).tolist()
    return sum(_smoothed_ce(row, i, eps) for i, row in enumerate(logits)) / len(logits)


@pytest.mark.parametrize("reduction,factor", [("mean", 1.0), ("sum", 2.0)])
def test_no_views_is_the_clip_loss(reduction, factor):
    embeddings = _views(0)
    rocket = CL2LLoss(num_augs=0, reduction=reduction).double()
    clip = CLIPLoss().double()
    expected = factor * clip(embeddings, {}).loss
    torch.testing.assert_close(rocket(embeddings, {}).loss, expected)


def test_global_and_local_terms_weighted_one_to_a():
    """L_I = (L_I^glob + 2 L_I^loc) / 3 and likewise for text, with every (a, b) pair and smoothing on local only."""
    embeddings = _views(2, seed=1)
    objective = CL2LLoss(num_augs=2, temperature=0.5, local_temperature=0.25, label_smoothing=0.1, reduction="mean")
    loss = objective.double()(embeddings, {}).loss
    s, s_h, eps = 2.0, 4.0, 0.1
    views = {m: [embeddings[f"{m}_view_{k}"] for k in (1, 2)] for m in ("image", "text")}
    image_local = sum(_direction(a, b, s_h, eps) for a in views["image"] for b in views["text"]) / 4
    text_local = sum(_direction(a, b, s_h, eps) for a in views["text"] for b in views["image"]) / 4
    image_total = (_direction(embeddings["image"], embeddings["text"], s, 0.0) + 2 * image_local) / 3
    text_total = (_direction(embeddings["text"], embeddings["image"], s, 0.0) + 2 * text_local) / 3
    assert loss.item() == pytest.approx((image_total + text_total) / 2, rel=1e-7)  # float32 log-scales


def test_label_smoothing_applies_to_local_terms_only():
    """Logits [10, -10] per row: plain CE ~ 2e-9 (global), smoothed CE(0.1) ~ 1.0 (local)."""
    unit = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    embeddings = {name: unit.clone() for name in ("image", "text", "image_view_1", "text_view_1")}
    objective = CL2LLoss(num_augs=1, temperature=0.1, local_temperature=0.1, label_smoothing=0.1, reduction="mean")
    output = objective.double()(embeddings, {})
    logits = torch.tensor([[10.0, -10.0]], dtype=torch.float64)
    smoothed = F.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(
        -0.95 * math.log(1 / (1 + math.exp(-20))) + 0.05 * (20 + math.log1p(math.exp(-20)))
    )
    assert smoothed.item() == pytest.approx(1.0, abs=1e-8)
    assert output.logs["loss_global"].item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0])).item())
    assert output.logs["loss_local"].item() == pytest.approx(smoothed.item())
    assert output.loss.item() == pytest.approx((output.logs["loss_global"].item() + smoothed.item()) / 2)


def test_shared_temperature_has_no_local_parameter():
    objective = CL2LLoss(num_augs=2, separate_temperature=False)
    assert [name for name, _ in objective.named_parameters()] == ["log_scale"]
    assert objective.local_scale() is not None and objective.local_scale().item() == pytest.approx(1 / 0.07)


def test_missing_view_column_is_named():
    embeddings = _views(1)
    with pytest.raises(ValueError, match="image_view_2"):
        CL2LLoss(num_augs=2)(embeddings, {})
    with pytest.raises(ValueError, match="reduction"):
        CL2LLoss(reduction="max")


# ------------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


def _features(tokenizer, count=4):
    pixels = tiny_clip_processor(tokenizer)(images=random_images(count), return_tensors="pt")["pixel_values"]
    text = tokenizer(CAPTIONS[:count], padding=True, return_tensors="pt")
    return {"pixel_values": pixels}, {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}


def test_columns_give_global_or_local_projections_and_heads(tokenizer):
    clip = tiny_clip(tokenizer)
    model = CLIPRocketModel.from_clip(clip, local_hidden_size=32, local_projection_dim=8, barlow_dim=6, siam_dim=5)
    model.eval()
    pixels, text = _features(tokenizer)
    image = model.embed_column("image", pixels)
    torch.testing.assert_close(image["embedding"], clip.get_image_features(**pixels).pooler_output)
    view = model.embed_column("text_view_3", text)
    assert view["embedding"].shape == (4, 8) and view["barlow"].shape == (4, 6)
    assert view["siam_proj"].shape == view["siam_pred"].shape == (4, 5)
    with pytest.raises(ValueError, match="'image_view_<k>'"):
        model.embed_column("image_crop", pixels)
    with pytest.raises(ValueError, match="pixel_values"):
        model.embed_column("image", text)


def test_local_text_mode_drops_only_on_text_views_in_training(tokenizer):
    model = CLIPRocketModel.from_clip(tiny_clip(tokenizer), text_dropout=0.3, text_drop_path=0.3)
    model.local_projectors["text"][1].eval()  # keep BatchNorm statistics out of the comparison
    _, text = _features(tokenizer)
    model.train()
    torch.manual_seed(0)
    first_view, first_global = model.embed_column("text_view_1", text), model.embed_column("text", text)
    second_view, second_global = model.embed_column("text_view_1", text), model.embed_column("text", text)
    torch.testing.assert_close(first_global["embedding"], second_global["embedding"])
    assert not torch.allclose(first_view["embedding"], second_view["embedding"])
    model.eval()
    torch.testing.assert_close(
        model.embed_column("text_view_1", text)["embedding"], model.embed_column("text_view_1", text)["embedding"]
    )
    assert not any(layer._forward_pre_hooks for layer in model.clip.text_model.encoder.layers)


def test_save_and_reload_give_identical_outputs(tokenizer, tmp_path):
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(CLIPRocketConfig.model_type, CLIPRocketConfig, exist_ok=True)
    AutoModel.register(CLIPRocketConfig, CLIPRocketModel, exist_ok=True)
    model = CLIPRocketModel.from_clip(tiny_clip(tokenizer), barlow_dim=6, siam_dim=5, siam_momentum_encoder=True)
    pixels, text = _features(tokenizer)
    model.train()
    model.embed_column("image_view_1", pixels)  # moves the BatchNorm running statistics away from their init
    model.eval()
    model.save_pretrained(tmp_path / "rocket")
    model.clip.save_pretrained(tmp_path / "clip")
    reloaded = AutoModel.from_pretrained(tmp_path / "rocket").eval()
    assert isinstance(reloaded, CLIPRocketModel) and reloaded.config.siam_momentum_encoder
    for column, features in (("image", pixels), ("image_view_2", pixels), ("text_view_1", text)):
        expected, actual = model.embed_column(column, features), reloaded.embed_column(column, features)
        assert expected.keys() == actual.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)
    clip = CLIPModel.from_pretrained(tmp_path / "clip")
    torch.testing.assert_close(
        clip.get_text_features(**text).pooler_output, model.embed_column("text", text)["embedding"]
    )


def test_gradient_cache_support_and_momentum_parameters(tokenizer):
    plain = CLIPRocketModel.from_clip(tiny_clip(tokenizer), local_projector_norm="layer")
    assert plain.supports_gradient_cache
    byol = CLIPRocketModel.from_clip(tiny_clip(tokenizer), siam_dim=5, siam_momentum_encoder=True)
    assert not byol.supports_gradient_cache
    assert not any(p.requires_grad for p in byol.momentum_encoder.parameters())
    online = byol.online_encoder().state_dict()
    for name, value in byol.momentum_encoder.state_dict().items():
        torch.testing.assert_close(value, online[name])
    with pytest.raises(ValueError, match="siam_dim"):
        CLIPRocketConfig(byol.config.clip_config, siam_momentum_encoder=True)


# ------------------------------------------------------------------------------------------------ trainer
def test_trainer_step_clamps_both_log_scales_to_ln_100(tokenizer, tmp_path):
    model = CLIPRocketModel.from_clip(tiny_clip(tokenizer), local_hidden_size=16)
    with torch.no_grad():
        model.clip.logit_scale.fill_(5.0)
    objective = CL2LLoss(num_augs=2)
    with torch.no_grad():
        objective.local_log_scale.fill_(5.0)
    dataset = Dataset.from_dict({"image": random_images(8), "text": CAPTIONS[:8]})
    args = MultiModalConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = MultiModalTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tiny_clip_processor(tokenizer),
        objective=objective,
        views=clip_rocket_views(16, num_augs=2, flip=False, backend="pil"),
    )
    assert objective.log_scale.item() == pytest.approx(5.0)  # taken from the CLIP model's logit_scale
    trainer.train()
    assert objective.log_scale.item() == pytest.approx(math.log(100), abs=1e-6)
    assert objective.local_log_scale.item() == pytest.approx(math.log(100), abs=1e-6)
    trainer.save_model(str(tmp_path / "saved"))
    assert model.clip.logit_scale.item() == pytest.approx(math.log(100), abs=1e-6)
