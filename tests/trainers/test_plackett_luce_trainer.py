"""PlackettLuceTrainer end to end on tiny models: learning, gradients (cached, distributed), data checks, card."""

import math

import pytest
import torch
from datasets import Dataset

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.data.ranking import RankingCollator, select_candidates, validate_ranking_dataset
from hf_contrastive.evaluation.ranking_metrics import ndcg
from hf_contrastive.objectives.plackett_luce import PlackettLuceObjective
from hf_contrastive.trainers.plackett_luce import PlackettLuceTrainer

from ..conftest import SENTENCES, make_tiny_encoder
from .ddp_worker import PLACKETT_LUCE, ranking_config, ranking_dataset
from .distributed_check import assert_distributed_matches_single
from .helpers import dropout_free_encoder, gradients
from .test_contrastive_trainer import CaptureGradients, losses


def retrieval_rows() -> list[dict]:
    """Each sentence's relevant document is another sentence (no shared words to lean on): 4-6 candidates."""
    rows = []
    for i, sentence in enumerate(SENTENCES):
        relevant = (i * 5 + 3) % len(SENTENCES)
        others = [j for j in range(len(SENTENCES)) if j not in (i, relevant)]
        candidates = [others[(i + 2 * j) % len(others)] for j in range(3 + i % 3)]
        candidates.insert(i % len(candidates), relevant)
        labels = [2 if j == relevant else 0 for j in candidates]
        rows.append({"query": sentence, "documents": [SENTENCES[j] for j in candidates], "labels": labels})
    return rows


def deterministic_ndcg(model, tokenizer, rows, k: int = 3) -> float:
    """Mean nDCG@k of ranking every query's candidates by cosine similarity."""
    total = 0.0
    for row in rows:
        scores = torch.nn.functional.cosine_similarity(
            model.encode([row["query"]], tokenizer), model.encode(row["documents"], tokenizer)
        )
        labels = torch.tensor(row["labels"], dtype=torch.float32)
        total += ndcg(labels[scores.argsort(descending=True)][None], labels[None], k).item()
    return total / len(rows)


def test_training_raises_the_ndcg_of_the_deterministic_ranking(tmp_path, tiny_tokenizer):
    rows = retrieval_rows()
    model = make_tiny_encoder(len(tiny_tokenizer))
    before = deterministic_ndcg(model, tiny_tokenizer, rows)
    args = ranking_config(
        tmp_path, max_steps=15, learning_rate=3e-3, optim="adamw_torch", max_length=16, objective_options={"k": 3}
    )
    trainer = PlackettLuceTrainer(model, args, Dataset.from_list(rows), processing_class=tiny_tokenizer)
    trainer.train()
    after = deterministic_ndcg(model, tiny_tokenizer, rows)
    assert before < 0.6 and after > before + 0.25
    assert all(math.isfinite(loss) for loss in losses(trainer))
    logged = [entry for entry in trainer.state.log_history if "utility" in entry]
    assert {"utility_deterministic", "advantage_std", "skipped_no_relevant"} <= set(logged[0])


def test_training_step_gradient_equals_the_objective_on_the_model(tmp_path, tiny_tokenizer):
    model = dropout_free_encoder(len(tiny_tokenizer))
    dataset = ranking_dataset(4)
    trainer = PlackettLuceTrainer(
        model, ranking_config(tmp_path, objective_options={"k": 3}), dataset, processing_class=tiny_tokenizer
    )
    batch = trainer.data_collator([dataset[i] for i in range(4)])
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    trainer.training_step(model, dict(batch))
    from_trainer = gradients(model)

    model.zero_grad()
    objective = PlackettLuceObjective(k=3, temperature=0.1, seed=0)
    embeddings = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).embeddings
    split = {"query": embeddings[:4], "documents": embeddings[4:]}
    objective(split, {**batch, "noise_step": 0}).loss.backward()
    for name, grad in gradients(model).items():
        torch.testing.assert_close(from_trainer[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_cached_step_has_the_gradients_of_the_uncached_step(tmp_path, tiny_tokenizer):
    """The gradient cache embeds queries and candidates in token-budgeted mini-batches; dropout is replayed."""
    runs = {}
    for cached in (False, True):
        model = make_tiny_encoder(len(tiny_tokenizer))
        args = ranking_config(
            tmp_path / str(cached),
            gradient_cache=cached,
            cache_token_budget=40,
            forward_token_budget=40,
            max_length=16,
            objective_options={"k": 3, "num_samples": 4},
        )
        trainer = PlackettLuceTrainer(model, args, ranking_dataset(12), processing_class=tiny_tokenizer)
        capture = CaptureGradients(model)
        trainer.add_callback(capture)
        trainer.train()
        runs[cached] = (losses(trainer), capture.steps)
    assert len(runs[True][1]) == 3
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    for step, (cached_grads, plain_grads) in enumerate(zip(runs[True][1], runs[False][1])):
        for name, grad in plain_grads.items():
            torch.testing.assert_close(cached_grads[name], grad, atol=1e-5, rtol=1e-5, msg=f"step {step} {name}")


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_global_batch(tmp_path, tiny_tokenizer):
    """2 x 2 queries == 1 x 4 queries: ragged candidate lists, a query without relevant candidate, learned tau."""
    assert_distributed_matches_single(
        tmp_path, tiny_tokenizer, {**PLACKETT_LUCE, "modes": ["plain", "cached"]}, per_device_batch=2
    )


def test_noise_step_advances_with_every_micro_batch(tmp_path, tiny_tokenizer):
    trainer = PlackettLuceTrainer(
        make_tiny_encoder(len(tiny_tokenizer)),
        ranking_config(tmp_path, gradient_accumulation_steps=2),
        ranking_dataset(8),
        processing_class=tiny_tokenizer,
    )
    steps = []
    for global_step in (0, 0, 1, 1, 3):
        trainer.state.global_step = global_step
        steps.append(trainer._next_noise_step())
    assert steps == [0, 1, 2, 3, 6]


# ---------------------------------------------------------------------------------------------- data
def test_collator_merges_queries_and_ragged_candidate_lists(tiny_tokenizer):
    rows = [
        {"query": "the cat", "documents": ["the cat sat on the mat", "a dog"], "labels": [1, 0]},
        {
            "query": "a storm hit the coast at night",
            "documents": ["rain", "storm", "the coast"],
            "labels": [0, 2, 1],
            "judged_relevance": [2, 1, 1, 1],
        },
    ]
    batch = RankingCollator(tiny_tokenizer, max_length=16, query_max_length=4)(rows)
    assert batch["num_queries"] == 2
    assert batch["input_ids"].shape[0] == 2 + 5 and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["attention_mask"][:2].sum(dim=1).max() == 4  # queries truncated to query_max_length
    plain = tiny_tokenizer(["a dog"])["input_ids"][0]
    assert batch["input_ids"][3, : len(plain)].tolist() == plain  # candidate 1 of query 0 is merged row 2 + 1
    assert batch["candidate_index"].tolist() == [[0, 1, 0], [2, 3, 4]]
    assert batch["candidate_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["relevance"].tolist() == [[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]
    assert batch["judged_relevance"].tolist() == [[1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 1.0]]


def test_max_candidates_keeps_every_relevant_document_and_the_top_of_the_list():
    assert select_candidates([0, 0, 1, 0, 2, 0], 4) == [0, 1, 2, 4]
    assert select_candidates([1, 0, 3, 2], 2) == [2, 3]  # more relevant than room: the highest grades
    assert select_candidates([0, 1], None) == [0, 1]
    report = validate_ranking_dataset(ranking_dataset(16), max_candidates=3)
    assert report.max_candidates == 3 and report.queries_without_relevant == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "documents": ["a"], "label": [1]}, r"Row 1 lacks the ranking column\(s\) \['labels'\]"),
        (
            {"query": "q", "documents": ["a", "b"], "labels": [1]},
            "Row 1: 'documents' has 2 entries but 'labels' has 1",
        ),
        ({"query": "q", "documents": ["a", "b"], "labels": [1, -1]}, "'labels', row 1, entry 1: .*>= 0, got -1"),
        ({"query": "q", "documents": ["a", "b"], "labels": [1, "high"]}, "'labels', row 1, entry 1"),
        ({"query": "q", "documents": [], "labels": []}, "'documents', row 1: the candidate list is empty"),
        ({"query": " ", "documents": ["a"], "labels": [1]}, "'query', row 1"),
        ({"query": "q", "documents": ["a"], "labels": [2], "judged_relevance": [1]}, "Row 1: 'judged_relevance'"),
    ],
)
def test_bad_ranking_rows_are_named_before_training(tmp_path, tiny_tokenizer, row, message):
    good = {"query": "the cat", "documents": ["the cat sat", "a dog"], "labels": [1, 0]}
    with pytest.raises(ValueError, match=message):  # a list of rows: Arrow would refuse some of them earlier
        PlackettLuceTrainer(
            make_tiny_encoder(len(tiny_tokenizer)),
            ranking_config(tmp_path),
            [good, row],
            processing_class=tiny_tokenizer,
        )


def test_a_dataset_missing_a_ranking_column_is_named(tmp_path, tiny_tokenizer):
    dataset = Dataset.from_dict({"query": ["q"], "documents": [["a", "b"]], "relevance": [[1, 0]]})
    with pytest.raises(ValueError, match=r"Missing ranking column\(s\) \['labels'\]"):
        PlackettLuceTrainer(
            make_tiny_encoder(len(tiny_tokenizer)), ranking_config(tmp_path), dataset, processing_class=tiny_tokenizer
        )


def test_queries_without_relevant_candidates_are_counted_at_start_and_in_the_logs(tmp_path, tiny_tokenizer):
    rows = [
        {"query": f"{s} {i}", "documents": [s, SENTENCES[(i + 1) % 12]], "labels": [int(i % 2 == 0), 0]}
        for i, s in enumerate(SENTENCES[:8])
    ]
    trainer = PlackettLuceTrainer(
        make_tiny_encoder(len(tiny_tokenizer)),
        ranking_config(tmp_path, max_steps=2, per_device_train_batch_size=1),  # one query per step is allowed
        Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    assert trainer.dataset_report.queries_without_relevant == 4 and trainer.dataset_report.rows == 8
    trainer.train()
    skipped = [entry["skipped_no_relevant"] for entry in trainer.state.log_history if "skipped_no_relevant" in entry]
    assert len(skipped) == 2 and set(skipped) <= {0.0, 1.0}
    assert trainer.contrastive_facts()["queries_without_relevant_candidate"] == 4


def test_refuses_settings_that_do_not_apply_to_ranking(tmp_path, tiny_tokenizer):
    def build(**overrides):
        return PlackettLuceTrainer(
            make_tiny_encoder(len(tiny_tokenizer)),
            ranking_config(tmp_path, **overrides),
            ranking_dataset(8),
            processing_class=tiny_tokenizer,
        )

    args = ranking_config(tmp_path)
    args.no_duplicates_sampler = True
    with pytest.raises(ValueError, match="no_duplicates_sampler"):
        PlackettLuceTrainer(
            make_tiny_encoder(len(tiny_tokenizer)), args, ranking_dataset(8), processing_class=tiny_tokenizer
        )
    with pytest.raises(ValueError, match="trains the plackett_luce objective"):
        build(objective="info_nce")
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        build(objective_options={"num_samples": 1})


# ---------------------------------------------------------------------------------------------- save, card
def test_saved_model_reloads_with_the_same_scores_and_its_card_describes_the_run(tmp_path, tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    args = ranking_config(
        tmp_path / "run", max_steps=2, max_length=16, per_device_eval_batch_size=2, objective_options={"k": 3}
    )
    trainer = PlackettLuceTrainer(model, args, ranking_dataset(8), processing_class=tiny_tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = ContrastiveEncoder.from_pretrained(tmp_path / "saved")
    row = ranking_dataset(8)[3]

    def scores(encoder):
        return encoder.encode([row["query"]], tiny_tokenizer) @ encoder.encode(row["documents"], tiny_tokenizer).T

    torch.testing.assert_close(scores(reloaded), scores(model))
    first, second = trainer.evaluate(ranking_dataset(4)), trainer.evaluate(ranking_dataset(4))
    assert math.isfinite(first["eval_loss"]) and first["eval_loss"] == second["eval_loss"]  # the same draws
    assert reloaded.config.training_objective == "plackett_luce"

    trainer.create_model_card()
    card = (tmp_path / "run" / "README.md").read_text()
    assert "plackett_luce" in card and "arxiv:2310.04407" in card and "ndcg@3" in card
    assert "| Rankings sampled per query (Plackett-Luce) | 8 |" in card and "learning-to-rank" in card
    assert "Policy-Gradient Training of Language Models for Ranking" in card
    assert "`documents (first" in card  # candidate lengths next to the query lengths
