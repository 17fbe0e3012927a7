"""SimCTG: the token-level contrastive loss with margin that makes a causal LM's token representations isotropic.

SimCTG (Su et al., NeurIPS 2022, arXiv:2202.06417) adds to the language-modelling loss a term that pushes apart
the last-layer hidden states of distinct tokens of the same sequence, so that contrastive search (arXiv:2210.14140,
:mod:`hf_contrastive.generation`) can tell a repetition from a new token by cosine similarity.

For hidden states ``h`` [B, L, H] (the last layer, after the final norm: what the LM head reads) and a validity
mask ``m`` [B, L] (the attention mask: 1 on real tokens, 0 on padding), with ``s_ij = cos(h_i, h_j)`` within a
sequence and margin ``rho``:

.. math::

    \\ell_{b,i,j} = \\max\\big(0,\\; \\rho - s_{b,ii} + s_{b,ij}\\big) = \\max\\big(0,\\; \\rho - 1 + s_{b,ij}\\big),
    \\qquad M_{b,i,j} = m_{b,i}\\, m_{b,j}\\, [i \\neq j]

    L_{CL} = \\frac{\\sum_{b,i,j} M_{b,i,j}\\, \\ell_{b,i,j}}{\\sum_{b,i,j} M_{b,i,j}}
    \\quad (\\text{normalization}=\\text{"pairs"}, \\text{the official code})

``normalization="sequences"`` is the paper's form instead: each sequence's mean over its ``|x|(|x|-1)`` ordered
pairs, then the mean over sequences (the official code's batch-wide average gives long sequences quadratically more
weight; keep ``"pairs"`` to reproduce the published numbers). The trainer adds it to the MLE loss:
``L = L_MLE + w * L_CL`` with ``w = 1`` in the paper.

Differences from the official code, on purpose: validity comes from the attention mask, not ``input_ids !=
pad_token_id``, so a real end-of-text token inside a sequence counts even when it doubles as the pad token (GPT-2),
and padding may be on either side (the official mask assumes right padding).

Limiting cases: ``rho = 0`` gives ``L_CL = 0`` for any ``h`` (``s <= 1``); ``rho = 2`` gives the mean of
``1 + s_ij`` over the valid pairs. No temperature, no stop-gradient: gradients flow through both ``h_i`` and ``h_j``.

Memory: ``O(B * L^2)`` for the cosine matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "simctg"
PAPER = "2202.06417"
CONTRASTIVE_SEARCH_PAPER = "2210.14140"
NORMALIZATIONS = ("pairs", "sequences")

CITATION = """@inproceedings{su2022simctg,
  title = {A Contrastive Framework for Neural Text Generation},
  author = {Su, Yixuan and Lan, Tian and Wang, Yan and Yogatama, Dani and Kong, Lingpeng and Collier, Nigel},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2022}
}"""

CONTRASTIVE_SEARCH_CITATION = """@article{su2023contrastive,
  title = {Contrastive Search Is What You Need For Neural Text Generation},
  author = {Su, Yixuan and Collier, Nigel},
  journal = {Transactions on Machine Learning Research (TMLR)},
  year = {2023}
}"""


def valid_pair_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean [B, L, L]: True where tokens ``i != j`` of the same row are both real (attention mask 1)."""
    valid = attention_mask.bool()
    pairs = valid[:, :, None] & valid[:, None, :]
    return pairs & ~torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)


def simctg_contrastive_loss(
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    margin: float = 0.5,
    normalization: str = "pairs",
) -> torch.Tensor:
    """Token-level contrastive loss with margin over the valid token pairs of each sequence (formula: module doc).

    Args:
        hidden_states: [B, L, H] last-layer hidden states (any dtype; the cosines are computed in float32 or higher).
        attention_mask: [B, L], 1 on real tokens (an end-of-text token included), 0 on padding (either side).
        margin: ``rho`` >= 0 (0.5 in the paper; 0 switches the term off).
        normalization: ``"pairs"`` (mean over all valid pairs of the batch, the official code) or ``"sequences"``
            (mean over each sequence's pairs, then over the sequences that have at least one pair: the paper).

    Returns:
        A scalar; 0 (with a gradient graph) when no row has two real tokens.
    """
    if hidden_states.ndim != 3 or attention_mask.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"Expected hidden_states [B, L, H] and attention_mask [B, L], got {tuple(hidden_states.shape)} and "
            f"{tuple(attention_mask.shape)}."
        )
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
    # Half-precision cosines are too coarse for a margin of a few hundredths: upcast, keep float64 as is.
    hidden = hidden_states if hidden_states.element_size() >= 4 else hidden_states.float()
    normalized = F.normalize(hidden, dim=-1)
    cosine = normalized @ normalized.transpose(1, 2)  # [B, L, L]
    hinge = (margin - 1.0 + cosine).clamp(min=0.0)
    pairs = valid_pair_mask(attention_mask).to(hinge.dtype)
    masked = hinge * pairs
    if normalization == "pairs":
        return masked.sum() / pairs.sum().clamp(min=1.0)
    per_sequence_pairs = pairs.sum(dim=(1, 2))
    has_pairs = per_sequence_pairs > 0
    per_sequence = masked.sum(dim=(1, 2)) / per_sequence_pairs.clamp(min=1.0)
    return (per_sequence * has_pairs).sum() / has_pairs.sum().clamp(min=1)
