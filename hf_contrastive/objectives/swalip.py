"""SwALIP: SwAV-style swapped prediction between image and text local views (Fini et al. 2023).

The SwAV add-on of "Improved Baselines for Vision-Language Pre-training", trained next to the CLIP-rocket loss as
``L = L_clip_rocket + 0.2 * L_swa`` (see :func:`hf_contrastive.objectives.composite.clip_rocket_with`; it needs the
CLIP-rocket label smoothing at 0). The other modality's gathered batch serves as the prototypes. On the normalised
local projections ``h`` (``{image,text}_view_a``, a = 1..A):

.. math::

    S_I^{ab} = h_I^a (H_T^b)^\\top, \\qquad S_T^{ab} = h_T^a (H_I^b)^\\top \\qquad ([B, W B] \\text{ cosines})

    Q = \\mathrm{SinkhornKnopp}(\\mathrm{sg}(S); \\epsilon = 0.05, 3 \\text{ iterations})  \\quad (\\text{rows sum to } 1)

    L_{swa} = \\frac{1}{A^2} \\sum_{a,b} \\tfrac{1}{2}\\Big[H(Q_I^{a'b'}, \\mathrm{softmax}(s_h S_I^{ab}))
              + H(Q_T^{a'b'}, \\mathrm{softmax}(s_h S_T^{ab}))\\Big]

with ``H(q, p) = -mean_rows sum_j q_j log p_j`` and the swap ``a' = (a + 1) mod A`` (the reference's ``1 - a`` at
its A = 2; any A >= 2 works here). ``s_h`` is the local scale: pass CL2L's ``local_log_scale`` parameter to share it
as the reference does, or let SwALIP own one (initial ``temperature``).

Sinkhorn-Knopp treats the ``W B`` gathered candidates as prototypes and the ``B`` local rows as samples; the sums
over samples are all-reduced (no gradient: targets are constants), so the targets match the single-process ones.
Memory: ``O(A^2 B W B)``.

Columns: ``image_view_k`` and ``text_view_k`` (k = 1..A), each ``[B, D]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .base import ContrastiveObjective, ObjectiveOutput
from .clip_rocket import CLIP_ROCKET_CITATION, gather_each_once, view_columns


@torch.no_grad()
def sinkhorn_knopp(similarities: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft assignments [B, K] of the local samples to K prototypes; each row sums to 1 (SwAV's Sinkhorn-Knopp).

    similarities: [B, K] cosines of this rank's samples with the (gathered) prototypes. ``Q = exp(S / epsilon)``,
    then alternately every prototype's total is set to 1/K and every sample's to 1/(W B) (sums over samples are
    all-reduced across ranks); the result is scaled so that each sample's assignment sums to 1.
    """
    # Cosines are <= 1: shifting by 1 / epsilon keeps exp() finite and cancels in the normalisations.
    q = torch.exp((similarities.float() - 1.0) / epsilon).T  # [K, B]
    num_prototypes = q.shape[0]
    num_samples = q.shape[1] * distributed.world_size()
    q /= distributed.all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= distributed.all_reduce_sum(q.sum(dim=1, keepdim=True)) * num_prototypes
        q /= q.sum(dim=0, keepdim=True) * num_samples
    return (q * num_samples).T.to(similarities.dtype)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-mean_rows sum_j targets_ij log softmax(logits)_ij``; logits, targets: [B, K]."""
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class SwALIPLoss(ContrastiveObjective):
    """SwALIP: swapped prediction of Sinkhorn-Knopp assignments between the A x A image/text local view pairs.

    Args:
        num_augs: local views per modality ``A`` (>= 2; the reference uses 2).
        epsilon: Sinkhorn entropy regularisation (0.05).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        temperature: initial local temperature when SwALIP owns its scale (0.1, CL2L's initial value).
        learnable_temperature: learn the owned scale.
        max_scale: clamp on ``s_h`` (100).
        local_log_scale: a parameter to share (``CL2LLoss.local_log_scale``, the reference's ``h_logit_scale``).
        image_column / text_column: global column names; views are ``{column}_view_{k}``.
        gather_across_devices: prototypes from every rank.
    """

    name = "swalip"
    paper = "2305.08675"
    citation = CLIP_ROCKET_CITATION
    supports_gradient_cache = True

    def __init__(
        self,
        num_augs: int = 2,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        temperature: float = 0.1,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        local_log_scale: nn.Parameter | None = None,
        image_column: str = "image",
        text_column: str = "text",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if num_augs < 2:
            raise ValueError(f"SwALIP swaps targets between view pairs and needs num_augs >= 2, got {num_augs}.")
        self.num_augs = num_augs
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.temperature = temperature
        self.max_scale = max_scale
        self.shares_scale = local_log_scale is not None
        if local_log_scale is not None:
            self.local_log_scale = local_log_scale
        elif learnable_temperature:
            self.local_log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        else:
            self.register_buffer("local_log_scale", torch.tensor(math.log(1.0 / temperature)))
        self.image_views = view_columns(image_column, num_augs)
        self.text_views = view_columns(text_column, num_augs)
        self.required_columns = (*self.image_views, *self.text_views)
        self.gather_across_devices = gather_across_devices

    def _swapped_cross_entropies(self, queries: list[torch.Tensor], candidates: list[torch.Tensor], gather) -> list:
        """``H(Q^{a'b'}, softmax(s_h S^{ab}))`` for every (a, b), S^{ab} = queries[a] @ gather(candidates[b]).T."""
        similarities = [[query @ gather(candidate).T for candidate in candidates] for query in queries]
        targets = [[sinkhorn_knopp(s, self.epsilon, self.sinkhorn_iterations) for s in row] for row in similarities]
        scale = self.local_log_scale.exp().clamp(max=self.max_scale)
        swap = [(index + 1) % self.num_augs for index in range(self.num_augs)]
        return [
            soft_cross_entropy(scale * similarities[a][b], targets[swap[a]][swap[b]])
            for a in range(self.num_augs)
            for b in range(self.num_augs)
        ]

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """``L_swa`` over the local rows: the mean of the image and text swapped cross-entropies over A x A pairs."""
        self.check_columns(tuple(embeddings))
        images = [F.normalize(embeddings[name], dim=-1) for name in self.image_views]
        texts = [F.normalize(embeddings[name], dim=-1) for name in self.text_views]
        gather = gather_each_once(images + texts, self._gather)
        image_terms = self._swapped_cross_entropies(images, texts, gather)
        text_terms = self._swapped_cross_entropies(texts, images, gather)
        loss = (torch.stack(image_terms).mean() + torch.stack(text_terms).mean()) / 2
        return ObjectiveOutput(loss=loss)

    def get_config_dict(self) -> dict:
        return {
            "num_augs": self.num_augs,
            "epsilon": self.epsilon,
            "sinkhorn_iterations": self.sinkhorn_iterations,
            "temperature": self.temperature,
            "shares_local_scale": self.shares_scale,
        }
