"""DCCF's objective: BPR + ego-embedding and prototype regularisers + the per-layer four-view contrast.

All terms use the model's single propagation (:class:`~hf_contrastive.models.graph_rec.DCCF`: final ``E*``, ego
``E⁽⁰⁾``, prototypes ``C_u, C_i`` [d, K] and per layer l the views ``Z, R, Hβ, Hγ`` [n, d]). For B triples:

.. math::

    L_{bpr} = \\frac{1}{B} \\sum_b \\mathrm{softplus}(ŷ_{u i^-} - ŷ_{u i^+})

    L_{emb} = \\lambda_{emb} (\\lVert E^{(0)}_u[u] \\rVert_F^2 + \\lVert E^{(0)}_i[i^+] \\rVert_F^2
        + \\lVert E^{(0)}_i[i^-] \\rVert_F^2)        \\quad\\text{(a SUM over the batch, not a mean)}

    L_{cen} = \\lambda_{cen} (\\lVert C_u \\rVert_F^2 + \\lVert C_i \\rVert_F^2)

    L_{cl} = \\lambda_{cl} \\sum_{l=0}^{L-1} \\sum_{V \\in \\{R, Hβ, Hγ\\}}
        [\\mathrm{InfoNCE}(Z_u^{(l)}[Ũ], V_u^{(l)}[Ũ]) + \\mathrm{InfoNCE}(Z_i^{(l)}[Ĩ], V_i^{(l)}[Ĩ])]

    \\mathrm{InfoNCE}(A, C) = \\frac{1}{m} \\sum_r -\\log\\left(
        \\frac{\\exp(\\hat a_r \\cdot \\hat c_r / \\tau)}{\\sum_j \\exp(\\hat a_r \\cdot \\hat c_j / \\tau) + 10^{-8}}
        + 10^{-8}\\right)

Ũ: unique users of the batch, Ĩ: unique positive items; ``x̂``: L2-normalised rows; anchored on the graph view Z;
6 InfoNCE terms per layer. Shapes: logits [m, m] per term (memory O(m²), m ≤ B; 6L of them per step).
Hyperparameters (HKUDS/DCCF ``parser.py``): ``temperature`` τ = 1.0, ``emb_reg`` 2.5e-5, ``cen_reg`` 5e-3,
``ssl_reg`` 0.1.
"""

from __future__ import annotations

import torch

from .base import ObjectiveOutput
from .bpr import GraphRecObjective, bpr_loss
from .xsimgcl import node_info_nce

DCCF_CITATION = """@inproceedings{ren2023dccf,
  title = {Disentangled Contrastive Collaborative Filtering},
  author = {Ren, Xubin and Xia, Lianghao and Zhao, Jiashu and Yin, Dawei and Huang, Chao},
  booktitle = {SIGIR},
  year = {2023}
}"""

INFO_NCE_EPSILON = 1e-8  # HKUDS/DCCF adds it inside and outside the log


class DCCFLoss(GraphRecObjective):
    """DCCF (arXiv:2305.02759): BPR + L_emb + L_cen + per-layer contrast of Z against R, Hβ, Hγ (module doc).

    Columns: ``user_id``, ``item_id`` (positive), ``neg_item_id``, each [B]. Needs a ``DCCF`` model's output.
    Hyperparameters: ``temperature`` (1.0), ``emb_reg`` (2.5e-5), ``cen_reg`` (5e-3), ``ssl_reg`` (0.1).
    """

    name = "dccf"
    paper = "https://arxiv.org/abs/2305.02759"
    citation = DCCF_CITATION
    model_types = ("dccf",)

    def __init__(
        self, temperature: float = 1.0, emb_reg: float = 2.5e-5, cen_reg: float = 5e-3, ssl_reg: float = 0.1
    ) -> None:
        super().__init__()
        if temperature <= 0 or min(emb_reg, cen_reg, ssl_reg) < 0:
            raise ValueError(
                f"temperature must be > 0 and emb_reg, cen_reg, ssl_reg >= 0; got {temperature}, {emb_reg}, "
                f"{cen_reg}, {ssl_reg}."
            )
        self.temperature, self.emb_reg, self.cen_reg, self.ssl_reg = temperature, emb_reg, cen_reg, ssl_reg

    def forward(self, outputs, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        bpr = bpr_loss(*self.triple_scores(outputs, batch))
        users, items = self._global_batch(batch, "user_id"), self._global_batch(batch, "item_id")
        negatives = self._global_batch(batch, "neg_item_id")
        ego = (
            outputs.ego_user_embeddings[users],
            outputs.ego_item_embeddings[items],
            outputs.ego_item_embeddings[negatives],
        )
        emb = self.emb_reg * sum(e.pow(2).sum() for e in ego)
        cen = self.cen_reg * (outputs.user_intents.pow(2).sum() + outputs.item_intents.pow(2).sum())
        cl = self.ssl_reg * self.contrast_loss(outputs.layer_views, users, items + outputs.user_embeddings.shape[0])
        logs = {"loss_bpr": bpr.detach(), "loss_emb": emb.detach(), "loss_cen": cen.detach(), "loss_cl": cl.detach()}
        return ObjectiveOutput(bpr + emb + cen + cl, logs)

    def contrast_loss(self, layer_views, users: torch.Tensor, item_nodes: torch.Tensor) -> torch.Tensor:
        """``Σ_l Σ_V InfoNCE(Z[nodes], V[nodes])`` over unique users and unique positive-item nodes (this rank's
        share of the anchors, scaled by W; see ``objectives.bpr``)."""
        total = 0.0
        for ids in (users, item_nodes):
            nodes = torch.unique(ids)
            share, world = self._anchor_share(len(nodes))
            positives = torch.arange(len(nodes), device=nodes.device)[share]
            for graph, *others in layer_views:
                for view in others:
                    summed = node_info_nce(
                        graph[nodes[share]], view[nodes], positives, self.temperature, INFO_NCE_EPSILON
                    )
                    total = total + world * summed / len(nodes)
        return total

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "emb_reg": self.emb_reg,
            "cen_reg": self.cen_reg,
            "ssl_reg": self.ssl_reg,
        }
