"""InfoNCE with in-batch and hard negatives (SimCSE, DPR, MultipleNegativesRankingLoss).

For local anchor ``a_i`` (``i < B`` on rank ``r``) and the gathered candidates
``C = [P_all | N1_all | ... | Nk_all]`` (``M = W * B * (1 + k)`` rows, layout in :mod:`hf_contrastive.distributed`):

.. math::

    \\ell_i = -\\log \\frac{\\exp(s(a_i, p_i) / \\tau)}{\\sum_{j=1}^{M} m_{ij} \\exp(s(a_i, c_j) / \\tau)},
    \\qquad L = \\frac{1}{B} \\sum_i \\ell_i

with ``s`` the cosine similarity (or dot product), ``tau`` the temperature and ``m_ij = 0`` for false negatives:
candidates whose *input* equals the anchor's or its positive's input (compared by the hash of the raw text, since
identical texts get different embeddings under dropout; ST #2756). With ``symmetric=True`` the positive-to-anchor
term (local positives against gathered anchors, no hard negatives) is added and the two are averaged.

Shapes: anchor / positive / negative_j ``[B, D]``; logits ``[B, M]``; labels ``[B]`` = ``r * B + arange(B)``.
Memory: ``O(B * M)`` for the logits on each rank.

Columns: ``anchor``, ``positive``, optional ``negative_1 .. negative_k`` (``text`` alone for unsupervised SimCSE,
which the collator turns into ``anchor`` and ``positive`` views of the same sentence).

Hyperparameters: ``temperature`` (0.05 as in SimCSE), ``learnable_temperature`` (CLIP-style log-scale parameter,
clamped to ``max_scale``), ``similarity`` ("cosine" or "dot"), ``symmetric``, ``mask_false_negatives``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity

SIMCSE_CITATION = """@inproceedings{gao2021simcse,
  title = {{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
  author = {Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
  booktitle = {Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2021}
}"""


def negative_columns(column_names: tuple[str, ...]) -> list[str]:
    """The hard-negative roles of a batch in their collated order (``negative`` or ``negative_1..k``)."""
    return [name for name in column_names if name.startswith("negative")]


def false_negative_mask(
    anchor_hashes: torch.Tensor, positive_hashes: torch.Tensor, candidate_hashes: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Boolean [B, M]: True where candidate ``j`` repeats anchor ``i``'s or its positive's input, except the label.

    anchor_hashes, positive_hashes: [B]; candidate_hashes: [M]; labels: [B] (index of each anchor's positive).
    """
    same_input = (candidate_hashes[None, :] == anchor_hashes[:, None]) | (
        candidate_hashes[None, :] == positive_hashes[:, None]
    )
    same_input[torch.arange(len(labels), device=labels.device), labels] = False
    return same_input


class InfoNCE(ScaledSimilarity, ContrastiveObjective):
    """InfoNCE over in-batch (all ranks) and hard negatives; the SimCSE / MNRL objective.

    Args:
        temperature: softmax temperature ``tau`` (SimCSE: 0.05).
        learnable_temperature: learn ``log(1 / tau)`` as a parameter, initialised from ``temperature``.
        max_scale: upper clamp on the learned ``1 / tau`` (CLIP clamps at 100).
        similarity: ``"cosine"`` (normalise, then dot) or ``"dot"``.
        symmetric: also score positives against all anchors and average the two directions.
        mask_false_negatives: drop candidates whose input text equals the anchor's or its positive's.
        gather_across_devices: take negatives from every rank (exact gradient, see ``distributed``).
    """

    name = "info_nce"
    paper = "2104.08821"
    citation = SIMCSE_CITATION
    required_columns = ("anchor", "positive")
    optional_column_prefix = "negative"

    def __init__(
        self,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        similarity: str = "cosine",
        symmetric: bool = False,
        mask_false_negatives: bool = True,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        self.init_similarity(temperature, learnable_temperature, max_scale, similarity)
        self.symmetric = symmetric
        self.mask_false_negatives = mask_false_negatives
        self.gather_across_devices = gather_across_devices

    def _direction_loss(
        self,
        queries: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of local ``queries`` [B, D] against ``candidates`` [M, D]; returns (loss, top-1 hits)."""
        logits = (queries @ candidates.T) * self.scale()
        if mask is not None:
            logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
        # Half-precision logits are upcast for the log-sum-exp; float64 stays float64 (gradient checks).
        loss = F.cross_entropy(logits.float() if logits.element_size() < 4 else logits, labels)
        hits = (logits.argmax(dim=1) == labels).float().mean()
        return loss, hits

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local InfoNCE loss; ``batch["input_hashes"]`` [C, B] aligned with ``batch["column_names"]``."""
        column_names = tuple(batch["column_names"])
        self.check_columns(column_names)
        anchors = self._prepare(embeddings["anchor"])
        positives = self._prepare(embeddings["positive"])
        negatives = [self._prepare(embeddings[name]) for name in negative_columns(column_names)]
        local_batch = anchors.shape[0]

        # Each column is gathered separately: [P_all | N1_all | ... | Nk_all] (see distributed.py).
        candidates = torch.cat([self._gather(positives), *(self._gather(n) for n in negatives)])
        offset = self._local_offset(local_batch)
        labels = torch.arange(offset, offset + local_batch, device=anchors.device)
        if candidates.shape[0] < 2:
            raise ValueError(
                "InfoNCE needs at least one negative per anchor, but the global batch has one anchor and no "
                "negative column: raise per_device_train_batch_size or add a negative column."
            )

        mask = self._mask(batch, column_names, labels) if self.mask_false_negatives else None
        loss, hits = self._direction_loss(anchors, candidates, labels, mask)
        logs = {"accuracy": hits.detach()}
        if self.symmetric:
            reverse_mask = self._mask(batch, column_names, labels, reverse=True) if self.mask_false_negatives else None
            reverse_loss, _ = self._direction_loss(positives, self._gather(anchors), labels, reverse_mask)
            loss = (loss + reverse_loss) / 2
        effective = candidates.shape[0] - 1 - (mask.sum(dim=1).float().mean() if mask is not None else 0.0)
        logs["effective_negatives"] = torch.as_tensor(effective, dtype=torch.float32).detach()
        logs["temperature"] = torch.as_tensor(1.0 / self.scale(), dtype=torch.float32).detach()
        return ObjectiveOutput(loss=loss, logs=logs)

    def _mask(
        self, batch: dict, column_names: tuple[str, ...], labels: torch.Tensor, reverse: bool = False
    ) -> torch.Tensor:
        """False-negative mask of the anchor->candidates direction, or of positive->anchors when ``reverse``."""
        hashes = batch["input_hashes"].to(labels.device)
        by_role = dict(zip(column_names, hashes))
        if reverse:
            return false_negative_mask(
                by_role["positive"], by_role["anchor"], self._gather_no_grad(by_role["anchor"]), labels
            )
        candidate_roles = ["positive", *negative_columns(column_names)]
        candidate_hashes = torch.cat([self._gather_no_grad(by_role[role]) for role in candidate_roles])
        return false_negative_mask(by_role["anchor"], by_role["positive"], candidate_hashes, labels)

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "similarity": self.similarity,
            "symmetric": self.symmetric,
            "mask_false_negatives": self.mask_false_negatives,
            "gather_across_devices": self.gather_across_devices,
        }
