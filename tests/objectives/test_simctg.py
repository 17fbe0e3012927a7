"""SimCTG's token-level contrastive loss: hand-computed similarity matrices, masks, limits and its gradient."""

import itertools

import pytest
import torch

from hf_contrastive.objectives.simctg import simctg_contrastive_loss, valid_pair_mask


def enumerated_loss(hidden: torch.Tensor, mask: torch.Tensor, margin: float, normalization: str) -> torch.Tensor:
    """The loss by explicit enumeration of the ordered pairs (the reference for the vectorised one)."""
    per_sequence, terms = [], []
    for b in range(hidden.shape[0]):
        real = [i for i in range(hidden.shape[1]) if mask[b, i]]
        pairs = [
            torch.clamp(margin - 1 + torch.cosine_similarity(hidden[b, i], hidden[b, j], dim=0), min=0)
            for i, j in itertools.permutations(real, 2)
        ]
        terms += pairs
        if pairs:
            per_sequence.append(torch.stack(pairs).mean())
    collected = terms if normalization == "pairs" else per_sequence
    return torch.stack(collected).mean()


def test_spec_hand_case_gives_one_sixth():
    # h1 = h2 = (1, 0), h3 = (0, 1): only (1,2) and (2,1) violate the margin, by 0.5 each, over 6 ordered pairs.
    hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    loss = simctg_contrastive_loss(hidden, torch.ones(1, 3), margin=0.5)
    assert loss.item() == pytest.approx(1.0 / 6.0)


def test_hand_cosine_matrix_with_partial_violations():
    # cos(h1, h2) = 0.6, cos(h1, h3) = 0, cos(h2, h3) = 0.8; margin 0.5 -> hinge max(0, s - 0.5): 0.1, 0, 0.3.
    hidden = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])
    loss = simctg_contrastive_loss(hidden, torch.ones(1, 3), margin=0.5)
    assert loss.item() == pytest.approx(2 * (0.1 + 0.0 + 0.3) / 6)


def test_zero_margin_switches_the_loss_off_and_margin_two_averages_one_plus_cosine():
    torch.manual_seed(0)
    hidden, mask = torch.randn(3, 5, 4), torch.ones(3, 5)
    assert simctg_contrastive_loss(hidden, mask, margin=0.0).item() == 0.0
    cosine = torch.nn.functional.cosine_similarity(hidden[:, :, None], hidden[:, None, :], dim=-1)
    expected = (1 + cosine)[valid_pair_mask(mask)].mean()
    assert simctg_contrastive_loss(hidden, mask, margin=2.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_padding_on_either_side_leaves_the_loss_unchanged():
    torch.manual_seed(1)
    hidden = torch.randn(1, 4, 6)
    reference = simctg_contrastive_loss(hidden, torch.ones(1, 4), margin=0.9)
    garbage = torch.randn(1, 3, 6)
    right = simctg_contrastive_loss(torch.cat([hidden, garbage], 1), torch.tensor([[1, 1, 1, 1, 0, 0, 0]]), 0.9)
    left = simctg_contrastive_loss(torch.cat([garbage, hidden], 1), torch.tensor([[0, 0, 0, 1, 1, 1, 1]]), 0.9)
    assert right.item() == pytest.approx(reference.item()) and left.item() == pytest.approx(reference.item())


def test_a_real_token_equal_to_the_pad_id_still_counts():
    # The mask, not a token id, decides: a masked-in position identical to others adds violating pairs.
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    with_third = simctg_contrastive_loss(hidden, torch.tensor([[1, 1, 1]]), margin=0.5)
    without_third = simctg_contrastive_loss(hidden, torch.tensor([[1, 1, 0]]), margin=0.5)
    assert with_third.item() == pytest.approx(2 * 0.5 / 6) and without_third.item() == 0.0


@pytest.mark.parametrize("normalization", ["pairs", "sequences"])
def test_vectorised_loss_and_gradient_equal_the_enumeration(normalization):
    torch.manual_seed(2)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])  # the last row has no pair
    loss = simctg_contrastive_loss(hidden, mask, margin=1.2, normalization=normalization)
    reference = enumerated_loss(hidden, mask, 1.2, normalization)
    (grad,) = torch.autograd.grad(loss, hidden)
    (reference_grad,) = torch.autograd.grad(reference, hidden)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad, reference_grad)
    assert grad[1, :2].abs().sum() == 0 and grad[2].abs().sum() == 0  # padding and lone tokens get no gradient


def test_pairs_and_sequences_normalisations_weight_long_sequences_differently():
    # Sequence A: 2 identical tokens (hinge 0.5 on both pairs); sequence B: 3 orthogonal tokens (no violation).
    hidden = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0, 0, 0]], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert simctg_contrastive_loss(hidden, mask, 0.5, "pairs").item() == pytest.approx(1.0 / 8)
    assert simctg_contrastive_loss(hidden, mask, 0.5, "sequences").item() == pytest.approx(0.25)


def test_one_gradient_step_lowers_a_violating_similarity():
    hidden = torch.tensor([[[1.0, 0.2], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    before = torch.cosine_similarity(hidden[0, 0], hidden[0, 1], dim=0).item()
    simctg_contrastive_loss(hidden, torch.ones(1, 3), margin=0.5).backward()
    with torch.no_grad():
        stepped = hidden - 0.1 * hidden.grad
    assert torch.cosine_similarity(stepped[0, 0], stepped[0, 1], dim=0).item() < before


def test_no_pair_gives_zero_with_a_graph():
    hidden = torch.randn(2, 3, 4, requires_grad=True)
    loss = simctg_contrastive_loss(hidden, torch.tensor([[1, 0, 0], [0, 0, 0]]), margin=0.5)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": -0.1}, "margin must be >= 0"),
        ({"normalization": "tokens"}, "normalization must be one of"),
        ({"attention_mask": torch.ones(2, 4)}, r"attention_mask \[B, L\]"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"hidden_states": torch.randn(2, 3, 4), "attention_mask": torch.ones(2, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        simctg_contrastive_loss(**arguments)


def test_half_precision_states_are_scored_in_float32():
    hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.bfloat16)
    loss = simctg_contrastive_loss(hidden, torch.ones(1, 3), margin=0.5)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(1.0 / 6.0)
