"""SASRec for next-item recommendation, CL4SRec's sequence augmentations and MCLRec's learnable model augmenters.

``SASRec`` (Kang & McAuley 2018, as RecBole's ``SASRec`` / MCLRec's backbone) embeds a right-padded item sequence
``item_seq`` [B, L] (ids ``1..n``, ``0`` = padding) with item + learned position embeddings, LayerNorm, dropout and
``num_layers`` post-LN self-attention blocks that attend causally and never to id-0 keys. The sequence
representation is the hidden state at the last real position, ``h = H[b, len_b - 1]`` [B, d], and the next-item scores
are ``h M^T`` [B, n + 1] over the tied item embeddings ``M`` (column 0, the padding id, is set to the dtype's minimum
so it is never recommended; RecBole leaves it as a learnable logit, which CE pushes down anyway).

MCLRec (Qin et al., SIGIR 2023) adds two separate augmenters ``w_phi1``, ``w_phi2`` (``config.model_augmenters``):
``Linear(d, 32) -> GELU -> Linear(32, 16) -> GELU -> Linear(16, d) -> L2-normalise`` (widths ``augmenter_widths``;
the paper hard-codes them for d = 64). They are submodules, so they are saved and reloaded with the encoder.

The item-id map is part of the config: ``item_ids[i - 1]`` is the external id of internal item ``i`` (None: the ids
are already ``1..n``), so :meth:`SASRec.recommend` works on a reloaded model without the training data.

Augmentations (CL4SRec, Xie et al. 2022; the ratios of MCLRec's data loader), per sequence with a ``torch.Generator``:
:func:`crop_sequence` (a contiguous window of ``floor(keep * len)`` items), :func:`mask_sequence` (``floor(ratio *
len)`` positions set to id 0, the padding id: masked items become missing positions) and :func:`reorder_sequence`
(a window of ``floor(ratio * len)`` items shuffled). :func:`augment_pair` applies two *different* operators, one per
view; sequences of length 1 are returned unchanged for both views.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..data.recsys import IdMap

PADDING_ID = 0


class SASRecConfig(PretrainedConfig):
    """Sizes of SASRec (MCLRec's defaults) and the item-id map.

    Args:
        num_items: items ``n``; internal ids are ``1..n`` and the embedding table has ``n + 1`` rows (row 0 = padding).
        hidden_size / num_layers / num_heads / intermediate_size: ``d`` = 64, 2 blocks, 2 heads, FFN width 256.
        hidden_dropout / attention_dropout: 0.5 / 0.5 (MCLRec on Amazon; 0.1 on ML-1M).
        max_seq_len: the last ``max_seq_len`` items of a history are encoded (50).
        layer_norm_eps / initializer_range: 1e-12 and N(0, 0.02) (RecBole).
        item_ids: external id of each internal item, ``item_ids[i - 1]`` for item ``i`` (None: ids are ``1..n``).
        model_augmenters: add MCLRec's two learnable augmenters.
        augmenter_widths: hidden widths of an augmenter (MCLRec: 32, 16).
    """

    model_type = "sasrec"

    def __init__(
        self,
        num_items: int = 1,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 256,
        hidden_dropout: float = 0.5,
        attention_dropout: float = 0.5,
        max_seq_len: int = 50,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        item_ids: list | None = None,
        model_augmenters: bool = False,
        augmenter_widths: Sequence[int] = (32, 16),
        **kwargs,
    ) -> None:
        if num_items < 1 or max_seq_len < 1 or num_layers < 1:
            raise ValueError(
                f"num_items, max_seq_len and num_layers must be >= 1, got {num_items}, {max_seq_len}, {num_layers}."
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        if item_ids is not None:
            if len(item_ids) != num_items:
                raise ValueError(f"item_ids has {len(item_ids)} entries but num_items is {num_items}.")
            if len(set(item_ids)) != len(item_ids):
                raise ValueError("item_ids must be distinct (one external id per internal item).")
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.max_seq_len = max_seq_len
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.item_ids = list(item_ids) if item_ids is not None else None
        self.model_augmenters = model_augmenters
        self.augmenter_widths = list(augmenter_widths)
        super().__init__(**kwargs)


@dataclass
class SeqRecOutput(ModelOutput):
    """One forward: the CE loss (with ``labels``), next-item ``logits`` [B, n + 1], ``sequence_embedding`` h [B, d],
    the data-augmented views ``view_embeddings`` (h1, h2) [B, d] and the model views ``model_view_embeddings``
    (z1, z2) [B, d] (unit norm) when the augmented sequences are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    sequence_embedding: torch.Tensor | None = None
    view_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
    model_view_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None


class SelfAttentionBlock(nn.Module):
    """RecBole's post-LN transformer layer: ``x = LN(x + drop(attn(x)))``, ``x = LN(x + drop(FFN_gelu(x)))``."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.attention_output = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        """``hidden`` [B, L, d], ``attention_bias`` [B, 1, L, L] (0 or the dtype's minimum) -> [B, L, d]."""
        batch, length, width = hidden.shape
        heads = self.qkv(hidden).view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            *heads, attn_mask=attention_bias, dropout_p=self.attention_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        hidden = self.attention_norm(hidden + self.dropout(self.attention_output(attended)))
        return self.feed_forward_norm(hidden + self.dropout(self.feed_forward(hidden)))


def model_augmenter(hidden_size: int, widths: Sequence[int]) -> nn.Sequential:
    """MCLRec's augmenter MLP ``d -> widths... -> d`` with GELU between layers (the output is L2-normalised later)."""
    sizes = [hidden_size, *widths, hidden_size]
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if index < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class SASRec(PreTrainedModel):
    """Causal self-attention next-item recommender (SASRec), optionally with MCLRec's augmenters; see the module doc.

    ``forward(item_seq [B, L], item_seq_len [B], labels [B] = None, aug_seq_1, aug_len_1, aug_seq_2, aug_len_2)``
    encodes the sequences and the two augmented views in one merged pass (so one DDP forward covers them all).
    """

    config_class = SASRecConfig
    base_model_prefix = "sasrec"
    main_input_name = "item_seq"

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=PADDING_ID)
        self.position_embeddings = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config) for _ in range(config.num_layers))
        if config.model_augmenters:
            self.augmenter_1 = model_augmenter(config.hidden_size, config.augmenter_widths)
            self.augmenter_2 = model_augmenter(config.hidden_size, config.augmenter_widths)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole: Linear / Embedding weights ~ N(0, initializer_range), biases 0, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    # ----------------------------------------------------------------------------------------------- parameters
    def augmenter_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``augmenter_1`` and ``augmenter_2`` (MCLRec's phi); empty without augmenters."""
        if not self.config.model_augmenters:
            return []
        return [*self.augmenter_1.parameters(), *self.augmenter_2.parameters()]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the augmenters' (MCLRec's theta)."""
        augmenters = {id(p) for p in self.augmenter_parameters()}
        return [p for p in self.parameters() if id(p) not in augmenters]

    # ----------------------------------------------------------------------------------------------- encoding
    def check_sequences(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> None:
        """Raise a ValueError naming the tensor when ids or lengths are outside what the model can encode."""
        if item_seq.ndim != 2 or item_seq_len.shape != item_seq.shape[:1]:
            raise ValueError(
                f"item_seq must be [B, L] and item_seq_len [B], got {tuple(item_seq.shape)} and "
                f"{tuple(item_seq_len.shape)}."
            )
        if item_seq.shape[1] > self.config.max_seq_len:
            raise ValueError(f"item_seq has {item_seq.shape[1]} positions; max_seq_len is {self.config.max_seq_len}.")
        if item_seq.numel() and (item_seq.min() < 0 or item_seq.max() > self.config.num_items):
            raise ValueError(f"item_seq holds ids outside 0..{self.config.num_items} (0 = padding).")
        if (item_seq_len < 1).any() or (item_seq_len > item_seq.shape[1]).any():
            raise ValueError(
                f"item_seq_len must be in 1..{item_seq.shape[1]}: an empty history has no next item to predict from."
            )

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Sequence representation ``h`` [B, d]: the last block's hidden state at position ``item_seq_len - 1``."""
        self.check_sequences(item_seq, item_seq_len)
        hidden = self.hidden_states(item_seq)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), item_seq_len - 1]

    def hidden_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, d]; position t attends to positions <= t whose item id is not 0."""
        length = item_seq.shape[1]
        positions = torch.arange(length, device=item_seq.device)
        hidden = self.item_embeddings(item_seq) + self.position_embeddings(positions)[None]
        hidden = self.embedding_dropout(self.embedding_norm(hidden))
        allowed = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
        allowed = allowed[None, None] & (item_seq != PADDING_ID)[:, None, None, :]
        # An additive minimum rather than a boolean mask: a query with no allowed key (a leading masked item) gets
        # uniform attention instead of NaN, as in RecBole's -10000 bias.
        bias = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        for block in self.blocks:
            hidden = block(hidden, bias)
        return hidden

    def item_scores(self, sequence_embedding: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``h M^T`` [B, n + 1]; column 0 (padding) is the dtype's minimum."""
        scores = sequence_embedding @ self.item_embeddings.weight.T
        return scores.index_fill(1, torch.tensor([PADDING_ID], device=scores.device), torch.finfo(scores.dtype).min)

    def model_views(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MCLRec's model-augmented views ``z1 = normalise(w_phi1(h1))``, ``z2 = normalise(w_phi2(h2))`` [B, d]."""
        if not self.config.model_augmenters:
            raise ValueError("This SASRec has no model augmenters: set SASRecConfig(model_augmenters=True) (MCLRec).")
        return F.normalize(self.augmenter_1(first), dim=-1), F.normalize(self.augmenter_2(second), dim=-1)

    def forward(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        labels: torch.Tensor | None = None,
        aug_seq_1: torch.Tensor | None = None,
        aug_len_1: torch.Tensor | None = None,
        aug_seq_2: torch.Tensor | None = None,
        aug_len_2: torch.Tensor | None = None,
    ) -> SeqRecOutput:
        """Scores of the next item, CE against ``labels`` [B] (ids 1..n), and the augmented views when given."""
        views = [(item_seq, item_seq_len)]
        if aug_seq_1 is not None:
            if aug_seq_2 is None or aug_len_1 is None or aug_len_2 is None:
                raise ValueError("Give both augmented views: aug_seq_1, aug_len_1, aug_seq_2 and aug_len_2.")
            views += [(aug_seq_1, aug_len_1), (aug_seq_2, aug_len_2)]
        width = max(seq.shape[1] for seq, _ in views)
        merged = torch.cat([F.pad(seq, (0, width - seq.shape[1]), value=PADDING_ID) for seq, _ in views])
        embeddings = self.encode(merged, torch.cat([length for _, length in views])).chunk(len(views))
        logits = self.item_scores(embeddings[0])
        loss = self.next_item_loss(logits, labels) if labels is not None else None
        view_embeddings = model_view_embeddings = None
        if len(views) == 3:
            view_embeddings = (embeddings[1], embeddings[2])
            if self.config.model_augmenters:
                model_view_embeddings = self.model_views(*view_embeddings)
        return SeqRecOutput(loss, logits, embeddings[0], view_embeddings, model_view_embeddings)

    def next_item_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy ``CE(h M^T, g)`` over every item; ``labels`` [B] must be ids 1..n."""
        if labels.numel() and (labels.min() < 1 or labels.max() > self.config.num_items):
            raise ValueError(f"labels (next items) must be item ids in 1..{self.config.num_items}.")
        return F.cross_entropy(logits.float(), labels)

    # ----------------------------------------------------------------------------------------------- inference
    def item_map(self) -> IdMap:
        """External item id <-> internal id (1..n) from ``config.item_ids`` (identity when it is None)."""
        return IdMap(self.config.item_ids or range(1, self.config.num_items + 1), offset=1, kind="item")

    def internal_ids(self, items: Sequence[Hashable]) -> list[int]:
        """Internal ids (1..n) of external item ids; a ValueError names the ids the model does not know."""
        item_map = self.item_map()
        unknown = [item for item in items if item not in item_map]
        if unknown:
            raise ValueError(f"Unknown item id(s) {unknown[:10]}: the model knows {self.config.num_items} items.")
        return item_map.encode(items).tolist()

    @torch.no_grad()
    def recommend(self, history: Sequence[Hashable], k: int = 10, exclude_history: bool = True) -> list:
        """The ``k`` best next items (external ids, best first) after a chronological ``history`` of external ids.

        Only the last ``max_seq_len`` items are encoded. ``exclude_history`` leaves out items already in the history.
        Raises a ValueError for an empty history or an item id the model does not know.
        """
        if len(history) == 0:
            raise ValueError("recommend needs a non-empty history: SASRec predicts from the items seen so far.")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        internal = self.internal_ids(list(history))[-self.config.max_seq_len :]
        was_training = self.training
        self.eval()
        try:
            item_seq = torch.tensor([internal], device=self.device)
            scores = self.item_scores(self.encode(item_seq, torch.tensor([len(internal)], device=self.device)))[0]
        finally:
            self.train(was_training)
        if exclude_history:
            scores[torch.tensor(internal, device=scores.device)] = torch.finfo(scores.dtype).min
        candidates = self.config.num_items - (len(set(internal)) if exclude_history else 0)
        return self.item_map().decode(scores.topk(min(k, candidates)).indices)


# --------------------------------------------------------------------------------------------------- augmentations
def _random_index(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def crop_sequence(sequence: Sequence[int], keep: float, generator: torch.Generator) -> list[int]:
    """A contiguous window of ``max(1, floor(keep * len))`` items at a uniform start (CL4SRec crop)."""
    size = max(1, int(keep * len(sequence)))
    start = _random_index(len(sequence) - size + 1, generator)
    return list(sequence[start : start + size])


def mask_sequence(sequence: Sequence[int], ratio: float, generator: torch.Generator) -> list[int]:
    """``floor(ratio * len)`` distinct random positions set to id 0 (the padding id, as in MCLRec); length kept."""
    masked = list(sequence)
    for position in torch.randperm(len(sequence), generator=generator)[: int(ratio * len(sequence))].tolist():
        masked[position] = PADDING_ID
    return masked


def reorder_sequence(sequence: Sequence[int], ratio: float, generator: torch.Generator) -> list[int]:
    """Shuffle a contiguous window of ``floor(ratio * len)`` items at a uniform start (CL4SRec reorder)."""
    size = int(ratio * len(sequence))
    start = _random_index(len(sequence) - size + 1, generator)
    window = [sequence[start + i] for i in torch.randperm(size, generator=generator).tolist()]
    return [*sequence[:start], *window, *sequence[start + size :]]


@dataclass(frozen=True)
class SequenceAugmentation:
    """CL4SRec / MCLRec augmentation ratios: crop keeps 50%, mask zeroes 50%, reorder shuffles 80% (MCLRec)."""

    crop_keep: float = 0.5
    mask_ratio: float = 0.5
    reorder_ratio: float = 0.8

    def __post_init__(self) -> None:
        for name in ("crop_keep", "mask_ratio", "reorder_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    def apply(self, operator: str, sequence: Sequence[int], generator: torch.Generator) -> list[int]:
        """One operator (``"crop"``, ``"mask"`` or ``"reorder"``) on one sequence."""
        if operator == "crop":
            return crop_sequence(sequence, self.crop_keep, generator)
        if operator == "mask":
            return mask_sequence(sequence, self.mask_ratio, generator)
        if operator == "reorder":
            return reorder_sequence(sequence, self.reorder_ratio, generator)
        raise ValueError(f"Unknown augmentation {operator!r}; use 'crop', 'mask' or 'reorder'.")

    def augment_pair(self, sequence: Sequence[int], generator: torch.Generator) -> tuple[list[int], list[int]]:
        """Two views by two *different* random operators; a sequence of length 1 is kept for both views."""
        if len(sequence) < 2:
            return list(sequence), list(sequence)
        first, second = (AUGMENTATIONS[i] for i in torch.randperm(len(AUGMENTATIONS), generator=generator)[:2])
        return self.apply(first, sequence, generator), self.apply(second, sequence, generator)


AUGMENTATIONS = ("crop", "mask", "reorder")
