"""NT-Xent (SimCLR) between two views of one modality: the SimCLR-style add-on of SLIP / the improved-baselines study.

For local rows ``u_i``, ``v_i`` (two augmented views of row ``i`` on rank ``r``, normalised) and the gathered views
``U, V`` [W*B, D]:

.. math::

    \\ell(u_i) = -\\log \\frac{\\exp(u_i \\cdot v_i / \\tau)}
        {\\sum_{j} \\exp(u_i \\cdot V_j / \\tau) + \\sum_{j \\ne rB+i} \\exp(u_i \\cdot U_j / \\tau)},
    \\qquad L = \\frac{1}{2B} \\sum_i \\big(\\ell(u_i) + \\ell(v_i)\\big)

(``ell(v_i)`` swaps the roles of the views): every other row of *both* views is a negative (2WB - 2 per anchor),
the anchor itself is excluded. As an add-on it composes with ``clip`` / ``clip_rocket`` through
:class:`~hf_contrastive.objectives.composite.CompositeObjective` (SLIP adds it with weight 1 on two image views).

Shapes: view columns ``[B, D]``; logits ``[B, 2*W*B]``; labels ``r*B + arange(B)``. Memory ``O(B * W*B)``.
Gathers with gradient (exact local loss, see :mod:`hf_contrastive.distributed`); runs under the gradient cache.

Columns: two view columns (default ``image_view_1``, ``image_view_2``). Hyperparameters: ``temperature`` (SimCLR /
SLIP: 0.1), ``learnable_temperature``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity

SIMCLR_CITATION = """@inproceedings{chen2020simclr,
  title = {A Simple Framework for Contrastive Learning of Visual Representations},
  author = {Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2020}
}"""


class NTXentLoss(ScaledSimilarity, ContrastiveObjective):
    """SimCLR's NT-Xent over two views (both views' other rows are negatives), symmetric, local against gathered.

    Args:
        view_columns: the two embedding names holding the views.
        temperature: ``tau`` (0.1 as in SimCLR's and SLIP's image-image term).
        learnable_temperature: learn ``log(1 / tau)`` (parameter ``log_scale``).
        max_scale: clamp on the learned ``1 / tau``.
        gather_across_devices: negatives from every rank.
    """

    name = "simclr"
    paper = "2002.05709"
    citation = SIMCLR_CITATION

    def __init__(
        self,
        view_columns: tuple[str, str] | list[str] = ("image_view_1", "image_view_2"),
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if len(view_columns) != 2:
            raise ValueError(f"NTXentLoss needs exactly two view columns, got {list(view_columns)}.")
        self.init_similarity(temperature, learnable_temperature, max_scale, "cosine")
        self.view_columns = tuple(view_columns)
        self.required_columns = self.view_columns
        self.gather_across_devices = gather_across_devices

    def _anchor_loss(self, anchors: torch.Tensor, partners_all: torch.Tensor, anchors_all: torch.Tensor, offset: int):
        """Cross-entropy of local ``anchors`` [B, D] over ``[partners_all | anchors_all]`` with the anchor masked."""
        batch = anchors.shape[0]
        labels = torch.arange(offset, offset + batch, device=anchors.device)
        logits = self.scale() * anchors @ torch.cat([partners_all, anchors_all]).T
        own = labels + partners_all.shape[0]  # the anchor's own row among the same-view candidates
        logits = logits.masked_fill(F.one_hot(own, logits.shape[1]).bool(), torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits.float() if logits.element_size() < 4 else logits, labels)
        return loss, (logits.argmax(dim=1) == labels).float().mean()

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """``(ell(u) + ell(v)) / 2`` averaged over the local rows; logs accuracy and temperature."""
        self.check_columns(tuple(embeddings))
        first, second = (self._prepare(embeddings[name]) for name in self.view_columns)
        first_all, second_all = self._gather(first), self._gather(second)
        if first_all.shape[0] < 2:
            raise ValueError("NTXentLoss needs at least 2 rows per (gathered) batch: raise the batch size.")
        offset = self._local_offset(first.shape[0])
        loss_first, hits = self._anchor_loss(first, second_all, first_all, offset)
        loss_second, _ = self._anchor_loss(second, first_all, second_all, offset)
        logs = {"accuracy": hits.detach(), "temperature": torch.as_tensor(1.0 / self.scale()).float().detach()}
        return ObjectiveOutput(loss=(loss_first + loss_second) / 2, logs=logs)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Every other row of both views: ``2 * W*B - 2``."""
        return 2 * gathered_rows - 2

    def get_config_dict(self) -> dict:
        return {
            "view_columns": list(self.view_columns),
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
        }
