import random
import time

import datasets
import pytest
from accelerate.data_loader import BatchSamplerShard

from hf_contrastive.data import NoDuplicatesBatchSampler
from hf_contrastive.data.sampler import first_fit_batches, row_text_ids

COLUMNS = ["anchor", "positive", "negative_1"]


def _duplicated_dataset(n: int = 400, seed: int = 0) -> datasets.Dataset:
    """Rows whose positives and negatives are drawn from small pools, so many texts repeat across rows."""
    rng = random.Random(seed)
    return datasets.Dataset.from_dict(
        {
            "anchor": [f"question {i % 300}" for i in range(n)],
            "positive": [f"answer {rng.randrange(150)}" for _ in range(n)],
            "negative_1": [f"answer {rng.randrange(150)}" if rng.random() < 0.5 else f"other {i}" for i in range(n)],
        }
    )


def _global_batches(sampler: NoDuplicatesBatchSampler) -> list[list[int]]:
    batches = list(sampler)
    w = sampler.world_size
    return [sum(batches[i : i + w], []) for i in range(0, len(batches), w)]


def _greedy_passes(order, row_ids, capacity):
    """Reference: sentence-transformers' repeated greedy passes (skipped rows stay first in line)."""
    remaining = list(order)
    batches = []
    while remaining:
        batch, seen, skipped = [], set(), []
        for position, row in enumerate(remaining):
            if len(batch) == capacity:
                skipped.extend(remaining[position:])
                break
            if seen.isdisjoint(row_ids[row]):
                batch.append(row)
                seen.update(row_ids[row])
            else:
                skipped.append(row)
        batches.append(batch)
        remaining = skipped
    return batches


@pytest.mark.parametrize("world_size", [1, 2])
def test_no_text_repeats_within_a_global_batch(world_size):
    dataset = _duplicated_dataset()
    sampler = NoDuplicatesBatchSampler(dataset, batch_size=8, world_size=world_size, text_columns=COLUMNS, seed=3)
    global_batches = _global_batches(sampler)
    assert global_batches
    for rows in global_batches:
        assert len(rows) == 8 * world_size
        # a text may repeat inside one row (positive == negative_1) but never across rows
        texts = [text for r in rows for text in {dataset[r][c] for c in COLUMNS}]
        assert len(set(texts)) == len(texts)


@pytest.mark.parametrize(("world_size", "drop_last"), [(1, True), (1, False), (2, True), (3, True)])
def test_len_is_exact_and_a_multiple_of_world_size(world_size, drop_last):
    sampler = NoDuplicatesBatchSampler(_duplicated_dataset(), 7, world_size, COLUMNS, drop_last=drop_last)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        assert len(batches) % world_size == 0
        if drop_last:
            assert all(len(b) == 7 for b in batches)


def test_rows_are_used_at_most_once_per_epoch():
    sampler = NoDuplicatesBatchSampler(_duplicated_dataset(), 8, 2, COLUMNS)
    rows = [r for batch in sampler for r in batch]
    assert len(rows) == len(set(rows))


def test_epochs_differ_and_same_seed_and_epoch_repeat():
    dataset = _duplicated_dataset()
    first = NoDuplicatesBatchSampler(dataset, 8, 2, COLUMNS, seed=5)
    second = NoDuplicatesBatchSampler(dataset, 8, 2, COLUMNS, seed=5)
    epoch0 = list(first)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch0 != epoch1
    second.set_epoch(1)
    assert list(second) == epoch1
    second.set_epoch(0)
    assert list(second) == epoch0
    assert list(NoDuplicatesBatchSampler(dataset, 8, 2, COLUMNS, seed=6)) != epoch0


def test_set_epoch_through_inner_sampler_as_accelerate_does():
    sampler = NoDuplicatesBatchSampler(_duplicated_dataset(), 8, 1, COLUMNS)
    epoch0 = list(sampler)
    sampler.sampler.set_epoch(4)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


def test_without_duplicates_all_rows_are_covered_or_only_the_tail_dropped():
    dataset = datasets.Dataset.from_dict(
        {"anchor": [f"a{i}" for i in range(103)], "positive": [f"p{i}" for i in range(103)]}
    )
    kept = NoDuplicatesBatchSampler(dataset, 10, 1, ["anchor", "positive"], drop_last=False)
    assert sorted(r for b in kept for r in b) == list(range(103))
    assert [len(b) for b in kept] == [10] * 10 + [3]
    dropped = NoDuplicatesBatchSampler(dataset, 10, 1, ["anchor", "positive"], drop_last=True)
    assert len(dropped) == 10 and len({r for b in dropped for r in b}) == 100
    sharded = NoDuplicatesBatchSampler(dataset, 5, 2, ["anchor", "positive"])
    assert len(sharded) == 20 and len({r for b in sharded for r in b}) == 100


def test_first_fit_equals_repeated_greedy_passes():
    rng = random.Random(0)
    row_ids = [tuple({rng.randrange(40) for _ in range(rng.randint(1, 3))}) for _ in range(300)]
    for capacity in (1, 4, 16):
        order = rng.sample(range(300), 300)
        assert first_fit_batches(order, row_ids, capacity) == _greedy_passes(order, row_ids, capacity)


def test_heavy_duplication_terminates_quickly():
    n = 20_000
    dataset = datasets.Dataset.from_dict({"anchor": [f"q{i}" for i in range(n)], "positive": ["yes"] * n})
    start = time.perf_counter()
    dropped = NoDuplicatesBatchSampler(dataset, 4, 2, ["anchor", "positive"])
    assert len(dropped) == 0 and list(dropped) == []
    kept = NoDuplicatesBatchSampler(dataset, 4, 1, ["anchor", "positive"], drop_last=False)
    assert len(kept) == n and all(len(b) == 1 for b in kept)
    assert time.perf_counter() - start < 5


def test_rows_whose_columns_repeat_each_other_are_accepted():
    dataset = [{"anchor": f"t{i}", "positive": f"t{i}"} for i in range(8)]
    sampler = NoDuplicatesBatchSampler(dataset, 4, 1, ["anchor", "positive"])
    assert sorted(r for b in sampler for r in b) == list(range(8))


def test_list_of_dicts_and_dataset_give_the_same_plan():
    dataset = _duplicated_dataset(100)
    as_rows = [dict(row) for row in dataset]
    assert row_text_ids(as_rows, COLUMNS) == row_text_ids(dataset, COLUMNS)
    assert list(NoDuplicatesBatchSampler(as_rows, 4, 2, COLUMNS)) == list(
        NoDuplicatesBatchSampler(dataset, 4, 2, COLUMNS)
    )


def test_accelerate_shards_give_each_rank_its_part_of_the_global_batch():
    sampler = NoDuplicatesBatchSampler(_duplicated_dataset(), 8, 2, COLUMNS)
    batches = list(sampler)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=rank)) for rank in range(2)]
    assert shards[0] == batches[0::2] and shards[1] == batches[1::2]
    assert len(BatchSamplerShard(sampler, num_processes=2, process_index=0)) == len(batches) // 2


def test_refused_arguments():
    dataset = _duplicated_dataset(10)
    with pytest.raises(ValueError, match="drop_last=False needs world_size == 1"):
        NoDuplicatesBatchSampler(dataset, 4, 2, COLUMNS, drop_last=False)
    with pytest.raises(ValueError, match=">= 1"):
        NoDuplicatesBatchSampler(dataset, 0, 1, COLUMNS)
    with pytest.raises(ValueError, match="'query' is not in the dataset"):
        NoDuplicatesBatchSampler(dataset, 4, 1, ["query"])
