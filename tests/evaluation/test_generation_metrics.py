"""Offline generation metrics: rep-n and diversity on hand cases, isotropy on hand-built states and a real model,
continuation log-probabilities against a direct computation."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_contrastive.evaluation.generation import (
    coherence,
    continuation_log_probs,
    diversity,
    evaluate_continuations,
    isotropy,
    isotropy_from_terms,
    ngram_repetition,
    perplexity,
    self_similarity_terms,
)


def test_rep_n_counts_every_ngram_pooled_over_the_corpus():
    assert ngram_repetition(["a b a b"], 2) == pytest.approx(100 * (1 - 2 / 3))  # "a b", "b a", "a b"
    assert ngram_repetition(["a b", "a b"], 2) == pytest.approx(50.0)  # pooled, not per text
    assert ngram_repetition(["a b c d"], 2) == 0.0
    assert ngram_repetition(["a", ""], 2) == 0.0  # no bigram at all
    with pytest.raises(ValueError, match="n must be >= 1"):
        ngram_repetition(["a"], 0)


def test_diversity_multiplies_the_unrepeated_shares_of_bigrams_to_fourgrams():
    assert diversity(["the cat sat on the mat"]) == pytest.approx(100.0)
    # "a a a a a": rep-2 = 75 (4 bigrams, 1 unique), rep-3 = 200/3, rep-4 = 50.
    assert diversity(["a a a a a"]) == pytest.approx(100 * 0.25 * (1 / 3) * 0.5)


def test_isotropy_is_zero_for_identical_states_and_one_for_orthonormal_ones():
    ones = torch.ones(1, 4, 3)
    orthonormal = torch.eye(4)[None]
    mask = torch.ones(1, 4)
    assert isotropy_from_terms(*self_similarity_terms(ones, mask)) == pytest.approx(0.0)
    assert isotropy_from_terms(*self_similarity_terms(orthonormal, mask)) == pytest.approx(1.0)


def test_isotropy_weights_texts_by_their_token_pairs_and_ignores_padding():
    # Text A: two identical tokens (cosine sum 2 over 2 pairs) + padding; text B: three orthonormal tokens (0 over 6).
    hidden = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [5.0, 5, 5]], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    sums, pairs = self_similarity_terms(hidden, torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert sums.tolist() == pytest.approx([2.0, 0.0]) and pairs.tolist() == [2.0, 6.0]
    assert isotropy_from_terms(sums, pairs) == pytest.approx(1 - 2 / 8)  # not the mean of per-text values (0.5)


@pytest.fixture
def lm_and_tokenizer(tiny_tokenizer):
    tokenizer = tiny_tokenizer.__class__(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="[CLS]", pad_token="[PAD]"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=3
    )
    return GPT2LMHeadModel(config).double().eval(), tokenizer


def test_isotropy_of_a_model_matches_its_hidden_states_text_by_text(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    texts = ["the cat sat on the mat", "a dog runs", "x"]  # "x" is dropped (< 2 characters)
    cosine_sum = pair_count = 0.0
    for text in texts[:2]:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        states = torch.nn.functional.normalize(model(ids, output_hidden_states=True).hidden_states[-1][0], dim=-1)
        cosine_sum += (states @ states.T).sum().item() - len(states)
        pair_count += len(states) * (len(states) - 1)
    assert isotropy(model, tokenizer, texts, batch_size=2) == pytest.approx(1 - cosine_sum / pair_count)


def test_continuation_log_probs_are_the_models_next_token_log_probs_after_bos_and_prefix(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    prefixes, continuations = ["the cat", "rain falls on"], [" sat on the mat", " the town"]
    batched = continuation_log_probs(model, tokenizer, prefixes, continuations, batch_size=2)
    for prefix, continuation, values in zip(prefixes, continuations, batched):
        context = [tokenizer.bos_token_id] + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        target = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        log_probs = model(torch.tensor([context + target])).logits[0].log_softmax(-1)
        expected = [log_probs[len(context) - 1 + t, token] for t, token in enumerate(target)]
        torch.testing.assert_close(values, torch.stack(expected))
    assert coherence(model, tokenizer, prefixes, continuations) == pytest.approx(
        sum(values.mean().item() for values in batched) / 2
    )
    texts = ["the cat sat", "a dog runs in the park"]
    scored = torch.cat(continuation_log_probs(model, tokenizer, ["", ""], texts))
    assert perplexity(model, tokenizer, texts) == pytest.approx(torch.exp(-scored.mean()).item())


def test_evaluate_continuations_reports_every_proxy(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer
    metrics = evaluate_continuations(["the cat"], ["sat sat sat sat"], scorer=model, scorer_tokenizer=tokenizer)
    assert set(metrics) == {"rep-2", "rep-3", "rep-4", "diversity", "length", "coherence"}
    assert metrics["rep-2"] == pytest.approx(100 * (1 - 1 / 3)) and metrics["length"] == 4
    assert metrics["coherence"] < 0
    with pytest.raises(ValueError, match="scorer_tokenizer is required"):
        evaluate_continuations(["a"], ["b c"], scorer=model)


def test_continuations_longer_than_the_judge_can_read_are_cut_to_its_positions(lm_and_tokenizer):
    model, tokenizer = lm_and_tokenizer  # 64 positions
    (values,) = continuation_log_probs(model, tokenizer, ["the cat"], [" sat" * 100])
    assert len(values) == 64 - 3  # BOS and the two prefix tokens take 3 of the 64 positions
