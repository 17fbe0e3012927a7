"""Padding-free ("packed") encoder forward: run the backbone on the real tokens only, all texts in one row.

Use it through ``ContrastiveEncoder.forward(input_ids, attention_mask, unpad=True)``, which calls
:func:`enable_unpadding` (idempotent) and returns the same [N, D] embeddings as the padded forward. A contrastive
batch is often ~40% padding; packing skips that work.

How: :func:`pack` turns a padded batch (``input_ids`` / ``attention_mask`` [N, L], left or right padding) into one
row of the T = sum(lengths) real tokens:

* ``input_ids`` / ``position_ids`` [1, T], positions restarting at 0 for every text (RoBERTa-style backbones add
  their ``padding_idx + 1`` offset in :func:`packed_forward`), ``token_type_ids`` [1, T] zeros where taken;
* ``cu_seq_lens`` int32 [N + 1] (text i is tokens ``cu_seq_lens[i]:cu_seq_lens[i + 1]``) and ``max_length``, passed
  to every attention layer as transformers' flash-style kwargs ``cu_seq_lens_q/k``, ``max_length_q/k``;
* ``segment_ids`` [T] and ``lengths`` [N] for :func:`packed_pool` (mean / cls / last_token -> [N, H]).

The attention function registered as ``"hf_contrastive_varlen"`` keeps each text's tokens to themselves:

* CUDA, fp16/bf16 (e.g. under bf16 autocast), head_dim a multiple of 8 and <= 256, compute capability >= 8.0:
  ``torch.nn.attention.varlen.varlen_attn`` (flash attention over the packed row, O(T) memory);
* otherwise (CPU, fp32, older GPUs): a reference that runs SDPA once per group of equal-length texts;
* no ``cu_seq_lens_q`` kwarg (padded calls: ``encode()``, evaluation, ``unpad=False``): transformers' own SDPA
  attention with the usual padding mask, so the same model serves both paths.

Dropout caveat: ``varlen_attn`` has no attention-probability dropout, so the packed path applies none, on every
device (the CPU reference matches it); hidden-state dropout (embeddings, attention output, feed-forward) still
applies. For dropout-view objectives (unsupervised SimCSE) the packed views are thus slightly less noisy than
padded ones. With dropout off, packed and padded embeddings and gradients agree to float tolerance.

Speed: measured once on an H200 (BERT-base config, bf16, lengths 16-128), the same real tokens with no padding ran
1.69x faster than sentence-transformers' padded step with 44% less memory (``benchmarks/embeddings.py``); not
re-measured for this module, whose CUDA branch is the prototype's ``varlen_attn`` call.

Supported backbones (:data:`SUPPORTED_MODEL_TYPES`): bidirectional encoders whose attention layers receive the
forward's kwargs and whose embeddings take explicit ``position_ids``. Others (ModernBERT's local attention, causal
decoders such as Qwen2, MPNet's relative bias) are refused by :func:`enable_unpadding` with a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import logging

logger = logging.get_logger(__name__)

VARLEN_ATTENTION = "hf_contrastive_varlen"

# model_type -> (first position id is padding_idx + 1 as in RoBERTa, forward takes token_type_ids)
SUPPORTED_MODEL_TYPES = {
    "bert": (False, True),
    "electra": (False, True),
    "nomic_bert": (False, True),
    "distilbert": (False, False),
    "roberta": (True, True),
    "xlm-roberta": (True, True),
    "camembert": (True, True),
}


@dataclass
class PackedBatch:
    """The real tokens of N texts end to end in one row of T tokens (see the module docstring for the layout)."""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T], 0..length-1 per text
    cu_seq_lens: torch.Tensor  # int32 [N + 1]
    max_length: int
    lengths: torch.Tensor  # long [N]
    segment_ids: torch.Tensor  # long [T], the text each token belongs to
    token_mask: torch.Tensor  # bool [N, L], where the packed tokens came from (packs other per-token inputs)

    def attention_kwargs(self) -> dict:
        """The kwargs every attention layer needs to keep texts apart (transformers' flash-attention names)."""
        bounds, longest = self.cu_seq_lens, self.max_length
        return {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedBatch:
    """Pack the real tokens of a padded batch (``input_ids`` / ``attention_mask`` [N, L], any padding side)."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    shortest, longest = torch.stack([lengths.min(), lengths.max()]).tolist()
    if shortest == 0:
        raise ValueError("Cannot pack a text with no tokens under attention_mask (an all-zero row).")
    positions = mask.cumsum(dim=1) - 1
    return PackedBatch(
        input_ids=input_ids[mask][None],
        position_ids=positions[mask][None],
        cu_seq_lens=F.pad(lengths.cumsum(dim=0), (1, 0)).to(torch.int32),
        max_length=longest,
        lengths=lengths,
        segment_ids=torch.repeat_interleave(torch.arange(len(lengths), device=mask.device), lengths),
        token_mask=mask,
    )


def packed_pool(hidden: torch.Tensor, packed: PackedBatch, mode: str) -> torch.Tensor:
    """Pool packed token states [1, T, H] into [N, H]: ``"mean"`` (summed in fp32), ``"cls"`` or ``"last_token"``."""
    states = hidden[0]
    if mode == "cls":
        return states[packed.cu_seq_lens[:-1].long()]
    if mode == "last_token":
        return states[packed.cu_seq_lens[1:].long() - 1]
    sums = states.new_zeros(len(packed.lengths), states.shape[-1], dtype=torch.float32)
    sums.index_add_(0, packed.segment_ids, states.float())
    return (sums / packed.lengths[:, None]).to(states.dtype)


def enable_unpadding(model: PreTrainedModel) -> None:
    """Switch a ``ContrastiveEncoder``'s backbone to the packed-capable attention; idempotent, not saved.

    Padded calls keep working: they go to transformers' SDPA attention (also when the backbone used eager before).
    The name lives only in the in-memory config (transformers does not serialise ``_attn_implementation``), so a
    saved model reloads anywhere, with SDPA.
    """
    model_type = model.backbone.config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"Unpadding does not support backbone model_type {model_type!r}: it needs a bidirectional encoder whose "
            f"attention receives cu_seq_lens kwargs and whose embeddings take position_ids. Supported: "
            f"{sorted(SUPPORTED_MODEL_TYPES)}. Train this backbone with padding (unpad=False)."
        )
    if model.backbone.config._attn_implementation != VARLEN_ATTENTION:
        model.set_attn_implementation(VARLEN_ATTENTION)


def packed_forward(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, **backbone_kwargs
) -> tuple[torch.Tensor, PackedBatch]:
    """Run ``model.backbone`` on the packed batch; returns (hidden [1, T, H], :class:`PackedBatch`).

    A ``token_type_ids`` [N, L] kwarg is packed like the tokens; without one the backbone gets explicit zeros [1, T]
    rather than a default derived from its ``max_position_embeddings``-long buffer.
    """
    enable_unpadding(model)
    packed = pack(input_ids, attention_mask)
    padding_offset, takes_token_types = SUPPORTED_MODEL_TYPES[model.backbone.config.model_type]
    position_ids = packed.position_ids
    if padding_offset:
        position_ids = position_ids + model.backbone.config.pad_token_id + 1
    token_type_ids = backbone_kwargs.pop("token_type_ids", None)
    if takes_token_types:
        backbone_kwargs["token_type_ids"] = (
            torch.zeros_like(packed.input_ids) if token_type_ids is None else token_type_ids[packed.token_mask][None]
        )
    hidden = model.backbone(
        input_ids=packed.input_ids, position_ids=position_ids, **backbone_kwargs, **packed.attention_kwargs()
    ).last_hidden_state
    return hidden, packed


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention of the packed row, each text to itself: ``query`` etc. [1, heads, T, d] -> ([1, T, heads, d], None).

    Without ``cu_seq_lens_q`` (a padded call) this is transformers' SDPA attention, dropout included. With it, no
    attention-probability dropout is applied (``varlen_attn`` has none; the reference matches it).
    """
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if dropout > 0:
        logger.warning_once("Packed (unpad) forward: attention-probability dropout is not applied.")
    head_dim = query.shape[-1]
    query, key, value = (tensor[0].transpose(0, 1) for tensor in (query, key, value))  # [T, heads, d]
    if _flash_varlen_applies(query):
        from torch.nn.attention.varlen import varlen_attn

        if scaling is not None and scaling != head_dim**-0.5:  # varlen_attn's default scale is 1/sqrt(d)
            query = query * (scaling * head_dim**0.5)
        longest = kwargs["max_length_q"]
        output = varlen_attn(query, key, value, bounds, bounds, longest, longest)
    else:
        output = grouped_sdpa(query, key, value, bounds, scaling)
    return output.unsqueeze(0), None


def grouped_sdpa(query, key, value, cu_seq_lens: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """Reference varlen attention: SDPA once per group of equal-length texts; [T, heads, d] -> [T, heads, d]."""
    starts, lengths = cu_seq_lens[:-1].long(), cu_seq_lens.diff().long()
    output = torch.empty_like(query)
    for length in lengths.unique().tolist():
        index = starts[lengths == length, None] + torch.arange(length, device=query.device)  # [n, length]
        q, k, v = (tensor[index].transpose(1, 2) for tensor in (query, key, value))  # [n, heads, length, d]
        output[index] = F.scaled_dot_product_attention(q, k, v, scale=scaling).transpose(1, 2)
    return output


def _flash_varlen_applies(query: torch.Tensor) -> bool:
    head_dim = query.shape[-1]
    return (
        query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and head_dim % 8 == 0
        and head_dim <= 256
        and _flash_capable(query.device.index)
    )


@cache
def _flash_capable(device_index: int | None) -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch >= 2.10)
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device_index) >= (8, 0)


AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)
