"""ContrastiveEncoder: pooling, save / AutoModel.from_pretrained round trips, LoRA adapters."""

import subprocess
import sys

import pytest
import torch
from transformers import AutoModel

import hf_contrastive
from hf_contrastive.models import pool

from ..conftest import SENTENCES, make_tiny_encoder


def test_pooling_modes_on_a_hand_made_batch():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))
    assert torch.equal(pool(hidden, mask, "last_token"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert torch.equal(pool(hidden, left, "last_token"), torch.stack([hidden[0, 2], hidden[1, 2]]))


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_tiny_encoder(50, pooling="max")


@pytest.mark.parametrize("kwargs", [{}, {"pooling": "cls", "projection_dim": 8, "normalize": True}])
def test_save_and_automodel_reload_give_identical_embeddings(tmp_path, tiny_tokenizer, kwargs):
    model = make_tiny_encoder(len(tiny_tokenizer), **kwargs)
    before = model.encode(SENTENCES, tiny_tokenizer, batch_size=5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, hf_contrastive.ContrastiveEncoder)
    assert torch.equal(reloaded.encode(SENTENCES, tiny_tokenizer, batch_size=5), before)
    if kwargs.get("normalize"):
        assert torch.allclose(before.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)
        assert before.shape[1] == 8


def test_reload_in_a_fresh_process_needs_no_remote_code(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    expected = model.encode(SENTENCES[:3], tiny_tokenizer)
    torch.save(expected, tmp_path / "expected.pt")
    code = (
        "import torch, hf_contrastive; from transformers import AutoModel, AutoTokenizer; "
        f"p = {str(tmp_path)!r}; m = AutoModel.from_pretrained(p); t = AutoTokenizer.from_pretrained(p); "
        f"e = m.encode({SENTENCES[:3]!r}, t); assert torch.equal(e, torch.load(p + '/expected.pt')), 'differs'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_encode_keeps_input_order_and_restores_train_mode(tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    one_by_one = torch.cat([model.encode([s], tiny_tokenizer) for s in SENTENCES])
    batched = model.encode(SENTENCES, tiny_tokenizer, batch_size=4)
    assert model.training
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="list of texts"):
        model.encode("one string", tiny_tokenizer)


def test_lora_adapter_round_trip(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = make_tiny_encoder(len(tiny_tokenizer))
    base.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
    peft_model.eval()
    features = dict(tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    features.pop("token_type_ids", None)
    with torch.no_grad():
        adapted = peft_model(**features).embeddings
    peft_model.save_pretrained(tmp_path / "adapter")

    fresh_base = AutoModel.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**features).embeddings, adapted)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(**features).embeddings, adapted, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(
            fresh_base.__class__.from_pretrained(tmp_path / "base").eval()(**features).embeddings, adapted
        )
