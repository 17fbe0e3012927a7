"""DenseCLIP: score maps, the pixel-text loss, context-aware prompting, the head interface, the trainer, save/reload.

The numbered checks are the spec's correctness checks (../shared/papers/denseclip.md).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_contrastive.data.segmentation import DIGIT_CLASS_NAMES, IGNORE_INDEX, SEGMENTATION_FEATURES
from hf_contrastive.models.clip import image_embeddings
from hf_contrastive.models.denseclip import ConvSegmentationHead, DecoderAttention, DenseCLIPConfig, DenseCLIPSegmenter
from hf_contrastive.models.prompting import build_prompt_layout, encode_prompts, prompt_special_ids
from hf_contrastive.objectives.denseclip import DenseCLIPLoss, pixel_cross_entropy, pixel_text_loss
from hf_contrastive.trainers.dense import DenseCLIPTrainer, DenseCLIPTrainingConfig

from .helpers import tiny_clip, tiny_clip_tokenizer

K = len(DIGIT_CLASS_NAMES)
SMALL_DECODER = {"context_decoder_width": 8, "context_decoder_heads": 2, "context_decoder_layers": 1}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture(scope="module")
def clip(tokenizer):
    return tiny_clip(tokenizer, seed=0)


def segmenter(clip, tokenizer, seed=0, **config):
    torch.manual_seed(seed)
    options = {**SMALL_DECODER, "head_channels": 8, **config}
    return DenseCLIPSegmenter.from_clip(clip, tokenizer, DIGIT_CLASS_NAMES, **options)


def pixels(batch=2, size=32, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- score map
def test_score_map_is_the_cosine_of_each_pixel_and_each_class_by_hand():
    dense = torch.tensor([[[[3.0, 0.0]], [[4.0, -2.0]]]])  # [B=1, C=2, h=1, w=2]: pixels (3, 4) and (0, -2)
    text = torch.tensor([[[1.0, 0.0], [0.0, 5.0], [-6.0, -8.0]]])  # [B=1, K=3, C=2]
    expected = torch.tensor([[[[0.6, 0.0]], [[0.8, -1.0]], [[-1.0, 0.8]]]])
    torch.testing.assert_close(DenseCLIPSegmenter.score_map(dense, text), expected)


def test_score_map_in_range_and_one_where_a_pixel_points_like_a_class_check_1():
    dense, text = torch.randn(2, 6, 3, 4), torch.randn(2, 5, 6)
    dense[1, :, 2, 0] = 7.0 * text[1, 3]  # same direction after normalisation
    scores = DenseCLIPSegmenter.score_map(dense, text)
    assert scores.shape == (2, 5, 3, 4) and scores.abs().max() <= 1 + 1e-6
    assert scores[1, 3, 2, 0] == pytest.approx(1.0, abs=1e-6)
    einsum = torch.einsum("bchw,bkc->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=-1))
    torch.testing.assert_close(scores, einsum)


def test_forward_score_map_uses_projected_patch_tokens_and_the_context_aware_text(clip, tokenizer):
    model = segmenter(clip, tokenizer).eval()
    x = pixels()
    out = model(x)
    _, global_feature, dense = model.dense_features(x)
    expected = torch.einsum("bchw,bkc->bkhw", F.normalize(dense, dim=1), F.normalize(out.text_embeddings, dim=-1))
    torch.testing.assert_close(out.score_map, expected)
    # token 0 after post_layernorm + visual_projection is CLIP's own image embedding (at CLIP's input size)
    small = pixels(size=16)
    torch.testing.assert_close(model.dense_features(small)[1], image_embeddings(model.clip, small))


def test_shapes_at_input_resolution_for_any_multiple_of_the_patch_size(clip, tokenizer):
    model = segmenter(clip, tokenizer).eval()
    for size in (16, 40):  # CLIP's 16, and 40 (interpolated position embeddings, 5x5 patches)
        out = model(pixels(batch=3, size=size))
        assert out.logits.shape == (3, K, size, size)
        assert out.score_map.shape == (3, K, size // 8, size // 8)
        assert out.text_embeddings.shape == (3, K, clip.config.projection_dim)
        assert out.loss is None


# ----------------------------------------------------------------------------------------------- losses
def test_aux_loss_hand_case_check_3():
    score_map = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    label0, label1 = torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 4, 4, dtype=torch.long)
    assert pixel_text_loss(score_map, label0).item() == pytest.approx(math.log1p(math.exp(-2 / 0.07)), rel=1e-3)
    assert pixel_text_loss(score_map, label0).item() < 1e-12
    assert pixel_text_loss(score_map, label1).item() == pytest.approx(2 / 0.07, rel=1e-6)


def test_aux_loss_equals_cross_entropy_of_upsampled_scores_over_tau_with_ignore_index():
    generator = torch.Generator().manual_seed(1)
    score_map = torch.rand(2, 4, 3, 3, generator=generator) * 2 - 1
    labels = torch.randint(0, 4, (2, 12, 12), generator=generator)
    labels[0, :5] = IGNORE_INDEX
    upsampled = F.interpolate(score_map / 0.1, size=(12, 12), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(upsampled, labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(pixel_text_loss(score_map, labels, temperature=0.1), expected)


def test_ignored_pixels_contribute_nothing_check_4():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 5, generator=generator)
    labels = torch.randint(0, 3, (2, 5, 5), generator=generator)
    labels[1, 2:, :] = IGNORE_INDEX
    changed = logits.clone()
    changed[1, :, 2:, :] = torch.randn(3, 3, 5, generator=generator) * 50
    assert pixel_cross_entropy(changed, labels) == pixel_cross_entropy(logits, labels)
    assert pixel_text_loss(changed, labels) == pixel_text_loss(logits, labels)  # same size: no upsampling mix


def test_all_ignored_batch_gives_zero_loss_with_a_graph_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = pixel_cross_entropy(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_total_loss_is_seg_plus_weighted_aux_and_logs_both_terms():
    generator = torch.Generator().manual_seed(3)
    logits, score_map = torch.randn(2, 3, 8, 8, generator=generator), torch.rand(2, 3, 2, 2, generator=generator)
    labels = torch.randint(0, 3, (2, 8, 8), generator=generator)
    out = DenseCLIPLoss(aux_weight=0.4)({"logits": logits, "score_map": score_map}, {"labels": labels})
    seg, aux = F.cross_entropy(logits, labels), pixel_text_loss(score_map, labels)
    torch.testing.assert_close(out.loss, seg + 0.4 * aux)
    torch.testing.assert_close(out.logs["loss_seg"], seg)
    torch.testing.assert_close(out.logs["loss_aux"], aux)
    baseline = DenseCLIPLoss()({"logits": logits, "score_map": None}, {"labels": labels})
    torch.testing.assert_close(baseline.loss, seg)
    assert "loss_aux" not in baseline.logs
    with pytest.raises(ValueError, match="aux_weight must be >= 0"):
        DenseCLIPLoss(aux_weight=-1)


# ----------------------------------------------------------------------------------------------- prompting
def test_class_embeddings_are_the_prompt_encoder_on_sos_context_name_eos(clip, tokenizer):
    model = segmenter(clip, tokenizer)
    layout = build_prompt_layout(
        model.config.class_token_ids, 8, 0, prompt_special_ids(tokenizer), 24, DIGIT_CLASS_NAMES
    )
    assert (layout.before_slot[:, 1:9] == torch.arange(8)).all()  # the context sits right after [SOS]
    torch.testing.assert_close(model.class_text_embeddings(), encode_prompts(model.clip, layout, model.context))


def test_decoder_attention_equals_torch_multihead_attention_without_qkv_bias():
    torch.manual_seed(0)
    ours = DecoderAttention(width=8, heads=2, dropout=0.0)
    reference = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        reference.out_proj.weight.copy_(ours.out_proj.weight)
        ours.out_proj.bias.zero_()
    query, memory = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    torch.testing.assert_close(ours(query, memory), reference(query, memory, memory, need_weights=False)[0])


def test_gamma_zero_makes_text_embeddings_context_free_and_image_independent_check_2(clip, tokenizer):
    model = segmenter(clip, tokenizer).eval()
    with torch.no_grad():
        model.gamma.zero_()
        free = model.class_text_embeddings()
        out = model(torch.cat([pixels(1, seed=4), pixels(1, seed=5)]))
    torch.testing.assert_close(out.text_embeddings, free.expand(2, -1, -1))


def test_gamma_at_init_moves_text_by_gamma_times_the_decoder_output_check_2(clip, tokenizer):
    model = segmenter(clip, tokenizer).eval()
    x = pixels()
    with torch.no_grad():
        out = model(x)
        text = model.class_text_embeddings()
        _, global_feature, dense = model.dense_features(x)
        visual = torch.cat([global_feature.unsqueeze(1), dense.flatten(2).transpose(1, 2)], dim=1)
        v_post = model.context_decoder(text.expand(2, -1, -1), visual)
    assert torch.equal(model.gamma, torch.full_like(model.gamma, 1e-4))
    shift = (out.text_embeddings - text).norm(dim=-1)
    torch.testing.assert_close(shift, 1e-4 * v_post.norm(dim=-1))
    assert (shift / text.norm(dim=-1)).max() < 1e-2


def test_gradient_reaches_context_decoder_gamma_and_head_but_trainer_freezes_the_text_encoder_check_6(
    clip, tokenizer, tmp_path
):
    model = segmenter(clip, tokenizer)
    DenseCLIPTrainer(model, DenseCLIPTrainingConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    labels = torch.randint(0, K, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    model(pixels(), labels=labels).loss.backward()
    for parameter in (model.context, model.gamma, *model.context_decoder.parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert model.segmentation_head.classifier.weight.grad.abs().sum() > 0
    text_parameters = [p for n, p in model.named_parameters() if n.startswith(model.text_encoder_prefixes)]
    assert text_parameters and all(not p.requires_grad and p.grad is None for p in text_parameters)
    only_aux = segmenter(clip, tokenizer)  # the aux loss alone reaches the context through the text encoder
    pixel_text_loss(only_aux(pixels(), labels=labels).score_map, labels).backward()
    assert only_aux.context.grad.abs().sum() > 0 and only_aux.gamma.grad.abs().sum() > 0
    assert only_aux.segmentation_head.classifier.weight.grad is None


# ----------------------------------------------------------------------------------------------- head interface
def test_head_takes_features_plus_one_score_channel_per_class_check_5(clip, tokenizer):
    hidden = clip.config.vision_config.hidden_size
    model = segmenter(clip, tokenizer)
    assert model.head_in_channels == hidden + K == model.segmentation_head.in_channels
    assert segmenter(clip, tokenizer, text_guidance=False).head_in_channels == hidden
    with pytest.raises(ValueError, match=rf"takes {hidden} channels, but the features are {hidden} \+ {K}"):
        segmenter(clip, tokenizer, segmentation_head=ConvSegmentationHead(hidden, K))


class LinearHead(nn.Module):
    """A 1x1 convolution: the smallest head that fits the interface (no in_channels attribute)."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features):
        return self.conv(features)


def test_any_head_plugs_in_and_reloads_with_its_weights(clip, tokenizer, tmp_path):
    hidden = clip.config.vision_config.hidden_size
    model = segmenter(clip, tokenizer, segmentation_head=LinearHead(hidden + K, K)).eval()
    x = pixels()
    assert model(x).logits.shape == (2, K, 32, 32)
    model.save_pretrained(tmp_path)
    reloaded = DenseCLIPSegmenter.from_pretrained(tmp_path, segmentation_head=LinearHead(hidden + K, K)).eval()
    torch.testing.assert_close(reloaded(x).logits, model(x).logits, rtol=0, atol=0)
    wrong = segmenter(clip, tokenizer, segmentation_head=LinearHead(hidden + K, K - 1))
    with pytest.raises(ValueError, match=rf"expected \[B, {K}, h, w\]"):
        wrong(x)


def test_baseline_has_no_text_no_score_map_and_only_the_segmentation_loss(clip, tokenizer):
    model = segmenter(clip, tokenizer, text_guidance=False)
    labels = torch.randint(0, K, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    out = model(pixels(), labels=labels)
    assert out.score_map is None and out.text_embeddings is None and out.loss_aux is None
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert not any(name.startswith(("context", "gamma")) for name, _ in model.named_parameters())


# ----------------------------------------------------------------------------------------------- save / reload
def test_save_and_reload_give_identical_logits_and_config(clip, tokenizer, tmp_path):
    model = segmenter(clip, tokenizer)
    with torch.no_grad():
        model.gamma.fill_(0.5)  # not the init value: the reload must read it
    model.save_pretrained(tmp_path)
    reloaded = DenseCLIPSegmenter.from_pretrained(tmp_path)
    model.eval(), reloaded.eval()
    x = pixels()
    torch.testing.assert_close(reloaded(x).logits, model(x).logits, rtol=0, atol=0)
    assert reloaded.config.class_names == list(DIGIT_CLASS_NAMES)
    assert reloaded.config.class_token_ids == model.config.class_token_ids
    torch.testing.assert_close(reloaded.clip.text_projection.weight, clip.text_projection.weight)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_pixel_values_and_labels_are_refused_with_the_expected_shape(clip, tokenizer):
    model = segmenter(clip, tokenizer)
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, H, W\], got \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"Image size \(30, 32\) is not a multiple of the patch size 8"):
        model(torch.zeros(2, 3, 30, 32))
    with pytest.raises(ValueError, match=r"labels must be \[B, H, W\] = \(2, 32, 32\)"):
        model(torch.zeros(2, 3, 32, 32), labels=torch.zeros(2, 16, 16, dtype=torch.long))


def test_bad_configs_are_refused(clip, tokenizer):
    with pytest.raises(ValueError, match="class_token_ids has 1 entries for 2 class_names"):
        DenseCLIPConfig(clip_config=clip.config, class_names=["a", "b"], class_token_ids=[[5]])
    with pytest.raises(ValueError, match="exceed the text tower's 24 positions"):
        segmenter(clip, tokenizer, context_length=22)
    with pytest.raises(ValueError, match="at least 2 class_names"):
        DenseCLIPSegmenter.from_clip(clip, tokenizer, ["background"])


# ----------------------------------------------------------------------------------------------- trainer
def _rows(count, size=32, last_mask_size=None, seed=0):
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(count)]
    masks = [rng.integers(0, K, (size, size), dtype=np.uint8) for _ in range(count)]
    if last_mask_size is not None:
        masks[-1] = np.ones((last_mask_size, last_mask_size), dtype=np.uint8)
    return Dataset.from_dict({"image": images, "label": masks}, features=SEGMENTATION_FEATURES)


def test_trainer_groups_learning_rates_and_leaves_norms_undecayed(clip, tokenizer, tmp_path):
    model = segmenter(clip, tokenizer)
    args = DenseCLIPTrainingConfig(output_dir=str(tmp_path), learning_rate=1e-3, report_to=[], use_cpu=True)
    trainer = DenseCLIPTrainer(model, args)
    groups = {id(p): group for group in trainer.create_optimizer().param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert groups[id(named["clip.vision_model.encoder.layers.0.mlp.fc1.weight"])]["lr"] == pytest.approx(1e-4)
    assert groups[id(named["clip.visual_projection.weight"])]["lr"] == pytest.approx(1e-4)
    assert groups[id(named["context"])]["lr"] == 1e-3 and groups[id(named["gamma"])]["weight_decay"] == 1e-4
    assert groups[id(named["clip.vision_model.post_layernorm.weight"])]["weight_decay"] == 0.0
    assert groups[id(named["context_decoder.memory_proj.2.bias"])]["weight_decay"] == 0.0
    assert groups[id(named["segmentation_head.stem.1.weight"])]["weight_decay"] == 0.0  # GroupNorm
    assert groups[id(named["segmentation_head.classifier.weight"])]["weight_decay"] == 1e-4
    assert not any(id(p) in groups for n, p in named.items() if n.startswith(model.text_encoder_prefixes))


def test_trainer_runs_poly_schedule_and_logs_both_loss_terms(clip, tokenizer, tmp_path):
    model = segmenter(clip, tokenizer)
    args = DenseCLIPTrainingConfig(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, logging_steps=2, learning_rate=1e-3,
        warmup_steps=1, save_strategy="no", report_to=[], use_cpu=True,
    )  # fmt: skip
    before = model.context.detach().clone()
    trainer = DenseCLIPTrainer(model, args, train_dataset=_rows(8))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss_seg" in entry]
    assert len(logged) == 2 and all(entry["loss_aux"] > 0 for entry in logged)
    assert not torch.equal(model.context, before)
    rates = [trainer.lr_scheduler.lr_lambdas[0](step) for step in range(5)]
    assert rates[1] == 1.0 and rates[2] == pytest.approx((1 - 1e-6 / 1e-3) * (2 / 3) ** 0.9 + 1e-6 / 1e-3)


def test_trainer_refuses_a_bad_row_before_the_first_step(clip, tokenizer, tmp_path):
    bad = _rows(3, last_mask_size=16)
    args = DenseCLIPTrainingConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"Row 2: image 'image' is 32x32 but its mask 'label' is 16x16"):
        DenseCLIPTrainer(segmenter(clip, tokenizer), args, train_dataset=bad)
