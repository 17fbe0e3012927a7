"""SimCTGTrainer: the loss is MLE plus the weighted contrastive term, training lowers it (LoRA too), the collator
masks padding and the card describes a text-generation model with a usage snippet that runs."""

import math
import re

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from hf_contrastive.objectives.simctg import simctg_contrastive_loss
from hf_contrastive.trainers.simctg import CausalLMCollator, SimCTGConfig, SimCTGTrainer

from ..conftest import SENTENCES


def tiny_lm(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=128, n_embd=32, n_layer=1, n_head=2, bos_token_id=2, eos_token_id=3
    )
    return GPT2LMHeadModel(config)


def simctg_args(tmp_path, **overrides) -> SimCTGConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=5e-3,
        max_steps=12,
        logging_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=32,
    )
    values.update(overrides)
    return SimCTGConfig(**values)


def text_dataset(rows: int = 12) -> Dataset:
    return Dataset.from_dict({"text": [SENTENCES[i % len(SENTENCES)] for i in range(rows)]})


def batch_of(tokenizer, texts) -> dict:
    return CausalLMCollator(tokenizer, max_length=32)([{"text": text} for text in texts])


def test_loss_is_the_models_own_mle_plus_weighted_contrastive_term(tmp_path, tiny_tokenizer):
    model = tiny_lm(len(tiny_tokenizer)).eval()
    trainer = SimCTGTrainer(
        model=model, args=simctg_args(tmp_path, margin=0.8, contrastive_weight=0.5), processing_class=tiny_tokenizer
    )
    batch = batch_of(tiny_tokenizer, SENTENCES[:3] + ["a dog"])  # unequal lengths: right padding
    loss = trainer.compute_loss(model, batch)

    reference = model(**batch, output_hidden_states=True)  # HF shifts the labels itself and skips -100
    contrastive = simctg_contrastive_loss(reference.hidden_states[-1], batch["attention_mask"], margin=0.8)
    assert loss.item() == pytest.approx(reference.loss.item() + 0.5 * contrastive.item(), rel=1e-5)
    assert contrastive.item() > 0  # a random model's token states are far from isotropic at margin 0.8


def test_zero_weight_trains_plain_mle(tmp_path, tiny_tokenizer):
    model = tiny_lm(len(tiny_tokenizer)).eval()
    trainer = SimCTGTrainer(
        model=model, args=simctg_args(tmp_path, contrastive_weight=0.0), processing_class=tiny_tokenizer
    )
    batch = batch_of(tiny_tokenizer, SENTENCES[:4])
    trainer.compute_loss(model, batch).backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model(**batch).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(ours[name], parameter.grad)


def train_and_evaluate(tmp_path, tokenizer, weight: float) -> tuple[dict, dict, SimCTGTrainer]:
    data = text_dataset()
    trainer = SimCTGTrainer(
        model=tiny_lm(len(tokenizer)),
        args=simctg_args(tmp_path / str(weight), contrastive_weight=weight),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    return before, trainer.evaluate(), trainer


def test_training_lowers_the_loss_and_simctg_keeps_tokens_apart_where_mle_does_not(tmp_path, tiny_tokenizer):
    mle_before, mle_after, _ = train_and_evaluate(tmp_path, tiny_tokenizer, weight=0.0)
    before, after, trainer = train_and_evaluate(tmp_path, tiny_tokenizer, weight=1.0)

    assert after["eval_loss"] < before["eval_loss"] and after["eval_mle_loss"] < before["eval_mle_loss"]
    assert mle_after["eval_mle_loss"] < mle_before["eval_mle_loss"]
    # Same start, data and steps: MLE makes the token states more similar, the contrastive term holds them apart.
    assert after["eval_contrastive_loss"] < mle_after["eval_contrastive_loss"]
    assert after["eval_perplexity"] == pytest.approx(math.exp(after["eval_mle_loss"]), rel=1e-3)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"mle_loss", "contrastive_loss"} <= entry.keys() for entry in logged)
    assert logged[0]["loss"] == pytest.approx(logged[0]["mle_loss"] + logged[0]["contrastive_loss"], abs=0.02)


def test_lora_trains_only_the_adapter_and_saves_it(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_lm(len(tiny_tokenizer)), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = SimCTGTrainer(
        model=model,
        args=simctg_args(tmp_path, max_steps=3, logging_steps=1),
        train_dataset=text_dataset(),
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    trainer.save_model()

    parameters = dict(model.named_parameters())
    assert all(torch.equal(parameters[n], value) for n, value in frozen.items())
    assert any(not torch.equal(parameters[n], value) for n, value in adapter.items())
    assert (tmp_path / "out" / "adapter_config.json").exists()
    assert any("contrastive_loss" in entry for entry in trainer.state.log_history)


def test_collator_pads_right_masks_labels_and_counts_an_eos_equal_to_the_pad(tiny_tokenizer):
    tiny_tokenizer = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="[PAD]")
    collator = CausalLMCollator(tiny_tokenizer, max_length=6, append_eos=True)
    batch = collator([{"text": "the cat sat on the mat"}, {"input_ids": [7, 8]}])
    pad = tiny_tokenizer.eos_token_id

    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][0, -1].item() == pad and batch["attention_mask"][0].tolist() == [1] * 6
    assert batch["input_ids"][1].tolist() == [7, 8, pad, pad, pad, pad]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]  # the appended EOS is real, the rest is padding
    assert batch["labels"][1].tolist() == [7, 8, pad, -100, -100, -100]


def test_model_card_is_a_text_generation_card_whose_snippet_runs(tmp_path, tiny_tokenizer, capsys):
    trainer = SimCTGTrainer(
        model=tiny_lm(len(tiny_tokenizer)),
        args=simctg_args(tmp_path, max_steps=2, margin=0.3, logging_steps=1),
        train_dataset=text_dataset(),
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(dataset_name="wiki-sentences", license="apache-2.0")
    text = (tmp_path / "out" / "README.md").read_text()

    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["pipeline_tag"] == "text-generation" and metadata["library_name"] == "transformers"
    assert {"simctg", "contrastive-search", "arxiv:2202.06417", "arxiv:2210.14140"} <= set(metadata["tags"])
    assert "margin 0.3" in text and "| `contrastive_weight` | 1.0 |" in text and "final contrastive loss" in text
    assert "@inproceedings{su2022simctg" in text and "@article{su2023contrastive" in text
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(snippet.replace(f'"{tmp_path.name}"', "x").replace('"out"', repr(str(tmp_path / "out"))), {})
    assert "the history" in capsys.readouterr().out.lower()


def test_bad_configuration_is_named_before_training(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="margin must be >= 0"):
        simctg_args(tmp_path, margin=-0.5)
    with pytest.raises(ValueError, match="contrastive_normalization must be one of"):
        simctg_args(tmp_path, contrastive_normalization="tokens")
    with pytest.raises(ValueError, match="'text' column .* or an 'input_ids' column"):
        SimCTGTrainer(
            model=tiny_lm(len(tiny_tokenizer)),
            args=simctg_args(tmp_path),
            train_dataset=Dataset.from_dict({"sentence": ["a b"]}),
            processing_class=tiny_tokenizer,
        )
    encoder = BertModel(
        BertConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    with pytest.raises(ValueError, match="no LM head"):
        SimCTGTrainer(model=encoder, args=simctg_args(tmp_path), processing_class=tiny_tokenizer)
    with pytest.raises(TypeError, match="SimCTGConfig"):
        SimCTGTrainer(model=tiny_lm(len(tiny_tokenizer)), args=object(), processing_class=tiny_tokenizer)
