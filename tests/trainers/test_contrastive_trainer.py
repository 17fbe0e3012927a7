"""ContrastiveTrainer end to end on tiny models: gradients, cache, logs, resume, bad input, evaluator."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from hf_contrastive.objectives import InfoNCE, split_columns
from hf_contrastive.trainers import ContrastiveTrainer

from ..conftest import SENTENCES, make_tiny_encoder
from .helpers import config, dropout_free_encoder, gradients, triplet_dataset


class CaptureGradients(TrainerCallback):
    """Record the gradients the optimizer is about to apply at every step."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append(gradients(self.model))


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_training_step_gradient_equals_the_objective_on_the_model(tmp_path, tiny_tokenizer):
    model = dropout_free_encoder(len(tiny_tokenizer))
    dataset = triplet_dataset(8)
    trainer = ContrastiveTrainer(
        model, config(tmp_path, per_device_train_batch_size=8), dataset, processing_class=tiny_tokenizer
    )
    batch = trainer.data_collator([dataset[i] for i in range(8)])
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    trainer.training_step(model, dict(batch))
    from_trainer = gradients(model)

    model.zero_grad()
    objective = InfoNCE(temperature=0.1)
    embeddings = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).embeddings
    objective(split_columns(embeddings, batch["column_names"]), batch).loss.backward()
    for name, grad in gradients(model).items():
        torch.testing.assert_close(from_trainer[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_cached_and_uncached_runs_reach_the_same_weights(tmp_path, tiny_tokenizer):
    dataset = triplet_dataset(12)
    runs = {}
    for cached in (False, True):
        model = dropout_free_encoder(len(tiny_tokenizer))
        args = config(tmp_path / str(cached), gradient_cache=cached, cache_token_budget=40, max_length=16)
        trainer = ContrastiveTrainer(model, args, dataset, processing_class=tiny_tokenizer)
        trainer.train()
        runs[cached] = (losses(trainer), {n: p.detach().clone() for n, p in model.named_parameters()})
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, atol=1e-5, rtol=1e-5, msg=name)


def test_cached_step_has_the_gradients_of_the_uncached_step_with_dropout_on(tmp_path, tiny_tokenizer):
    """Same token budget = same chunks and dropout draws; the cache replays them, so gradients agree to 1e-5."""
    dataset = triplet_dataset(12)
    runs = {}
    for cached in (False, True):
        model = make_tiny_encoder(len(tiny_tokenizer))
        assert model.config.backbone_config.hidden_dropout_prob > 0
        args = config(
            tmp_path / str(cached),
            gradient_cache=cached,
            cache_token_budget=40,
            forward_token_budget=40,
            max_length=16,
        )
        trainer = ContrastiveTrainer(model, args, dataset, processing_class=tiny_tokenizer)
        capture = CaptureGradients(model)
        trainer.add_callback(capture)
        trainer.train()
        runs[cached] = (losses(trainer), capture.steps)
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    for step, (cached_grads, plain_grads) in enumerate(zip(runs[True][1], runs[False][1])):
        for name, grad in plain_grads.items():
            torch.testing.assert_close(cached_grads[name], grad, atol=1e-5, rtol=1e-5, msg=f"step {step} {name}")


def test_length_sorted_forward_equals_one_padded_forward(tmp_path, tiny_tokenizer):
    model = dropout_free_encoder(len(tiny_tokenizer))
    dataset = triplet_dataset(8)
    batch = None
    results = []
    for budget in (0, 40):
        trainer = ContrastiveTrainer(
            model,
            config(tmp_path, forward_token_budget=budget, per_device_train_batch_size=8),
            dataset,
            processing_class=tiny_tokenizer,
        )
        batch = batch or trainer.data_collator([dataset[i] for i in range(8)])
        features = trainer.model_features(batch)
        results.append(trainer.embed(model, features))
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=1e-5)


def test_padding_free_training_matches_padded_training(tmp_path, tiny_tokenizer):
    """unpad_inputs packs the real tokens (varlen attention); plain and cached runs reach the padded run's weights."""
    dataset = triplet_dataset(12)
    runs = {}
    for name, overrides in {
        "padded": {},
        "packed": {"unpad_inputs": True},
        "packed_cached": {"unpad_inputs": True, "gradient_cache": True, "cache_token_budget": 40},
    }.items():
        model = dropout_free_encoder(len(tiny_tokenizer))
        trainer = ContrastiveTrainer(
            model, config(tmp_path / name, max_length=16, **overrides), dataset, processing_class=tiny_tokenizer
        )
        trainer.train()
        runs[name] = (losses(trainer), {n: p.detach().clone() for n, p in model.named_parameters()})
    assert runs["padded"][1].keys() == runs["packed"][1].keys()
    for name in ("packed", "packed_cached"):
        assert runs[name][0] == pytest.approx(runs["padded"][0], abs=1e-5)
        for key, weight in runs["padded"][1].items():
            torch.testing.assert_close(runs[name][1][key], weight, atol=1e-5, rtol=1e-5, msg=f"{name} {key}")
    assert trainer.contrastive_facts()["unpad_inputs"] is True


def test_logs_report_accuracy_negatives_and_temperature(tmp_path, tiny_tokenizer):
    trainer = ContrastiveTrainer(
        make_tiny_encoder(len(tiny_tokenizer)),
        config(tmp_path, max_steps=2),
        triplet_dataset(8),
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "loss" in e)
    assert entry["effective_negatives"] == pytest.approx(7.0)  # 4 positives + 4 hard negatives - 1
    assert entry["temperature"] == pytest.approx(0.1)
    assert 0.0 <= entry["accuracy"] <= 1.0
    facts = trainer.contrastive_facts()
    assert facts["global_batch"] == 4 and facts["effective_negatives_per_anchor"] == 7


def test_unsupervised_text_column_trains_two_dropout_views(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"text": SENTENCES})
    trainer = ContrastiveTrainer(
        make_tiny_encoder(len(tiny_tokenizer)), config(tmp_path, max_steps=2), dataset, processing_class=tiny_tokenizer
    )
    trainer.train()
    assert all(math.isfinite(loss) for loss in losses(trainer))
    assert trainer.contrastive_facts()["effective_negatives_per_anchor"] == 3


@pytest.mark.parametrize("cached", [False, True])
def test_resume_from_checkpoint_continues_with_the_same_losses(tmp_path, tiny_tokenizer, cached):
    dataset = triplet_dataset(24)
    common = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=3,
        gradient_cache=cached,
        cache_token_budget=48,
        max_length=16,
        learnable_temperature=True,
        optim="adamw_torch",
    )
    full = ContrastiveTrainer(
        make_tiny_encoder(len(tiny_tokenizer)),
        config(tmp_path / "full", **common),
        dataset,
        processing_class=tiny_tokenizer,
    )
    full.train()
    resumed_model = make_tiny_encoder(len(tiny_tokenizer), seed=1)
    resumed = ContrastiveTrainer(
        resumed_model, config(tmp_path / "full", **common), dataset, processing_class=tiny_tokenizer
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert losses(resumed)[-3:] == pytest.approx(losses(full)[-3:], abs=1e-6)
    torch.testing.assert_close(resumed.objective.log_scale, full.objective.log_scale)
    for (name, a), b in zip(full.model.named_parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_lora_training_saves_an_adapter_and_resumes(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, PeftModel, get_peft_model

    def lora_model():
        return get_peft_model(
            make_tiny_encoder(len(tiny_tokenizer)), LoraConfig(r=4, target_modules=["query", "value"])
        )

    dataset = triplet_dataset(16)
    args = dict(max_steps=4, save_strategy="steps", save_steps=2, optim="adamw_torch")
    full = ContrastiveTrainer(
        lora_model(), config(tmp_path / "lora", **args), dataset, processing_class=tiny_tokenizer
    )
    full.train()
    resumed = ContrastiveTrainer(
        lora_model(), config(tmp_path / "lora", **args), dataset, processing_class=tiny_tokenizer
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "lora" / "checkpoint-2"))
    assert losses(resumed)[-2:] == pytest.approx(losses(full)[-2:], abs=1e-6)

    full.save_model(str(tmp_path / "adapter"))
    reloaded = PeftModel.from_pretrained(make_tiny_encoder(len(tiny_tokenizer)), tmp_path / "adapter")
    expected = full.model.eval().base_model.model.encode(SENTENCES, tiny_tokenizer)
    torch.testing.assert_close(reloaded.eval().base_model.model.encode(SENTENCES, tiny_tokenizer), expected)


def test_evaluator_metrics_are_logged_during_training(tmp_path, tiny_tokenizer):
    calls = []

    def evaluator(encode):
        embeddings = encode(SENTENCES[:4])
        calls.append(embeddings.shape)
        return {"sts_spearman_cosine": 0.5}

    args = config(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1)
    trainer = ContrastiveTrainer(
        make_tiny_encoder(len(tiny_tokenizer)),
        args,
        triplet_dataset(8),
        processing_class=tiny_tokenizer,
        evaluator=evaluator,
    )
    trainer.train()
    assert len(calls) == 2 and calls[0] == (4, 32)
    assert [e["eval_sts_spearman_cosine"] for e in trainer.state.log_history if "eval_sts_spearman_cosine" in e] == [
        0.5,
        0.5,
    ]


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_column_is_named_before_training(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"anchor": ["a b", "c d"], "positve": ["a", "c"]})
    with pytest.raises(ValueError, match="positive"):
        ContrastiveTrainer(
            make_tiny_encoder(len(tiny_tokenizer)),
            config(tmp_path),
            dataset,
            processing_class=tiny_tokenizer,
            text_columns=["anchor", "positive"],
        )


def test_empty_text_is_named_with_its_row_before_training(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"anchor": ["a b", "c d", "e f"], "positive": ["a", "  ", "e"]})
    with pytest.raises(ValueError, match="positive.*row 1|row 1.*positive"):
        ContrastiveTrainer(
            make_tiny_encoder(len(tiny_tokenizer)), config(tmp_path), dataset, processing_class=tiny_tokenizer
        )


def test_batch_of_one_without_negatives_is_refused(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"anchor": ["a b", "c d"], "positive": ["a", "c"]})
    with pytest.raises(ValueError, match="at least 2 rows"):
        ContrastiveTrainer(
            make_tiny_encoder(len(tiny_tokenizer)),
            config(tmp_path, per_device_train_batch_size=1),
            dataset,
            processing_class=tiny_tokenizer,
        )


def test_mismatched_tokenizer_is_refused(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer) - 50)
    with pytest.raises(ValueError, match="do not belong together"):
        ContrastiveTrainer(model, config(tmp_path), triplet_dataset(8), processing_class=tiny_tokenizer)


def test_nan_loss_stops_at_the_step_that_meets_it(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[5:].fill_(float("nan"))
    trainer = ContrastiveTrainer(model, config(tmp_path), triplet_dataset(8), processing_class=tiny_tokenizer)
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        trainer.train()


def test_cache_budget_smaller_than_one_row_is_refused(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="cache_token_budget"):
        ContrastiveTrainer(
            make_tiny_encoder(len(tiny_tokenizer)),
            config(tmp_path, gradient_cache=True, cache_token_budget=8, max_length=32),
            triplet_dataset(8),
            processing_class=tiny_tokenizer,
        )


def test_a_sampler_that_finds_no_duplicate_free_batch_says_so(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"anchor": [f"text {i}" for i in range(8)], "positive": ["the same label"] * 8})
    trainer = ContrastiveTrainer(
        make_tiny_encoder(len(tiny_tokenizer)), config(tmp_path), dataset, processing_class=tiny_tokenizer
    )
    with pytest.raises(ValueError, match="no_duplicates_sampler=False"):
        trainer.train()
