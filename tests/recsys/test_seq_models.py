"""SASRec: CL4SRec augmentations, causal masking, scoring, the item-id map, save/reload and bad input."""

import pytest
import torch

from hf_contrastive.models.seq_rec import (
    SASRec,
    SASRecConfig,
    SequenceAugmentation,
    crop_sequence,
    mask_sequence,
    reorder_sequence,
)
from hf_contrastive.trainers.seq_rec import SeqRecCollator


def tiny_config(**overrides) -> SASRecConfig:
    options = dict(num_items=12, hidden_size=16, num_heads=2, intermediate_size=32, max_seq_len=8)
    return SASRecConfig(**{**options, **overrides})


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- augmentations
def test_crop_keeps_a_contiguous_window_of_half_the_items():
    sequence = [5, 3, 9, 1, 7, 2, 8]
    for seed in range(20):
        cropped = crop_sequence(sequence, 0.5, generator(seed))
        assert len(cropped) == 3
        start = sequence.index(cropped[0])
        assert sequence[start : start + 3] == cropped


def test_mask_zeroes_exactly_floor_half_positions_and_keeps_the_length():
    sequence = [5, 3, 9, 1, 7, 2, 8]
    for seed in range(20):
        masked = mask_sequence(sequence, 0.5, generator(seed))
        assert len(masked) == 7
        assert sum(item == 0 for item in masked) == 3
        assert all(m in (0, s) for m, s in zip(masked, sequence))


def test_reorder_shuffles_one_window_of_eight_and_keeps_the_multiset():
    sequence = list(range(1, 11))
    changed_somewhere = False
    for seed in range(20):
        reordered = reorder_sequence(sequence, 0.8, generator(seed))
        assert sorted(reordered) == sequence
        moved = [i for i, (a, b) in enumerate(zip(reordered, sequence)) if a != b]
        if moved:
            changed_somewhere = True
            assert moved[-1] - moved[0] < 8  # every moved item lies inside one window of 8
    assert changed_somewhere


def test_augment_pair_uses_two_different_operators_and_keeps_length_one_sequences():
    augmentation = SequenceAugmentation()
    sequence = [5, 3, 9, 1, 7, 2, 8]

    def operator(view):  # distinct non-zero items: each operator leaves its own trace
        if len(view) != len(sequence):
            return "crop"
        return "mask" if 0 in view else "reorder"

    kinds = set()
    for seed in range(30):
        first, second = augmentation.augment_pair(sequence, generator(seed))
        assert operator(first) != operator(second)
        kinds.add(operator(first))
    assert kinds == {"crop", "mask", "reorder"}
    assert augmentation.augment_pair([4], generator()) == ([4], [4])


def test_augmentations_are_deterministic_for_a_seed():
    augmentation = SequenceAugmentation()
    sequence = list(range(1, 13))
    assert augmentation.augment_pair(sequence, generator(3)) == augmentation.augment_pair(sequence, generator(3))
    draws = {tuple(map(tuple, augmentation.augment_pair(sequence, generator(seed)))) for seed in range(10)}
    assert len(draws) > 1


def test_augmentation_ratios_and_operators_are_validated():
    with pytest.raises(ValueError, match="mask_ratio"):
        SequenceAugmentation(mask_ratio=1.5)
    with pytest.raises(ValueError, match="Unknown augmentation"):
        SequenceAugmentation().apply("insert", [1, 2], generator())


def test_collator_keeps_the_last_items_right_pads_and_adds_two_views():
    collator = SeqRecCollator(max_seq_len=4, augmentation=SequenceAugmentation(), seed=1)
    batch = collator([{"item_seq": [1, 2, 3, 4, 5, 6], "target": 7}, {"item_seq": [9], "target": 2}])
    assert batch["item_seq"].tolist() == [[3, 4, 5, 6], [9, 0, 0, 0]]
    assert batch["item_seq_len"].tolist() == [4, 1]
    assert batch["labels"].tolist() == [7, 2]
    for view in (1, 2):
        lengths = batch[f"aug_len_{view}"]
        assert lengths[1] == 1 and batch[f"aug_seq_{view}"][1, 0] == 9  # length 1: unchanged
        assert (batch[f"aug_seq_{view}"][:, lengths.max() :] == 0).all()
    assert "aug_seq_1" not in SeqRecCollator(max_seq_len=4)([{"item_seq": [1], "target": 2}])


def test_dataloader_workers_draw_their_own_views_reproducibly():
    """Two workers collating identical rows must not repeat each other's draws (a copied generator would)."""

    def views(seed: int) -> list[list[list[int]]]:
        torch.manual_seed(seed)  # the DataLoader derives its workers' seeds from the global RNG
        rows = [{"item_seq": list(range(1, 9)), "target": 9}] * 8
        collator = SeqRecCollator(max_seq_len=8, augmentation=SequenceAugmentation(), seed=1)
        loader = torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator)
        return [batch["aug_seq_1"].tolist() for batch in loader]  # batch 0 from worker 0, batch 1 from worker 1

    first_worker, second_worker = views(0)
    assert first_worker != second_worker
    assert views(0) == [first_worker, second_worker]  # reproducible from the seeded global RNG
    assert views(1) != [first_worker, second_worker]


# ----------------------------------------------------------------------------------------------- encoder
def test_a_later_item_does_not_change_earlier_hidden_states():
    torch.manual_seed(0)
    model = SASRec(tiny_config()).eval()
    sequence = torch.tensor([[3, 5, 7, 2, 9, 4]])
    changed = sequence.clone()
    changed[0, 4] = 11
    before, after = model.hidden_states(sequence), model.hidden_states(changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], rtol=0, atol=0)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_padding_and_masked_items_are_not_attended():
    torch.manual_seed(0)
    model = SASRec(tiny_config()).eval()
    lengths = torch.tensor([3])
    # Right padding: whatever follows the history is ignored at the last real position.
    short = model.encode(torch.tensor([[3, 5, 7, 0, 0]]), lengths)
    torch.testing.assert_close(short, model.encode(torch.tensor([[3, 5, 7]]), lengths))

    # A masked item (id 0) is a missing key: nothing at its position reaches later positions (its position
    # embedding is perturbed here), while a real item there does.
    def last_state_after_perturbing_position_1(item_seq):
        shift = torch.randn(16, generator=generator(1))  # not constant: LayerNorm would remove a constant
        with torch.no_grad():
            before = model.hidden_states(item_seq)[0, 2]
            model.position_embeddings.weight[1] += shift
            after = model.hidden_states(item_seq)[0, 2]
            model.position_embeddings.weight[1] -= shift
        return before, after

    torch.testing.assert_close(*last_state_after_perturbing_position_1(torch.tensor([[3, 0, 7]])), rtol=0, atol=0)
    assert not torch.allclose(*last_state_after_perturbing_position_1(torch.tensor([[3, 5, 7]])))
    leading_masked = model.hidden_states(torch.tensor([[0, 5, 7]]))
    assert torch.isfinite(leading_masked).all()  # a query with no allowed key gets uniform attention, not NaN


def test_encode_reads_the_last_real_position_and_scores_every_item_but_padding():
    torch.manual_seed(0)
    model = SASRec(tiny_config()).eval()
    item_seq, lengths = torch.tensor([[3, 5, 7, 0], [2, 4, 6, 8]]), torch.tensor([3, 4])
    hidden = model.hidden_states(item_seq)
    torch.testing.assert_close(model.encode(item_seq, lengths), torch.stack([hidden[0, 2], hidden[1, 3]]))
    output = model(item_seq, lengths, labels=torch.tensor([1, 12]))
    assert output.logits.shape == (2, 13)
    assert (output.logits[:, 0] == torch.finfo(output.logits.dtype).min).all()
    expected = model.encode(item_seq, lengths) @ model.item_embeddings.weight[1:].T
    torch.testing.assert_close(output.logits[:, 1:], expected)
    manual_ce = -torch.log_softmax(expected, dim=1)[[0, 1], [0, 11]].mean()
    torch.testing.assert_close(output.loss, manual_ce)


def test_model_views_are_unit_norm_and_come_from_separate_augmenters():
    torch.manual_seed(0)
    model = SASRec(tiny_config(model_augmenters=True, augmenter_widths=[8, 4])).eval()
    seq = torch.tensor([[3, 5, 7], [2, 4, 6]])
    lengths = torch.tensor([3, 2])
    output = model(seq, lengths, aug_seq_1=seq, aug_len_1=lengths, aug_seq_2=seq, aug_len_2=lengths)
    first, second = output.model_view_embeddings
    torch.testing.assert_close(first.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(second.norm(dim=1), torch.ones(2))
    assert not torch.allclose(first, second)  # same input, different augmenters
    assert [m.out_features for m in model.augmenter_1 if isinstance(m, torch.nn.Linear)] == [8, 4, 16]
    assert {id(p) for p in model.augmenter_parameters()}.isdisjoint(id(p) for p in model.encoder_parameters())
    assert len(model.augmenter_parameters()) + len(model.encoder_parameters()) == len(list(model.parameters()))


# ----------------------------------------------------------------------------------------------- ids, save, errors
def test_reloaded_model_gives_identical_scores_and_recommends_raw_ids(tmp_path):
    torch.manual_seed(0)
    raw_items = [f"sku-{i}" for i in range(12)]
    model = SASRec(tiny_config(item_ids=raw_items, model_augmenters=True)).eval()
    model.save_pretrained(tmp_path)
    reloaded = SASRec.from_pretrained(tmp_path).eval()
    item_seq, lengths = torch.tensor([[3, 5, 7, 0], [2, 4, 6, 8]]), torch.tensor([3, 4])
    torch.testing.assert_close(reloaded(item_seq, lengths).logits, model(item_seq, lengths).logits, rtol=0, atol=0)
    assert reloaded.config.item_ids == raw_items
    history = ["sku-2", "sku-4", "sku-6"]
    recommended = reloaded.recommend(history, k=5)
    assert recommended == model.recommend(history, k=5)
    assert len(recommended) == 5 and not set(recommended) & set(history)
    scores = model(torch.tensor([[3, 5, 7]]), torch.tensor([3])).logits[0, 1:]
    scores[[2, 4, 6]] = float("-inf")  # internal ids 3, 5, 7 are raw sku-2, sku-4, sku-6
    assert recommended == [raw_items[i] for i in scores.topk(5).indices.tolist()]
    assert set(model.recommend(history, k=20, exclude_history=False)) == set(raw_items)


def test_recommend_refuses_empty_histories_and_unknown_items():
    model = SASRec(tiny_config(item_ids=[f"i{n}" for n in range(12)]))
    with pytest.raises(ValueError, match="non-empty history"):
        model.recommend([], k=3)
    with pytest.raises(ValueError, match=r"Unknown item id\(s\) \['nope'\]"):
        model.recommend(["i1", "nope"], k=3)
    with pytest.raises(ValueError, match="Unknown item"):
        SASRec(tiny_config()).recommend([13], k=3)  # identity map: ids 1..12


def test_bad_tensors_and_configs_raise_clear_errors():
    model = SASRec(tiny_config())
    with pytest.raises(ValueError, match="item_seq_len"):
        model.encode(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="outside 0..12"):
        model.encode(torch.tensor([[1, 13]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="max_seq_len"):
        model.encode(torch.ones(1, 9, dtype=torch.long), torch.tensor([9]))
    with pytest.raises(ValueError, match="labels"):
        model(torch.tensor([[1, 2]]), torch.tensor([2]), labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="both augmented views"):
        model(torch.tensor([[1, 2]]), torch.tensor([2]), aug_seq_1=torch.tensor([[1]]), aug_len_1=torch.tensor([1]))
    with pytest.raises(ValueError, match="no model augmenters"):
        model.model_views(torch.zeros(1, 16), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="item_ids has 2 entries"):
        tiny_config(item_ids=["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        tiny_config(item_ids=["a"] * 12)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(num_heads=3)
