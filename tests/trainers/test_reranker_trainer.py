"""RerankerTrainer on a tiny Qwen2: every loss trains, diagnostics are logged, trl parity, LoRA, saving and the card."""

import pytest
import torch
import yaml
from datasets import Dataset

from hf_contrastive.data.reranking import DEFAULT_PROMPT_TEMPLATE, groups_to_pairs, to_trl_sft_dataset
from hf_contrastive.models.reranker import AnswerTokenReranker
from hf_contrastive.trainers.reranker import RerankerConfig, RerankerTrainer
from tests.conftest import SENTENCES
from tests.hub import fake_hub as fake_hub_module
from tests.models.test_reranker import causal_reranker, lora_reranker, tiny_qwen2, tiny_word_tokenizer

fake_hub = fake_hub_module.fake_hub


def toy_groups(rows: int = 8, negatives: int = 2) -> Dataset:
    """Query = the first words of a sentence, positive = the sentence, negatives = other sentences."""
    groups = []
    for i in range(rows):
        sentence = SENTENCES[i % len(SENTENCES)]
        others = [SENTENCES[(i + 3 + 2 * k) % len(SENTENCES)] for k in range(negatives)]
        groups.append({"query": " ".join(sentence.split()[:3]), "positive": sentence, "negatives": others})
    return Dataset.from_list(groups)


def config(output_dir, **overrides) -> RerankerConfig:
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        max_steps=6,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=96,
    )
    values.update(overrides)
    return RerankerConfig(**values)


def dataset_loss(trainer: RerankerTrainer, dataset) -> float:
    """The trainer's loss on the whole dataset in one batch, eval mode."""
    batch = trainer._prepare_inputs(trainer.data_collator([dataset[i] for i in range(len(dataset))]))
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


LOSS_SETTINGS = {
    "sft": {"loss": "sft"},
    "sft_full_vocab": {"loss": "sft_full_vocab"},
    "contrastive": {"loss": "contrastive"},
    "url_cl_weight_sft_direction": {"loss": "url", "weight_scheme": "cl", "direction_scheme": "sft"},
    "url_sft_weight_cl_direction": {"loss": "url", "weight_scheme": "sft", "direction_scheme": "cl"},
}


@pytest.mark.parametrize("name", LOSS_SETTINGS)
def test_each_loss_trains_and_lowers_its_loss_with_diagnostics_in_the_logs(tmp_path, name):
    data = toy_groups()
    trainer = RerankerTrainer(causal_reranker(), config(tmp_path, **LOSS_SETTINGS[name]), train_dataset=data)
    before = dataset_loss(trainer, data)
    trainer.train()
    after = dataset_loss(trainer, data)
    assert after < before
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    for key in ("sft_weight_negative", "sft_negative_weight_fraction", "cl_weight_positive", "cl_loss"):
        assert key in logged[-1]
    assert logged[-1]["cl_negative_weight_fraction"] == pytest.approx(0.5, abs=1e-4)  # coupled CL weights
    assert logged[-1]["norm_w_yes"] > 0 and -1 <= logged[-1]["cosine_w_yes_w_yes_minus_no"] <= 1


def test_sft_trains_on_pair_rows_and_their_groups_give_the_same_loss(tmp_path):
    groups = toy_groups(4)
    trainer = RerankerTrainer(
        causal_reranker(), config(tmp_path, max_steps=1, logging_steps=1), train_dataset=groups_to_pairs(groups)
    )
    assert dataset_loss(trainer, groups_to_pairs(groups)) == pytest.approx(dataset_loss(trainer, groups), abs=1e-6)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert "sft_weight_positive" in logged and "cl_loss" not in logged  # no groups, no CL weights


def test_full_vocab_loss_equals_trl_sft_trainer_on_the_one_token_completion(tmp_path):
    from trl import SFTConfig, SFTTrainer

    tokenizer = tiny_word_tokenizer()
    tokenizer.padding_side = "left"  # ours pads left (position ids from the mask), trl's collator pads right
    groups = toy_groups(3)
    ours = RerankerTrainer(
        tiny_qwen2(len(tokenizer), seed=3),
        config(tmp_path / "ours", loss="sft_full_vocab"),
        train_dataset=groups,
        processing_class=tokenizer,
    )
    trl_rows = to_trl_sft_dataset(groups, tokenizer=tokenizer, max_length=96)
    trl_args = SFTConfig(
        output_dir=str(tmp_path / "trl"), completion_only_loss=True, report_to="none", use_cpu=True, max_length=None
    )
    trl_trainer = SFTTrainer(
        tiny_qwen2(len(tokenizer), seed=3), trl_args, train_dataset=trl_rows, processing_class=tokenizer
    )
    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(len(trl_rows))])
    assert (trl_batch["labels"] != -100).sum(dim=1).tolist() == [1] * len(trl_rows)  # one-token completions
    trl_trainer.model.eval()
    with torch.no_grad():
        trl_loss = trl_trainer.compute_loss(trl_trainer.model, trl_batch).item()
    assert dataset_loss(ours, groups) == pytest.approx(trl_loss, abs=1e-5)


def test_trl_tokenises_the_text_rows_like_the_reranker_then_adds_eos(tmp_path):
    from trl import SFTConfig, SFTTrainer

    reranker = causal_reranker()
    pairs = groups_to_pairs(toy_groups(2, negatives=1))
    trl_trainer = SFTTrainer(
        reranker.model,
        SFTConfig(
            output_dir=str(tmp_path), completion_only_loss=True, report_to="none", use_cpu=True, max_length=None
        ),
        train_dataset=to_trl_sft_dataset(pairs),
        processing_class=reranker.tokenizer,
    )
    ours = reranker.collator().prompt_ids(pairs["query"], pairs["document"])
    eos = reranker.tokenizer.eos_token_id
    for row, prompt_ids, label in zip(trl_trainer.train_dataset, ours, pairs["label"]):
        answer = reranker.answer_token_ids[0 if label == 1 else 1]
        assert row["input_ids"] == prompt_ids + [answer, eos]
        assert row["labels"] == [-100] * len(prompt_ids) + [answer, eos]


def test_lora_on_tiny_qwen2_trains_only_the_adapter_and_saves_a_reloadable_reranker(tmp_path):
    reranker = lora_reranker(tmp_path)
    frozen = {n: p.detach().clone() for n, p in reranker.model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in reranker.model.named_parameters() if p.requires_grad}
    data = toy_groups()
    trainer = RerankerTrainer(
        reranker, config(tmp_path / "run", loss="contrastive", learning_rate=1e-2), train_dataset=data
    )
    before = dataset_loss(trainer, data)
    trainer.train()
    assert dataset_loss(trainer, data) < before
    parameters = dict(trainer.model.named_parameters())
    assert all(torch.equal(parameters[n], value) for n, value in frozen.items())
    assert any(not torch.equal(parameters[n], value) for n, value in lora.items())

    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AnswerTokenReranker.from_pretrained(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "adapter_config.json").exists()
    assert reloaded.settings.score == "yes_logit"  # a CL model is ranked by z_yes alone
    assert reloaded.training_info == {"loss": "contrastive", "cl_score": "yes_logit", "temperature": 1.0}
    queries, documents = data["query"], data["positive"]
    torch.testing.assert_close(
        torch.tensor(reloaded.score(queries, documents)), torch.tensor(trainer.reranker.score(queries, documents))
    )


class PositiveFirstEvaluator:
    """Share of queries whose positive outscores all its negatives (a stand-in for RerankingEvaluator)."""

    def __init__(self, groups):
        self.groups = groups
        self.calls = 0

    def score_pairs(self, pair_scorer):
        self.calls += 1
        hits = 0
        for group in self.groups:
            documents = [group["positive"], *group["negatives"]]
            scores = pair_scorer([group["query"]] * len(documents), documents)
            hits += int(max(range(len(documents)), key=scores.__getitem__) == 0)
        return {"positive_first": hits / len(self.groups)}


def test_evaluator_scores_pairs_through_the_model_and_the_card_shows_template_tokens_and_results(tmp_path):
    data = toy_groups()
    evaluator = PositiveFirstEvaluator(data)
    args = config(tmp_path, eval_strategy="steps", eval_steps=3, max_steps=3)
    trainer = RerankerTrainer(causal_reranker(), args, train_dataset=data, evaluator=evaluator)
    trainer.train()
    assert evaluator.calls == 1
    metrics = trainer.evaluate(toy_groups(2))  # the eval loss and the evaluator's metrics together
    assert 0.0 <= metrics["eval_positive_first"] <= 1.0 and evaluator.calls == 2
    assert metrics["eval_loss"] == pytest.approx(dataset_loss(trainer, toy_groups(2)), abs=1e-6)

    trainer.create_model_card(dataset_name="my/reranking-data")
    readme = (tmp_path / "README.md").read_text()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert {"reranker", "sft_vs_cl_reranking", "reranker_sft", "arxiv:2510.14824"} <= set(metadata["tags"])
    result = metadata["model-index"][0]["results"][0]
    assert result["task"]["type"] == "text-ranking" and result["metrics"][0]["type"] == "positive_first"
    assert DEFAULT_PROMPT_TEMPLATE in readme
    assert "yes = `'yes'` (id" in readme and "no = `'no'` (id" in readme
    assert "sigmoid(z_yes - z_no)" in readme and "Negatives per query: min 2, mean 2.0, max 2" in readme
    assert "@article{dai2025sftcl" in readme


def test_push_to_hub_uploads_adapter_free_model_config_and_card(tmp_path, fake_hub):
    args = config(
        tmp_path, loss="contrastive", max_steps=1, hub_model_id="fake-user/cl-reranker", hub_token=fake_hub.token
    )
    trainer = RerankerTrainer(causal_reranker(), args, train_dataset=toy_groups(4))
    trainer.train()
    trainer.push_to_hub(blocking=True)
    files = fake_hub.files("fake-user/cl-reranker")
    assert {"model.safetensors", "tokenizer.json", "reranker_config.json", "README.md"} <= set(files)
    readme = files["README.md"].decode()
    assert "do not score this model with `sigmoid(z_yes - z_no)`" in readme


def test_the_config_prompt_settings_override_the_reranker_and_are_saved(tmp_path):
    template = "Query: {query}\nDocument: {document}\nRelevant:"
    args = config(tmp_path, prompt_template=template, yes_token="the", no_token="a", max_steps=1)
    trainer = RerankerTrainer(causal_reranker(), args, train_dataset=toy_groups(4))
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AnswerTokenReranker.from_pretrained(str(tmp_path / "saved"))
    assert reloaded.settings.prompt_template == template and reloaded.settings.yes_token == "the"
    assert reloaded.answer_token_ids == tuple(reloaded.tokenizer.convert_tokens_to_ids(["the", "a"]))


# ------------------------------------------------------------------------ bad input, refused before any step
def test_contrastive_losses_refuse_pair_rows_and_empty_negatives_before_training(tmp_path):
    pairs = groups_to_pairs(toy_groups(4))
    with pytest.raises(ValueError, match="needs group rows"):
        RerankerTrainer(causal_reranker(), config(tmp_path, loss="contrastive"), train_dataset=pairs)
    empty = Dataset.from_list([*toy_groups(2), {"query": "q", "positive": "the cat", "negatives": []}])
    with pytest.raises(ValueError, match=r"Column 'negatives', row 2: the list is empty"):
        RerankerTrainer(causal_reranker(), config(tmp_path, loss="url"), train_dataset=empty)


def test_bad_configuration_and_missing_pieces_are_refused(tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        config(tmp_path, loss="listwise")
    with pytest.raises(ValueError, match="direction_scheme must be one of"):
        config(tmp_path, loss="url", direction_scheme="both")
    with pytest.raises(ValueError, match="inference_score must be one of"):
        config(tmp_path, inference_score="probability")
    tokenizer = tiny_word_tokenizer()
    with pytest.raises(ValueError, match="needs processing_class"):
        RerankerTrainer(tiny_qwen2(len(tokenizer)), config(tmp_path), train_dataset=toy_groups(2))
    with pytest.raises(ValueError, match=r"answer token 'Yes' must be a single token.*\['<unk>'\]"):
        RerankerTrainer(causal_reranker(), config(tmp_path, yes_token="Yes"), train_dataset=toy_groups(2))
    with pytest.raises(ValueError, match=r"Column 'label', row 0: expected 0 or 1, got 3"):
        RerankerTrainer(
            causal_reranker(), config(tmp_path), train_dataset=[{"query": "q", "document": "d", "label": 3}]
        )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sft", "contrastive"])
def test_two_processes_match_one_process_with_the_global_batch(tmp_path, tiny_tokenizer, loss):
    """2 x 2 groups == 1 x 4 groups: losses and every gradient at each of 3 steps (gloo)."""
    from tests.trainers.distributed_check import assert_distributed_matches_single

    assert_distributed_matches_single(
        tmp_path, tiny_tokenizer, {"trainer": "reranker", "loss": loss, "modes": ["plain"]}, per_device_batch=2
    )
