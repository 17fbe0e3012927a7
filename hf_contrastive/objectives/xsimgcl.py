"""XSimGCL's objective: BPR + unsquared final-embedding norm + cross-layer InfoNCE, from one perturbed pass.

All three terms use the model's single perturbed propagation (``GraphRecOutput``: final ``E_final`` and the l*-th
layer ``E_cl``, see :class:`~hf_contrastive.models.graph_rec.XSimGCL`). For B triples (u, i⁺, i⁻):

.. math::

    L_{rec} = \\frac{1}{B} \\sum_b -\\log(10^{-5} + \\sigma(e_u \\cdot e_{i^+} - e_u \\cdot e_{i^-}))

    L_{reg} = \\lambda_{reg} (\\lVert E_{final}[u_{1..B}] \\rVert_F + \\lVert E_{final}[i^+_{1..B}] \\rVert_F) / B

    L_{cl} = \\lambda (\\mathrm{InfoNCE}(E_{final,u}[Ũ], E_{cl,u}[Ũ]) + \\mathrm{InfoNCE}(E_{final,i}[Ĩ], E_{cl,i}[Ĩ]))

    \\mathrm{InfoNCE}(A, C) = -\\frac{1}{m} \\sum_r \\log \\frac{\\exp(\\hat a_r \\cdot \\hat c_r / \\tau)}
        {\\sum_{j=1}^{m} \\exp(\\hat a_r \\cdot \\hat c_j / \\tau)}

Ũ: unique users of the batch, Ĩ: unique positive items (negatives are not contrasted); ``x̂``: L2-normalised rows;
one direction (anchors from ``E_final``, candidates from ``E_cl``); the positive is in the denominator; gradients
flow through both views. The norm is the Frobenius norm, NOT squared, over rows with repeats (SELFRec's
``l2_reg_loss`` of the batch's final user and positive-item embeddings).

Shapes: ``E_final``, ``E_cl``: [U, d] and [I, d]; logits per side [m, m] (memory O(m²), m ≤ B).
Hyperparameters (SELFRec ``conf/XSimGCL.yaml``): ``cl_weight`` λ = 0.2, ``temperature`` τ = 0.15, ``reg_weight``
1e-4. The noise ε and the layer l* are the model's (``XSimGCLConfig``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ObjectiveOutput
from .bpr import GraphRecObjective, bpr_loss

XSIMGCL_CITATION = """@article{yu2023xsimgcl,
  title = {{XSimGCL}: Towards Extremely Simple Graph Contrastive Learning for Recommendation},
  author = {Yu, Junliang and Xia, Xin and Chen, Tong and Cui, Lizhen and Hung, Nguyen Quoc Viet and Yin, Hongzhi},
  journal = {IEEE Transactions on Knowledge and Data Engineering},
  year = {2023}
}"""


def node_info_nce(
    anchors: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor, temperature: float, epsilon: float = 0.0
) -> torch.Tensor:
    """Summed one-directional InfoNCE of anchor rows [a, d] against candidate rows [m, d] (cosine / τ).

    ``positives`` [a]: the candidate row matching each anchor. ``epsilon = 0``:
    ``Σ_r -log softmax_j(â_r · ĉ_j / τ)[p_r]`` (XSimGCL); ``epsilon > 0`` (DCCF, 1e-8):
    ``Σ_r -log(exp(s_{r p_r}) / (Σ_j exp(s_rj) + ε) + ε)``. Returns a scalar (a SUM over the a anchors, so that
    shares of the anchors on different ranks add up); memory O(a · m).
    """
    logits = F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature
    rows = torch.arange(len(positives), device=logits.device)
    if epsilon == 0.0:
        return -logits.log_softmax(dim=1)[rows, positives].sum()
    exp = logits.exp()
    return -torch.log(exp[rows, positives] / (exp.sum(dim=1) + epsilon) + epsilon).sum()


class XSimGCLLoss(GraphRecObjective):
    """XSimGCL (arXiv:2209.02544): BPR + λ_reg·unsquared norm + λ·cross-layer InfoNCE (formulas in the module doc).

    Columns: ``user_id``, ``item_id`` (positive), ``neg_item_id``, each [B]. Needs a model whose output has the
    contrast views (``XSimGCL``). Hyperparameters: ``cl_weight`` (0.2), ``temperature`` (0.15), ``reg_weight`` (1e-4).
    """

    name = "xsimgcl"
    paper = "https://arxiv.org/abs/2209.02544"
    citation = XSIMGCL_CITATION
    model_types = ("xsimgcl",)

    def __init__(self, cl_weight: float = 0.2, temperature: float = 0.15, reg_weight: float = 1e-4) -> None:
        super().__init__()
        if temperature <= 0 or cl_weight < 0 or reg_weight < 0:
            raise ValueError(
                f"temperature must be > 0 and cl_weight, reg_weight >= 0; got {temperature}, {cl_weight}, {reg_weight}."
            )
        self.cl_weight, self.temperature, self.reg_weight = cl_weight, temperature, reg_weight

    def forward(self, outputs, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        rec = bpr_loss(*self.triple_scores(outputs, batch), log_epsilon=1e-5)
        users, items = self._global_batch(batch, "user_id"), self._global_batch(batch, "item_id")
        reg = (
            self.reg_weight
            * (outputs.user_embeddings[users].norm() + outputs.item_embeddings[items].norm())
            / len(users)
        )
        cl = self.cl_weight * (
            self.cross_layer_loss(outputs.user_embeddings, outputs.contrast_user_embeddings, users)
            + self.cross_layer_loss(outputs.item_embeddings, outputs.contrast_item_embeddings, items)
        )
        return ObjectiveOutput(
            rec + reg + cl, {"loss_rec": rec.detach(), "loss_reg": reg.detach(), "loss_cl": cl.detach()}
        )

    def cross_layer_loss(self, final: torch.Tensor, contrast: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``InfoNCE(final[unique ids], contrast[unique ids])``: this rank's share of the anchors, scaled by W."""
        nodes = torch.unique(ids)
        share, world = self._anchor_share(len(nodes))
        positives = torch.arange(len(nodes), device=ids.device)[share]
        summed = node_info_nce(final[nodes[share]], contrast[nodes], positives, self.temperature)
        return world * summed / len(nodes)

    def get_config_dict(self) -> dict:
        return {"cl_weight": self.cl_weight, "temperature": self.temperature, "reg_weight": self.reg_weight}
