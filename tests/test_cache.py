"""The gradient cache: mini-batch planning, and gradients equal to the uncached computation with dropout on."""

import pytest
import torch

from hf_contrastive.cache import GradientCache, plan_mini_batches, select_rows
from hf_contrastive.objectives import InfoNCE, split_columns

from .conftest import SENTENCES, make_tiny_encoder

COLUMNS = ("anchor", "positive", "negative_1")


def test_plan_respects_budget_and_covers_every_row_once():
    lengths = [5, 17, 3, 9, 9, 12, 1, 17]
    plan = plan_mini_batches(lengths, token_budget=30)
    rows = torch.cat([mb.rows for mb in plan]).tolist()
    assert sorted(rows) == list(range(len(lengths)))
    for mini_batch in plan:
        assert mini_batch.length == max(lengths[r] for r in mini_batch.rows.tolist())
        assert len(mini_batch.rows) * mini_batch.length <= 30
    assert [lengths[r] for r in rows] == sorted(lengths, reverse=True)


def test_plan_gives_an_oversized_row_its_own_mini_batch():
    plan = plan_mini_batches([50, 2, 2], token_budget=10)
    assert [mb.rows.tolist() for mb in plan] == [[0], [1, 2]]


def test_plan_refuses_a_non_positive_budget():
    with pytest.raises(ValueError, match="cache_token_budget"):
        plan_mini_batches([3], token_budget=0)


def test_select_rows_trims_padding_on_either_side():
    ids = torch.tensor([[1, 2, 0], [3, 0, 0]])
    mask = (ids > 0).long()
    plan = plan_mini_batches(mask.sum(1).tolist(), token_budget=100)
    right = select_rows({"input_ids": ids, "attention_mask": mask}, plan[0], "right")
    assert right["input_ids"].tolist() == [[1, 2], [3, 0]]
    left_ids = torch.tensor([[0, 1, 2], [0, 0, 3]])
    left = select_rows({"input_ids": left_ids, "attention_mask": (left_ids > 0).long()}, plan[0], "left")
    assert left["input_ids"].tolist() == [[1, 2], [0, 3]]


def merged_batch(tokenizer, batch_size=4):
    texts = [SENTENCES[(c * batch_size + i) % len(SENTENCES)] + " x" * c for c in range(3) for i in range(batch_size)]
    features = tokenizer(texts, padding=True, return_tensors="pt")
    features.pop("token_type_ids", None)
    hashes = torch.arange(len(texts)).view(3, batch_size)
    return dict(features), {"column_names": COLUMNS, "input_hashes": hashes}


def reference_gradients(model, objective, features, batch, cache):
    """The graph-based computation over the same mini-batches, RNG states and order as the cache uses."""
    plan = cache.plan(features["attention_mask"])
    chunks = [model(**select_rows(features, mb)).embeddings for mb in plan]
    rows = torch.cat([mb.rows for mb in plan])
    embeddings = torch.empty(len(rows), chunks[0].shape[1])
    embeddings = embeddings.index_put((rows,), torch.cat(chunks))
    loss = objective(split_columns(embeddings, COLUMNS), batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def cached_gradients(model, objective, features, batch, cache):
    loss, _ = cache.step(
        lambda f: model(**f).embeddings,
        features,
        lambda e: (objective(split_columns(e, COLUMNS), batch).loss, {}),
    )
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("token_budget", [40, 10_000])
def test_cached_gradients_equal_uncached_with_dropout(tiny_tokenizer, token_budget):
    features, batch = merged_batch(tiny_tokenizer)
    objective = InfoNCE(temperature=0.1)
    cache = GradientCache(token_budget=token_budget)
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    assert model.config.backbone_config.hidden_dropout_prob > 0

    torch.manual_seed(123)
    ref_loss, ref_grads = reference_gradients(model, objective, features, batch, cache)
    model.zero_grad()
    torch.manual_seed(123)
    loss, grads = cached_gradients(model, objective, features, batch, cache)

    assert len(cache.plan(features["attention_mask"])) > (1 if token_budget == 40 else 0)
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_without_dropout_replay_the_gradients_would_differ(tiny_tokenizer):
    """Guard that the equality above depends on the replay: fresh dropout masks change the gradients."""
    features, batch = merged_batch(tiny_tokenizer)
    objective = InfoNCE(temperature=0.1)
    cache = GradientCache(token_budget=40)
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    torch.manual_seed(123)
    _, ref_grads = reference_gradients(model, objective, features, batch, cache)
    model.zero_grad()
    torch.manual_seed(999)
    _, grads = reference_gradients(model, objective, features, batch, cache)
    assert any(not torch.allclose(grads[n], ref_grads[n], atol=1e-5) for n in grads)


def test_one_unsorted_mini_batch_equals_the_plain_full_batch_step(tiny_tokenizer):
    features, batch = merged_batch(tiny_tokenizer)
    objective = InfoNCE(temperature=0.1)
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    torch.manual_seed(7)
    loss = objective(split_columns(model(**features).embeddings, COLUMNS), batch).loss
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(7)
    cached_loss, grads = cached_gradients(
        model, objective, features, batch, GradientCache(token_budget=10_000, sort_by_length=False)
    )
    assert cached_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], atol=1e-5, rtol=1e-5, msg=name)


def test_learned_temperature_gets_its_gradient_through_the_cache(tiny_tokenizer):
    features, batch = merged_batch(tiny_tokenizer)
    objective = InfoNCE(temperature=0.1, learnable_temperature=True)
    model = make_tiny_encoder(len(tiny_tokenizer)).eval()
    objective(split_columns(model(**features).embeddings, COLUMNS), batch).loss.backward()
    expected = objective.log_scale.grad.clone()
    objective.log_scale.grad = None
    model.zero_grad()
    cached_gradients(model, objective, features, batch, GradientCache(token_budget=40))
    torch.testing.assert_close(objective.log_scale.grad, expected, atol=1e-5, rtol=1e-5)
