"""Recommendation data: id maps, duplicates, the specs' splits, BPR triples and the real-data loaders."""

import json
from pathlib import Path

import datasets
import pytest
import torch

from hf_contrastive.data.recsys import (
    IdMap,
    InteractionData,
    SequenceData,
    TripleSampler,
    load_movielens_100k,
    load_selfrec_interactions,
    load_seqrec_sequences,
    pairs_to_csr,
)

DATA = Path(__file__).resolve().parents[2] / "../shared/data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def interactions(rows):
    users, items, times = zip(*rows)
    return datasets.Dataset.from_dict({"user_id": list(users), "item_id": list(items), "timestamp": list(times)})


def test_id_map_round_trips_through_json_and_names_unknown_ids():
    id_map = IdMap.from_first_appearance(["u7", "u2", "u7", "u9"], kind="user")
    assert id_map.ids == ["u7", "u2", "u9"] and id_map.index("u2") == 1
    reloaded = IdMap.from_dict(json.loads(json.dumps(id_map.to_dict())))
    assert reloaded == id_map
    assert reloaded.decode(reloaded.encode(["u9", "u7"])) == ["u9", "u7"]
    with pytest.raises(KeyError, match="Unknown user id 'u5'"):
        reloaded.encode(["u7", "u5"])
    assert IdMap([10, 20], offset=1).encode([20, 10]).tolist() == [2, 1]


def test_duplicate_interactions_keep_the_earliest_or_raise():
    rows = [("a", "x", 5.0), ("a", "y", 1.0), ("a", "x", 2.0), ("b", "x", 3.0), ("a", "z", 4.0), ("b", "z", 0.0)]
    rows.append(("b", "y", 0.5))
    data = InteractionData.from_dataset(interactions(rows), split="temporal", ratios=(0.67, 0.0, 0.33))
    assert data.stats["duplicates_dropped"] == 1
    # user a keeps (y, 1.0), (x, 2.0), (z, 4.0): the latest third, z, is its test item; b's is x
    assert data.item_map.decode(data.histories("test")[data.user_map.index("a")]) == ["z"]
    assert sorted(data.item_map.decode(data.histories("train")[data.user_map.index("b")])) == ["y", "z"]
    assert data.valid is None
    with pytest.raises(ValueError, match="1 duplicate"):
        InteractionData.from_dataset(interactions(rows), on_duplicate="error")


def test_random_split_is_per_user_seeded_and_keeps_a_training_item():
    rows = [(user, item, 0.0) for user in range(20) for item in range(user % 7 + 1)]
    first = InteractionData.from_dataset(interactions(rows), ratios=(0.7, 0.1, 0.2), seed=3)
    again = InteractionData.from_dataset(interactions(rows), ratios=(0.7, 0.1, 0.2), seed=3)
    assert torch.equal(first.test, again.test) and torch.equal(first.valid, again.valid)
    assert all(len(history) >= 1 for history in first.histories("train"))
    user = first.user_map.index(6)  # 7 items: round(1.4) = 1 test, round(0.7) = 1 valid, 5 train
    assert [len(first.histories(name)[user]) for name in ("train", "valid", "test")] == [5, 1, 1]
    assert len(first.train) + len(first.valid) + len(first.test) <= len(rows)


def test_evaluation_pairs_with_unseen_ids_or_training_pairs_are_dropped():
    data = InteractionData.from_pairs(
        train=[("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u1", "i1")],
        test=[("u1", "i2"), ("u2", "i1"), ("u3", "i1"), ("u2", "i9")],
    )
    assert data.stats == {"train_duplicates_dropped": 1, "test_unseen_dropped": 2, "test_in_train_dropped": 1}
    assert data.train.tolist() == [[0, 0], [0, 1], [1, 1]] and data.test.tolist() == [[1, 0]]
    assert data.to_dataset("test")[0] == {"user_id": 1, "item_id": 0}
    with pytest.raises(ValueError, match="no 'valid' split"):
        data.split("valid")


def test_bad_interaction_columns_are_named():
    with pytest.raises(ValueError, match=r"\['item_id'\]"):
        InteractionData.from_dataset(datasets.Dataset.from_dict({"user_id": [1], "item": [2]}))
    with pytest.raises(ValueError, match="timestamp"):
        InteractionData.from_dataset(datasets.Dataset.from_dict({"user_id": [1], "item_id": [2]}), split="temporal")


def test_pairs_to_csr_sorts_columns_per_row():
    indptr, columns = pairs_to_csr(torch.tensor([[2, 1], [0, 3], [2, 0], [0, 1]]), num_rows=3)
    assert indptr.tolist() == [0, 2, 2, 4] and columns.tolist() == [1, 3, 0, 1]


def test_triple_sampler_never_draws_a_training_item_as_negative():
    train = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 3], [2, 0], [2, 4]])
    sampler = TripleSampler(train, num_users=3, num_items=5)
    triples = sampler.sample(torch.Generator().manual_seed(0))
    positives = sorted(zip(triples["user_id"].tolist(), triples["item_id"].tolist()))
    assert positives == sorted(map(tuple, train.tolist()))  # every training pair once per epoch
    assert not sampler.is_training_pair(triples["user_id"], triples["neg_item_id"]).any()
    again = sampler.sample(torch.Generator().manual_seed(0))
    assert all(torch.equal(triples[key], again[key]) for key in triples)
    # user 0's only negatives are items 3 and 4
    user_sampler = TripleSampler(train, 3, 5, mode="user", num_triples=500)
    drawn = user_sampler.sample(torch.Generator().manual_seed(1))
    assert user_sampler.is_training_pair(drawn["user_id"], drawn["item_id"]).all()
    assert set(drawn["neg_item_id"][drawn["user_id"] == 0].tolist()) == {3, 4}


def test_triple_sampler_refuses_a_user_with_every_item():
    with pytest.raises(ValueError, match="every item"):
        TripleSampler(torch.tensor([[0, 0], [0, 1], [1, 0]]), num_users=2, num_items=2)


def test_sequences_split_leave_one_out_with_prefix_instances():
    rows = [("a", "x", 1.0), ("a", "y", 2.0), ("a", "z", 3.0), ("a", "w", 4.0), ("a", "v", 5.0), ("b", "x", 1.0)]
    data = SequenceData.from_dataset(interactions(rows))
    assert data.stats["short_users_dropped"] == 1 and data.sequences == [[1, 2, 3, 4, 5]]
    assert data.evaluation_split("test") == ([[1, 2, 3, 4]], [5])
    assert data.evaluation_split("valid") == ([[1, 2, 3]], [4])
    assert data.head(0).sequences == [] and data.head(1).item_map == data.item_map
    instances = data.training_instances(max_len=1)
    assert instances["item_seq"] == [[1], [2]] and instances["target"] == [2, 3]
    with pytest.raises(ValueError, match="fewer than 3 items"):
        SequenceData(IdMap(["a"]), IdMap(["x"], offset=1), [[1, 1]])


@needs_data
def test_movielens_100k_loads_the_source_row_counts():
    dataset = load_movielens_100k(DATA / "ml-100k")
    assert len(dataset) == 100_000
    assert len(set(dataset["user_id"])) == 943 and len(set(dataset["item_id"])) == 1682


@needs_data
def test_selfrec_beauty_loads_as_graph_interactions():
    data = load_selfrec_interactions(DATA / "amazon-beauty-selfrec")
    assert (data.num_users, data.num_items, len(data.train)) == (22_363, 12_092, 176_139)
    assert len(data.test) + data.stats["test_unseen_dropped"] == 22_363
    assert data.user_map.ids[:2] == ["1", "2"] and data.item_map.decode([0, 3]) == ["1", "4"]


@needs_data
@pytest.mark.parametrize(
    ("name", "users", "items", "actions"),
    [("Beauty", 22_363, 12_101, 198_502), ("Sports_and_Outdoors", 35_598, 18_357, 296_337)],
)
def test_seqrec_amazon_loads_the_source_row_counts(name, users, items, actions):
    data = load_seqrec_sequences(DATA / "seqrec-amazon" / f"{name}.txt")
    assert (data.num_users, data.num_items, sum(map(len, data.sequences))) == (users, items, actions)
    assert data.item_map.index(items) == items  # S3-Rec ids 1..I are kept
