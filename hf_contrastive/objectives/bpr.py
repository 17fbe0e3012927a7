"""BPR for graph recommenders (LightGCN), and the base every graph-CF objective shares.

A graph-CF objective receives ONE propagation of the model (:class:`~hf_contrastive.models.graph_rec.GraphRecOutput`:
final user / item embeddings [U, d] / [I, d], ego embeddings and contrast views) and the batch of B triples
``{"user_id", "item_id", "neg_item_id"}`` [B] (contiguous indices, as ``TripleSampler`` draws them), and computes
every loss term of the step from that output.

BPR over the triples ``(u, i⁺, i⁻)`` with ``ŷ_ui = e_u · e_i`` (final embeddings):

.. math::

    L_{bpr} = \\frac{1}{B} \\sum_b -\\log(\\epsilon + \\sigma(ŷ_{u i^+} - ŷ_{u i^-}))

``log_epsilon = 0`` is ``softplus(ŷ⁻ - ŷ⁺)`` (LightGCN, DCCF); SELFRec (XSimGCL) adds ``1e-5`` inside the log.

LightGCN's regulariser (He et al. 2020, official code) is on the EGO embeddings of the batch rows, squared:
``L_reg = λ · (‖E⁰_u[u]‖² + ‖E⁰_i[i⁺]‖² + ‖E⁰_i[i⁻]‖²) / (2B)``.

Distributed training (the trainer splits the triples over ranks; the propagation is replicated, so every rank holds
identical full embedding tables): per-row means (BPR, LightGCN's regulariser) are local, and DDP's average over
ranks gives the global mean. A term that does not split into per-row means (XSimGCL's unsquared norm, the
contrast over the batch's *unique* nodes) is computed on the batch ids of every rank (``_global_batch``: an
all-gather of integers, no gradient): a replicated term on every rank, or (the contrast) this rank's share of the
anchors scaled by W, so that DDP's average equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed
from .base import ContrastiveObjective, ObjectiveOutput

BATCH_COLUMNS = ("user_id", "item_id", "neg_item_id")

LIGHTGCN_CITATION = """@inproceedings{he2020lightgcn,
  title = {{LightGCN}: Simplifying and Powering Graph Convolution Network for Recommendation},
  author = {He, Xiangnan and Deng, Kuan and Wang, Xiang and Li, Yan and Zhang, Yongdong and Wang, Meng},
  booktitle = {SIGIR},
  year = {2020}
}"""


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor, log_epsilon: float = 0.0) -> torch.Tensor:
    """Mean ``-log(ε + σ(ŷ⁺ - ŷ⁻))`` over [B] score pairs (``ε = 0``: the stable ``softplus(ŷ⁻ - ŷ⁺)``)."""
    if log_epsilon == 0.0:
        return F.softplus(negative_scores - positive_scores).mean()
    return -torch.log(log_epsilon + torch.sigmoid(positive_scores - negative_scores)).mean()


class GraphRecObjective(ContrastiveObjective):
    """Base of the graph-CF objectives: batch checks, triple scores and the global batch ids (see module doc)."""

    required_columns = BATCH_COLUMNS
    model_types: tuple[str, ...] = ("lightgcn", "xsimgcl", "dccf")  # the models whose output it reads

    def forward(self, outputs, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def triple_scores(self, outputs, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ŷ_{u i⁺}`` and ``ŷ_{u i⁻}`` [B] of the local triples from the final embeddings."""
        users = outputs.user_embeddings[batch["user_id"]]
        positive = (users * outputs.item_embeddings[batch["item_id"]]).sum(-1)
        negative = (users * outputs.item_embeddings[batch["neg_item_id"]]).sum(-1)
        return positive, negative

    def _global_batch(self, batch: dict[str, torch.Tensor], column: str) -> torch.Tensor:
        """The ids of ``column`` of every rank's triples [W·B] (this rank's [B] when not distributed)."""
        return self._gather_no_grad(batch[column])

    def _anchor_share(self, count: int) -> tuple[slice, int]:
        """This rank's contiguous share of ``count`` anchors and the factor W that undoes DDP's averaging."""
        if not (self.gather_across_devices and distributed.is_distributed()):
            return slice(0, count), 1
        world, rank = distributed.world_size(), distributed.rank()
        bounds = [count * r // world for r in range(world + 1)]
        return slice(bounds[rank], bounds[rank + 1]), world


class BPRLoss(GraphRecObjective):
    """LightGCN's objective: BPR on the final embeddings plus the squared ego-embedding regulariser.

    ``L = mean_b softplus(ŷ_{u i⁻} - ŷ_{u i⁺}) + reg_weight · (‖E⁰_u[u]‖² + ‖E⁰_i[i⁺]‖² + ‖E⁰_i[i⁻]‖²) / (2B)``.

    Columns: ``user_id``, ``item_id`` (positive), ``neg_item_id``, each [B]. Hyperparameter: ``reg_weight``
    (LightGCN: 1e-4).
    """

    name = "bpr"
    paper = "https://arxiv.org/abs/2002.02126"
    citation = LIGHTGCN_CITATION

    def __init__(self, reg_weight: float = 1e-4) -> None:
        super().__init__()
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}.")
        self.reg_weight = reg_weight

    def forward(self, outputs, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        rec = bpr_loss(*self.triple_scores(outputs, batch))
        ego = (
            outputs.ego_user_embeddings[batch["user_id"]],
            outputs.ego_item_embeddings[batch["item_id"]],
            outputs.ego_item_embeddings[batch["neg_item_id"]],
        )
        reg = self.reg_weight * sum(e.pow(2).sum() for e in ego) / (2 * len(batch["user_id"]))
        return ObjectiveOutput(rec + reg, {"loss_rec": rec.detach(), "loss_reg": reg.detach()})

    def get_config_dict(self) -> dict:
        return {"reg_weight": self.reg_weight}
