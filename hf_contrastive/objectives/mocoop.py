"""MoCoOp: mixture of soft prompts with a router, hard-prompt-guided gating and grouped text-to-text supervision.

Du, Niu and Zhao, "Mixture of Prompt Learning for Vision Language Models" (arXiv 2409.12011). The prompt learner
(:class:`hf_contrastive.models.mocoop.MoCoOpModel`) computes the tensors; this module holds the math.

Notation: B images, E experts = G template groups, C classes of the current split, C_all class names used for text
supervision (base + novel in base-to-new runs), D the joint embedding size, K = top-k (2).

.. code-block:: text

    f_b      = normalize(CLIP_img(x_b))                                   [B, D]
    T_{e,c}  = normalize(CLIP_txt(prompt_e(c)) + w)                       [E, C_all, D]
    P_{g,c}  = normalize(mean_{j in group g} normalize(h_{j,c}))          [G, C_all, D]   hard-prompt prototypes
    r_b      = W_g f_b + b_g;  I_b = topK(r_b);  a_b = softmax(r_b[I_b])  [B, E], [B, K], [B, K]
    t_{b,c}  = sum_{k in I_b} a_{b,k} T_{k,c}                             [B, C, D]  (not re-normalised)
    L_ce     = CE_b(s <f_b, t_{b,c}>, y_b),  s = exp(frozen CLIP logit_scale)
    g_{b,k}  = <f_b, P_{k, y_b}>;  q_b = softmax(g_b + 10 * onehot(topK(g_b)))
    L_gate   = mean_b CE(r_b, q_b)                                        (soft labels; q not detached by default)
    L_text   = mean_{e,c} CE_{c'}(<T_{e,c}, P_{e,c'}>, c)                 raw cosines: NO temperature
    L        = L_ce + lambda_text L_text + lambda_gate L_gate             (released configs: 5 and 1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput

GATE_SHARPENING = 10.0


def group_prototypes(hard_prompt_features: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Hard-prompt group prototypes ``P_g = normalize(mean_{j in g} normalize(h_j))``: [P, C, D] -> [G, C, D].

    ``groups`` are consecutive group sizes over the P templates (``sum(groups) == P``).
    """
    if sum(groups) != hard_prompt_features.shape[0] or min(groups) < 1:
        raise ValueError(
            f"groups {groups} must be positive sizes summing to the {hard_prompt_features.shape[0]} templates."
        )
    per_group = F.normalize(hard_prompt_features, dim=-1).split(groups, dim=0)
    return F.normalize(torch.stack([group.mean(dim=0) for group in per_group]), dim=-1)


def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Experts and mixing weights per image: ``I = topk(r)``, ``a = softmax(r[I])``; [B, E] -> ([B, K], [B, K])."""
    top_logits, indices = router_logits.topk(min(k, router_logits.shape[-1]), dim=-1)
    return indices, top_logits.softmax(dim=-1)


def mix_expert_features(expert_features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-image class features ``t_{b,c} = sum_k a_{b,k} T_{I_{b,k}, c}``: [E, C, D], [B, K], [B, K] -> [B, C, D].

    Not re-normalised (as in the released code).
    """
    return torch.einsum("bk,bkcd->bcd", weights.to(expert_features.dtype), expert_features[indices])


def gate_target(similarities: torch.Tensor, k: int, sharpening: float = GATE_SHARPENING) -> torch.Tensor:
    """Router target ``q = softmax(g + sharpening * onehot(topk(g)))``: [B, G] -> [B, G] (rows sum to 1)."""
    top = similarities.topk(min(k, similarities.shape[-1]), dim=-1).indices
    boost = torch.zeros_like(similarities).scatter(-1, top, sharpening)
    return (similarities + boost).softmax(dim=-1)


def gate_loss(
    router_logits: torch.Tensor,
    image_features: torch.Tensor,
    label_prototypes: torch.Tensor,
    k: int,
    detach_target: bool = False,
    sharpening: float = GATE_SHARPENING,
) -> torch.Tensor:
    """Hard-prompt-guided gating loss ``mean_b CE(r_b, q_b)`` with ``g_{b,g} = <f_b, P_{g, y_b}>``.

    Args:
        router_logits: r [B, G].
        image_features: normalised f [B, D].
        label_prototypes: ``P[:, y_b]`` per image, [B, G, D].
        detach_target: stop the gradient through q (the released code does not: f, hence q, gets gradients).
    """
    similarities = torch.einsum("bd,bgd->bg", image_features, label_prototypes.to(image_features.dtype))
    target = gate_target(similarities, k, sharpening)
    return F.cross_entropy(router_logits, target.detach() if detach_target else target)


def text_to_text_loss(expert_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Grouped text-to-text loss ``mean_{e,c} CE_{c'}(<T_{e,c}, P_{e,c'}>, c)`` over raw cosines (no temperature).

    ``expert_features`` T [E, C_all, D] and ``prototypes`` P [E, C_all, D], both normalised: expert e is pulled to
    its own group's prototype of the same class, against the other classes' prototypes of that group. Since the
    logits lie in [-1, 1], the loss is at least ``log(C_all) - 2`` whatever the parameters.
    """
    logits = torch.einsum("ecd,ekd->eck", expert_features, prototypes.to(expert_features.dtype))
    targets = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class MoCoOpLoss(nn.Module):
    """``L = L_ce + text_loss_weight * L_text + gate_loss_weight * L_gate`` (see the module docstring).

    Args:
        text_loss_weight: lambda_text (released configs: 5; ``t2t_10`` uses 10).
        gate_loss_weight: lambda_gate (released configs: 1).
        top_k: experts mixed per image (2); also the number of gate-target entries sharpened by +10.
        detach_gate_target: stop the gradient through q (default False, as the released code).
    """

    name = "mocoop"
    paper = "https://arxiv.org/abs/2409.12011"
    citation = """@article{du2024mocoop,
  title={Mixture of Prompt Learning for Vision Language Models},
  author={Du, Yu and Niu, Tong and Zhao, Rong},
  journal={arXiv preprint arXiv:2409.12011},
  year={2024}
}"""

    def __init__(
        self,
        text_loss_weight: float = 5.0,
        gate_loss_weight: float = 1.0,
        top_k: int = 2,
        detach_gate_target: bool = False,
    ) -> None:
        super().__init__()
        self.text_loss_weight = text_loss_weight
        self.gate_loss_weight = gate_loss_weight
        self.top_k = top_k
        self.detach_gate_target = detach_gate_target

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        router_logits: torch.Tensor,
        image_features: torch.Tensor,
        label_prototypes: torch.Tensor,
        expert_features_all: torch.Tensor,
        prototypes: torch.Tensor,
    ) -> ObjectiveOutput:
        """Args: logits [B, C] (already scaled), labels [B], router_logits [B, E], image_features [B, D],
        label_prototypes [B, E, D], expert_features_all [E, C_all, D], prototypes [E, C_all, D]."""
        loss_ce = F.cross_entropy(logits, labels)
        loss = loss_ce
        logs = {"loss_ce": loss_ce.detach()}
        if self.text_loss_weight:
            loss_text = text_to_text_loss(expert_features_all, prototypes)
            loss = loss + self.text_loss_weight * loss_text
            logs["loss_text"] = loss_text.detach()
        if self.gate_loss_weight:
            loss_gate = gate_loss(router_logits, image_features, label_prototypes, self.top_k, self.detach_gate_target)
            loss = loss + self.gate_loss_weight * loss_gate
            logs["loss_gate"] = loss_gate.detach()
        return ObjectiveOutput(loss=loss, logs=logs)

    def get_config_dict(self) -> dict:
        return {
            "text_loss_weight": self.text_loss_weight,
            "gate_loss_weight": self.gate_loss_weight,
            "top_k": self.top_k,
            "detach_gate_target": self.detach_gate_target,
        }
