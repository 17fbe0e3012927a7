"""CLOSE: adapters (the spec's correctness checks), the classifier and prefix captioner, caching, save/reload, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, T5Config

from hf_contrastive.data.close import CaptionCollator, add_clip_embeddings, embedding_matrix
from hf_contrastive.models.close import (
    CLOSECaptioner,
    CLOSECaptionerConfig,
    CLOSEClassifier,
    CLOSEClassifierConfig,
    CovNoiseAdapter,
    FrozenCLIP,
    GaussianNoiseAdapter,
    LinearAdapter,
    MeanShiftAdapter,
    sigma_for_dim,
)

from .helpers import CAPTIONS, random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer

DIM = 16


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture(scope="module")
def frozen_clip(tokenizer):
    return FrozenCLIP(tiny_clip(tokenizer), tiny_clip_processor(tokenizer))


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def fitted_adapters() -> list:
    text, image = unit_rows(200, seed=1), unit_rows(200, seed=2)
    return [
        GaussianNoiseAdapter(0.1),
        MeanShiftAdapter(DIM, 0.1).fit(text, image),
        MeanShiftAdapter(DIM, 0.1, renormalize_shift=True).fit(text, image),
        CovNoiseAdapter(DIM, 0.1).fit(text, image),
        LinearAdapter(DIM, 0.1).fit(text, image),
    ]


def tiny_decoder_config(tokenizer) -> T5Config:
    return T5Config(
        vocab_size=len(tokenizer), d_model=24, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,
    )  # fmt: skip


def tiny_captioner(tokenizer, **config_kwargs) -> CLOSECaptioner:
    torch.manual_seed(0)
    config = CLOSECaptionerConfig(decoder_config=tiny_decoder_config(tokenizer), clip_dim=DIM, **config_kwargs)
    return CLOSECaptioner(config)


# ----------------------------------------------------------------------------------------------- adapters
def test_noise_statistics_match_the_spec_for_d768_sigma_01():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(1, 768), dim=-1).expand(10_000, 768)
    raw = GaussianNoiseAdapter(0.1, renormalize=False).train()(x)
    noise = raw - x
    assert noise.mean().abs() < 1e-3 and abs(noise.std().item() - 0.1) < 1e-3  # sigma is the per-dimension std
    assert abs(raw.pow(2).sum(dim=1).mean().item() - (1 + 768 * 0.01)) < 0.05  # E||x + sigma n||^2 = 8.68
    renormalised = GaussianNoiseAdapter(0.1).train()(x)
    assert torch.allclose(renormalised.norm(dim=1), torch.ones(10_000), atol=1e-6)
    expected_cosine = 1 / math.sqrt(1 + 768 * 0.01)  # 0.339
    assert abs((renormalised * x).sum(dim=1).mean().item() - expected_cosine) < 0.01


@pytest.mark.parametrize("adapter", fitted_adapters(), ids=lambda a: type(a).__name__)
def test_every_adapter_returns_unit_vectors_in_training(adapter):
    out = adapter.train()(unit_rows(64, seed=3))
    assert torch.allclose(out.norm(dim=1), torch.ones(64), atol=1e-6)


@pytest.mark.parametrize("adapter", fitted_adapters(), ids=lambda a: type(a).__name__)
def test_adapters_are_deterministic_in_eval_and_random_in_training(adapter):
    x = unit_rows(8, seed=4)
    adapter.eval()
    assert torch.equal(adapter(x), adapter(x))
    adapter.train()
    assert not torch.equal(adapter(x), adapter(x))


def test_eval_mode_gaussian_and_covariance_adapters_are_the_identity():
    x = unit_rows(8, seed=5)
    assert torch.equal(GaussianNoiseAdapter(0.3).eval()(x), x)
    covariance = CovNoiseAdapter(DIM, 0.3).fit(unit_rows(50, seed=6), unit_rows(50, seed=7)).eval()
    assert torch.equal(covariance(x), x)  # as the official CovNoise: shift and noise only in training


def test_zero_sigma_is_the_identity_on_unit_vectors():
    x = unit_rows(32, seed=8)
    assert torch.allclose(GaussianNoiseAdapter(0.0).train()(x), x, atol=1e-6)


def test_mean_shift_moves_the_text_mean_onto_the_image_mean_on_a_hand_case():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    adapter = MeanShiftAdapter(2, sigma=0.0, scale=1.0).fit(text, image).eval()
    assert torch.equal(adapter.delta, torch.tensor([-1.0, -1.0]))  # mean(I) - mean(T) = [-.5,-.5] - [.5,.5]
    shifted = adapter(text)
    assert torch.equal(shifted, torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))
    assert torch.equal(shifted.mean(dim=0), image.mean(dim=0))
    half = MeanShiftAdapter(2, sigma=0.0, scale=0.5).fit(text, image).eval()
    assert torch.equal(half(text), text + 0.5 * torch.tensor([-1.0, -1.0]))


def test_linear_adapter_recovers_an_exact_affine_map():
    text = unit_rows(100, seed=9)
    weight = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(10))
    bias = torch.randn(DIM, generator=torch.Generator().manual_seed(11))
    adapter = LinearAdapter(DIM, sigma=0.0).fit(text, text @ weight.T + bias).eval()
    assert torch.allclose(adapter.weight, weight, atol=1e-4) and torch.allclose(adapter.bias, bias, atol=1e-4)
    x = unit_rows(4, seed=12)
    assert torch.allclose(adapter(x), F.normalize(x @ weight.T + bias, dim=-1), atol=1e-5)


def test_covariance_adapter_stores_the_difference_mean_and_covariance():
    text, image = unit_rows(300, seed=13), unit_rows(300, seed=14)
    adapter = CovNoiseAdapter(DIM, sigma=0.0).fit(text, image)
    differences = (image - text).double()
    assert torch.allclose(adapter.delta.double(), differences.mean(dim=0), atol=1e-6)
    tril = adapter.difference_scale_tril.double()
    assert torch.allclose(tril @ tril.T, torch.cov(differences.T), atol=1e-5)


def test_sigma_for_dim_keeps_the_total_noise_energy():
    assert math.isclose(64 * sigma_for_dim(0.12, 64) ** 2, 768 * 0.12**2)


# ----------------------------------------------------------------------------------------------- models
def test_adapter_applies_to_text_inputs_only(frozen_clip):
    model = CLOSEClassifier(CLOSEClassifierConfig(clip_dim=DIM, num_labels=3, sigma=0.5)).train()
    image = frozen_clip.embed_images(random_images(4))
    assert torch.equal(model(image_embedding=image).logits, model(image_embedding=image).logits)
    text = frozen_clip.embed_texts(CAPTIONS[:4])
    assert not torch.equal(model(text_embedding=text).logits, model(text_embedding=text).logits)
    model.eval()
    assert torch.allclose(model(text_embedding=text).logits, model.head(text), atol=1e-6)  # no noise in eval


def test_classifier_loss_is_cross_entropy_of_its_logits():
    model = CLOSEClassifier(CLOSEClassifierConfig(clip_dim=DIM, num_labels=3, hidden_size=8)).eval()
    embeddings, labels = unit_rows(5), torch.tensor([0, 2, 1, 1, 0])
    output = model(text_embedding=embeddings, labels=labels)
    assert torch.allclose(output.loss, F.cross_entropy(output.logits, labels))


def test_prefix_has_prefix_length_tokens_and_the_encoder_reads_prefix_plus_text(tokenizer):
    model = tiny_captioner(tokenizer).eval()
    assert model.prefix_tokens(unit_rows(3)).shape == (3, 4, 24)
    question = tokenizer(["what digit is this", "which"], padding=True, return_tensors="pt")
    encoded, mask = model.encode(
        image_embedding=unit_rows(2), input_ids=question["input_ids"], attention_mask=question["attention_mask"]
    )
    length = question["input_ids"].shape[1]
    assert encoded.last_hidden_state.shape == (2, 4 + length, 24)
    assert torch.equal(mask[:, 4:], question["attention_mask"]) and bool(mask[:, :4].all())


def test_multi_target_loss_is_the_token_weighted_mean_of_single_target_losses(tokenizer):
    model = tiny_captioner(tokenizer).eval()  # no noise: the three forwards see the same prefix
    embedding = unit_rows(1)
    collator = CaptionCollator(tokenizer)
    targets = ["a handwritten seven", "the number seven written by hand"]
    both = collator([{"text_embedding": embedding[0].tolist(), "caption": targets}])
    assert both["target_mapping"].tolist() == [0, 0]
    loss = model(text_embedding=embedding, labels=both["labels"], target_mapping=both["target_mapping"]).loss
    singles, counts = [], []
    for target in targets:
        labels = collator([{"text_embedding": embedding[0].tolist(), "caption": target}])["labels"]
        singles.append(model(text_embedding=embedding, labels=labels).loss)
        counts.append((labels != -100).sum())
    expected = sum(single * count for single, count in zip(singles, counts)) / sum(counts)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, (singles[0] + singles[1]) / 2)  # lengths differ: token weighting matters


def test_gradients_reach_the_head_and_decoder_but_not_the_frozen_clip(tokenizer, frozen_clip):
    model = tiny_captioner(tokenizer, sigma=0.2).train()
    embeddings = frozen_clip.embed_texts(CAPTIONS[:4])
    batch = CaptionCollator(tokenizer)(
        [{"text_embedding": e.tolist(), "caption": c} for e, c in zip(embeddings, CAPTIONS)]
    )
    model(**batch).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in frozen_clip.model.parameters())
    assert model.prefix.weight.grad.abs().sum() > 0
    assert model.language_model.get_encoder().block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("adapter", ["mean_shift", "cov_noise", "linear"])
def test_classifier_save_reload_keeps_outputs_and_adapter_statistics(tmp_path, adapter):
    config = CLOSEClassifierConfig(clip_name_or_path="my/clip", clip_dim=DIM, num_labels=4, adapter=adapter, sigma=0.3)
    model = CLOSEClassifier(config)
    model.fit_adapter(unit_rows(40, seed=1), unit_rows(40, seed=2))
    model.save_pretrained(tmp_path)
    reloaded = CLOSEClassifier.from_pretrained(tmp_path).eval()
    model.eval()
    text, image = unit_rows(6, seed=3), unit_rows(6, seed=4)
    assert torch.equal(reloaded(text_embedding=text).logits, model(text_embedding=text).logits)
    assert torch.equal(reloaded(image_embedding=image).logits, model(image_embedding=image).logits)
    assert (reloaded.config.adapter, reloaded.config.sigma, reloaded.config.clip_name_or_path) == (
        adapter,
        0.3,
        "my/clip",
    )


def test_captioner_save_reload_generates_the_same_tokens_and_holds_no_clip(tmp_path, tokenizer, frozen_clip):
    model = tiny_captioner(tokenizer, adapter="mean_shift", sigma=0.1, clip_name_or_path="my/clip")
    model.fit_adapter(unit_rows(40, seed=1), unit_rows(40, seed=2))
    model.save_pretrained(tmp_path)
    reloaded = CLOSECaptioner.from_pretrained(tmp_path).eval()
    model.eval()
    images = frozen_clip.embed_images(random_images(3))
    kwargs = {"num_beams": 3, "max_new_tokens": 6}
    generated = model.generate(image_embedding=images, **kwargs)
    assert generated.shape[0] == 3
    assert torch.equal(reloaded.generate(image_embedding=images, **kwargs), generated)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert "adapter.delta" in saved and not any("vision_model" in key or "text_model" in key for key in saved)
    assert reloaded.config.decoder_config.d_model == 24 and reloaded.config.clip_name_or_path == "my/clip"


def test_configs_reload_through_the_auto_classes(tmp_path):
    for config_class, model_class in (
        (CLOSEClassifierConfig, CLOSEClassifier),
        (CLOSECaptionerConfig, CLOSECaptioner),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
    model = CLOSEClassifier(CLOSEClassifierConfig(clip_dim=DIM, num_labels=2, adapter="linear"))
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, CLOSEClassifier) and reloaded.config.adapter == "linear"


# ----------------------------------------------------------------------------------------------- data and errors
def test_cached_embeddings_equal_the_frozen_clip_and_are_unit_norm(frozen_clip):
    images = random_images(5)
    dataset = Dataset.from_dict({"caption": CAPTIONS[:5], "image": images})
    dataset = add_clip_embeddings(dataset, frozen_clip.embed_texts, "caption", "text_embedding", batch_size=2)
    cached = embedding_matrix(dataset, "text_embedding")
    assert torch.allclose(cached, frozen_clip.embed_texts(CAPTIONS[:5]), atol=1e-6)
    assert torch.allclose(cached.norm(dim=1), torch.ones(5), atol=1e-5)
    assert dataset.column_names == ["caption", "image", "text_embedding"]


def test_caption_collator_lowercases_masks_padding_and_maps_targets(tokenizer):
    rows = [
        {"text_embedding": [0.0] * DIM, "caption": "A Handwritten SEVEN"},
        {"text_embedding": [1.0] * DIM, "caption": "a scanned digit 7"},
    ]
    batch = CaptionCollator(tokenizer)(rows)
    assert batch["text_embedding"].shape == (2, DIM) and "target_mapping" not in batch
    first = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(first, skip_special_tokens=True) == "a handwritten seven"
    assert first[-1] == tokenizer.sep_token_id  # the decoder's EOS ends every target
    assert (batch["labels"] == -100).sum() == (batch["labels"].shape[1] - (batch["labels"] != -100).sum(dim=1)).sum()


def test_missing_caption_column_is_a_clear_error(frozen_clip, tokenizer):
    dataset = Dataset.from_dict({"text": ["a handwritten seven"]})
    with pytest.raises(ValueError, match=r"\['caption'\].*\['text'\]"):
        add_clip_embeddings(dataset, frozen_clip.embed_texts, "caption", "text_embedding")
    with pytest.raises(ValueError, match="'caption'"):
        CaptionCollator(tokenizer)([{"text_embedding": [0.0] * DIM, "text": "a handwritten seven"}])


def test_embedding_of_the_wrong_dimension_is_a_clear_error(tokenizer):
    classifier = CLOSEClassifier(CLOSEClassifierConfig(clip_name_or_path="my/clip", clip_dim=DIM, num_labels=2))
    with pytest.raises(ValueError, match=r"image_embedding must be \[batch, 16\].*my/clip.*\(2, 32\)"):
        classifier(image_embedding=torch.randn(2, 32))
    with pytest.raises(ValueError, match="text_embedding must be"):
        tiny_captioner(tokenizer)(text_embedding=torch.randn(2, 8))
    with pytest.raises(ValueError, match="exactly one of text_embedding"):
        classifier(text_embedding=unit_rows(2), image_embedding=unit_rows(2))
    shifted = CLOSEClassifier(CLOSEClassifierConfig(clip_dim=DIM, num_labels=2, adapter="mean_shift"))
    with pytest.raises(ValueError, match=r"paired.*\[N >= 2, 16\]"):
        shifted.fit_adapter(unit_rows(4), unit_rows(5))


def test_bad_adapter_settings_are_refused():
    with pytest.raises(ValueError, match="adapter must be one of"):
        CLOSEClassifierConfig(adapter="gaussian")
    with pytest.raises(ValueError, match="sigma"):
        CLOSEClassifierConfig(sigma=-0.1)
