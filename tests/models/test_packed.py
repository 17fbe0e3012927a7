"""Packed (unpad) forward: layout, pooling, equality with the padded forward and its gradients, save/reload."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.models import packed as packed_module
from hf_contrastive.models import pool
from hf_contrastive.models.packed import VARLEN_ATTENTION, enable_unpadding, grouped_sdpa, pack, packed_pool

from ..conftest import SENTENCES, make_tiny_encoder

# 3 to 19 tokens, most of them 8 or 9: the reference groups equal lengths, and the padding varies.
TEXTS = SENTENCES + ["cat", "the cat", "a storm hit the coast at night and the river flows past the old mill"]


def features(tokenizer, texts=TEXTS, padding_side="right"):
    tokenizer.padding_side = padding_side
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    tokenizer.padding_side = "right"
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_pack_lays_out_real_tokens_end_to_end_for_either_padding_side():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [4, 3, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    left_ids = torch.tensor([[0, 5, 6, 7], [0, 0, 8, 9], [4, 3, 2, 1]])
    left_mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    for batch in (pack(ids, mask), pack(left_ids, left_mask)):
        assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 4, 3, 2, 1]]
        assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
        assert batch.cu_seq_lens.dtype == torch.int32 and batch.cu_seq_lens.tolist() == [0, 3, 5, 9]
        assert batch.max_length == 4 and batch.lengths.tolist() == [3, 2, 4]
        assert batch.segment_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="no tokens"):
        pack(ids, mask * torch.tensor([[1], [0], [1]]))


@pytest.mark.parametrize("mode", ["mean", "cls", "last_token"])
def test_packed_pool_equals_padded_pool(mode):
    mask = (torch.arange(5) < torch.tensor([[2], [5], [1], [3]])).long()
    hidden = torch.randn(4, 5, 3)
    batch = pack(torch.ones_like(mask), mask)
    packed_hidden = hidden[mask.bool()][None]  # [1, T, H]
    torch.testing.assert_close(packed_pool(packed_hidden, batch, mode), pool(hidden, mask, mode))


def test_grouped_reference_attends_within_each_text_only():
    query, key, value = (torch.randn(7, 2, 4) for _ in range(3))  # texts of 3, 1, 3 tokens
    output = grouped_sdpa(query, key, value, torch.tensor([0, 3, 4, 7], dtype=torch.int32), None)
    for start, end in ((0, 3), (3, 4), (4, 7)):
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
        expected = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v  # scale 1/sqrt(4)
        torch.testing.assert_close(output[start:end], expected.transpose(0, 1))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"pooling": "cls"}, {"pooling": "last_token"}, {"projection_dim": 8, "normalize": True}],
    ids=["mean", "cls", "last_token", "mean-projection-normalize"],
)
def test_packed_embeddings_equal_padded(tiny_tokenizer, kwargs):
    model = make_tiny_encoder(len(tiny_tokenizer), **kwargs).eval()
    batch = features(tiny_tokenizer)
    with torch.no_grad():
        padded = model(**batch).embeddings
        packed = model(**batch, unpad=True).embeddings
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert model.backbone.config._attn_implementation == VARLEN_ATTENTION


def test_packed_gradients_equal_padded(tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer), projection_dim=8, normalize=True).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    batch = features(tiny_tokenizer)
    weights = torch.randn(len(TEXTS), 8)

    def gradients(unpad):
        model.zero_grad(set_to_none=True)
        (model(**batch, unpad=unpad).embeddings * weights).sum().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    padded, packed = gradients(False), gradients(True)
    assert sum(grad is not None for grad in packed.values()) > 20
    for name, grad in padded.items():
        if grad is None:
            assert packed[name] is None, name
        else:
            torch.testing.assert_close(packed[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_packed_path_applies_no_attention_dropout(tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    for name, module in model.named_modules():  # keep only attention-probability dropout (p = 0.1)
        if isinstance(module, nn.Dropout) and not name.endswith("attention.self.dropout"):
            module.p = 0.0
    batch = features(tiny_tokenizer)
    with torch.no_grad():
        evaluated = model.eval()(**batch, unpad=True).embeddings
        trained = model.train()(**batch, unpad=True).embeddings
        padded_train = model(**batch).embeddings
    torch.testing.assert_close(trained, evaluated)
    assert not torch.allclose(padded_train, evaluated, atol=1e-4)  # the padded path still drops attention weights


def test_padded_calls_are_unchanged_after_enabling(tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer)).eval()
    before = model.encode(SENTENCES, tiny_tokenizer, batch_size=5)
    enable_unpadding(model)
    enable_unpadding(model)
    assert model.backbone.config._attn_implementation == VARLEN_ATTENTION
    assert torch.equal(model.encode(SENTENCES, tiny_tokenizer, batch_size=5), before)
    left = features(tiny_tokenizer, padding_side="left")
    right = features(tiny_tokenizer)
    with torch.no_grad():  # packing is padding-side agnostic
        torch.testing.assert_close(model(**left, unpad=True).embeddings, model(**right, unpad=True).embeddings)


def test_save_after_enabling_writes_no_custom_attention_and_reloads(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    enable_unpadding(model)
    expected = model.encode(SENTENCES, tiny_tokenizer)
    model.save_pretrained(tmp_path)
    config_text = (tmp_path / "config.json").read_text()
    assert VARLEN_ATTENTION not in config_text and "attn_implementation" not in config_text
    assert json.loads(config_text)["backbone_config"]["model_type"] == "bert"
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert reloaded.backbone.config._attn_implementation == "sdpa"
    assert torch.equal(reloaded.encode(SENTENCES, tiny_tokenizer), expected)


def tiny_backbone_config(model_type, vocab_size, pad_token_id):
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    if model_type == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
    return AutoConfig.for_model(
        model_type, vocab_size=vocab_size, pad_token_id=pad_token_id, max_position_embeddings=64, **sizes
    )


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert", "electra", "distilbert", "nomic_bert"])
def test_other_supported_encoders_pack_exactly(tiny_tokenizer, model_type):
    torch.manual_seed(0)
    config = tiny_backbone_config(model_type, len(tiny_tokenizer), tiny_tokenizer.pad_token_id)
    model = ContrastiveEncoder.from_backbone(config).eval()
    batch = features(tiny_tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(
            model(**batch, unpad=True).embeddings, model(**batch).embeddings, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("model_type", ["qwen2", "mpnet"])
def test_unsupported_backbone_is_refused_by_name(tiny_tokenizer, model_type):
    config = tiny_backbone_config(model_type, len(tiny_tokenizer), tiny_tokenizer.pad_token_id)
    model = ContrastiveEncoder.from_backbone(config)
    with pytest.raises(ValueError, match=f"model_type '{model_type}'"):
        model(**features(tiny_tokenizer), unpad=True)
    assert model.backbone.config._attn_implementation != VARLEN_ATTENTION


def test_flash_branch_gets_packed_heads_and_bounds(tiny_tokenizer, monkeypatch):
    """The CUDA ``varlen_attn`` call, checked on CPU with a stand-in (the real kernel needs a GPU)."""
    import torch.nn.attention.varlen as varlen

    calls = []

    def fake_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k):
        calls.append((query.shape, cu_seq_q.dtype, max_q))
        assert cu_seq_q is cu_seq_k and max_q == max_k
        return grouped_sdpa(query, key, value, cu_seq_q, None)

    model = make_tiny_encoder(len(tiny_tokenizer)).eval()
    batch = features(tiny_tokenizer)
    with torch.no_grad():
        padded = model(**batch).embeddings
        monkeypatch.setattr(packed_module, "_flash_varlen_applies", lambda query: True)
        monkeypatch.setattr(varlen, "varlen_attn", fake_varlen_attn)
        packed = model(**batch, unpad=True).embeddings
    total, longest = int(batch["attention_mask"].sum()), batch["input_ids"].shape[1]
    assert calls == [(torch.Size([total, 2, 16]), torch.int32, longest)] * 2
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
