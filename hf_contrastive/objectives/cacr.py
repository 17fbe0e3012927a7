"""CACR: contrastive attraction and contrastive repulsion (Zheng et al., TMLR 2023, arXiv 2105.03746).

Each row ``i`` of the batch has ``K >= 2`` views ``z_i^k`` (columns ``view_columns``, L2-normalised here, as the
paper's encoder ends in an L2Norm layer). Two costs, picked by ``cost``:

``cost="euclidean"`` (the paper's small-scale code, ``losses/__init__.py``; d and c are squared distances):

.. math::

    a_{i,k,k'} = \\lVert z_i^k - z_i^{k'} \\rVert^2, \\qquad
    w^+_{i,k,k'} = \\operatorname{softmax}_{k' \\ne k}(t_+ a_{i,k,k'}), \\qquad
    L_{CA} = \\frac{1}{K} \\sum_k \\frac{1}{N} \\sum_i \\sum_{k' \\ne k} w^+_{i,k,k'}\\, \\alpha\\, a_{i,k,k'}

    r_{i,j} = \\lVert z_i^k - z_j^{k'} \\rVert^2, \\qquad
    w^-_{i,j} = \\operatorname{softmax}_{j \\ne i}(-t_- r_{i,j}), \\qquad
    L_{CR} = \\operatorname{mean}_{k < k'} \\frac{1}{N} \\sum_i \\sum_{j \\ne i} w^-_{i,j} (-\\beta\\, r_{i,j})

and ``L = L_CA + L_CR``: attraction weights favour the *farthest* positive views, repulsion weights the *closest*
negatives (other rows' view ``k'``; same-view negatives are not used, as in the paper). ``t_+ = 0`` / ``t_- = 0``
give uniform weights (the paper's ``without_w1`` / ``without_w2`` ablations): ``L_CA`` is then ``alpha`` times the
alignment loss of Wang & Isola, ``L_CR`` a uniform spread term. ``debias_prior = tau_plus > 0`` is the paper's
debiased repulsion ``mean_i [(-tau_plus ||z_i^k - z_i^k'||^2 + sum_j w^- (-beta r)) / (1 - tau_plus)]``.

``cost="cosine"`` (the ImageNet code's default "RBF" form, ``moco/builder.py``, keys from the same encoder instead of
a momentum encoder): for every key view ``u`` and every other view ``v`` as query,

.. math::

    p_{v,i} = \\operatorname{softmax}_{v \\ne u}(\\lVert z_i^v - z_i^u \\rVert^2 / T), \\qquad
    L = \\operatorname{mean}_u \\sum_{v \\ne u} \\frac{1}{N} \\sum_i p_{v,i}\\,
        2T\\, \\mathrm{CE}\\big(z_i^v Z_u^\\top / T,\\ i\\big)

The cross-entropy over cosine logits is attraction to the positive plus ``2T log sum exp`` repulsion, whose gradient
weights negatives by ``softmax(-||z - z_j||^2 / 2T)``: close negatives most (CR); ``p`` reweights the positive views
toward the distant ones (CA). With ``K = 2`` (``p = 1``) this is exactly ``2T`` times the symmetric InfoNCE.
The ImageNet code's other cost ("Euclid", batch *summed*) is not implemented separately: it is the euclidean form
above with ``d = ||.||^2 / 2``; this file averages over the batch so the loss does not grow with it.

``detach_weights``: compute ``w+``, ``w-`` and ``p`` without gradient. The small-scale code lets the gradient flow
through the weights (``False``, the default); the ImageNet code computes them under ``no_grad`` (``True``).

Distributed and cached: anchors are the local rows, negatives / keys the gathered rows of the other view (each
column gathered separately, labels offset by ``rank * B``), so 2 processes x B have the gradient of 1 process x 2B;
the attraction term is per row. Every term is a function of the embedding matrix, so it runs under the gradient
cache. Memory: ``O(B * W * B)`` per view pair.

Shapes: every view ``[B, D]``; ``r`` and the logits ``[B, W*B]``.
Columns: ``view_columns`` (default ``x_view_1``, ``x_view_2``: views of one ``x`` column made by the collator).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput

CACR_CITATION = """@article{zheng2023cacr,
  title = {Contrastive Attraction and Contrastive Repulsion for Representation Learning},
  author = {Zheng, Huangjie and Chen, Xu and Yao, Jiangchao and Yang, Hongxia and Li, Chunyuan and Zhang, Ya and
            Zhang, Hao and Tsang, Ivor and Zhou, Jingren and Zhou, Mingyuan},
  journal = {Transactions on Machine Learning Research},
  year = {2023}
}"""

COSTS = ("euclidean", "cosine")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` [B, N] for a [B, D] and b [N, D], in O(B * N) memory (no [B, N, D] difference)."""
    return (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None] - 2 * a @ b.T).clamp_min(0)


class CACRLoss(ContrastiveObjective):
    """CACR over ``K >= 2`` views per row: weighted attraction to far views, weighted repulsion from close negatives.

    Args:
        view_columns: the K embedding columns holding views of the same rows.
        cost: ``"euclidean"`` (small-scale form, explicit CA + CR) or ``"cosine"`` (the ImageNet cross-entropy form).
        alpha, beta: weights of the attraction and repulsion costs (euclidean; paper: 1, 1).
        tau_pos, tau_neg: ``t+`` and ``t-`` of the attraction and repulsion weights (euclidean; CIFAR-10: 1.0, 0.9;
            CIFAR-100 / STL-10: ``t- = 2``). 0 gives uniform weights.
        temperature: ``T`` of the cosine form (ImageNet ResNet-50: 1.0, ViT: 0.2).
        detach_weights: no gradient through the weights (ImageNet code) instead of through them (small-scale code).
        debias_prior: ``tau_plus`` of the debiased repulsion (euclidean; paper: 0.1), 0 = off.
        gather_across_devices: take negatives / keys from every rank.
    """

    name = "cacr"
    paper = "2105.03746"
    citation = CACR_CITATION

    def __init__(
        self,
        view_columns: tuple[str, ...] | list[str] = ("x_view_1", "x_view_2"),
        cost: str = "euclidean",
        alpha: float = 1.0,
        beta: float = 1.0,
        tau_pos: float = 1.0,
        tau_neg: float = 0.9,
        temperature: float = 1.0,
        detach_weights: bool = False,
        debias_prior: float = 0.0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if len(view_columns) < 2:
            raise ValueError(f"CACR needs at least 2 view columns, got {list(view_columns)}.")
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {cost!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if tau_pos < 0 or tau_neg < 0:
            raise ValueError(f"tau_pos and tau_neg must be >= 0, got {tau_pos} and {tau_neg}.")
        if not 0.0 <= debias_prior < 1.0:
            raise ValueError(f"debias_prior must be in [0, 1), got {debias_prior}.")
        if debias_prior and cost != "euclidean":
            raise ValueError("debias_prior applies to the euclidean cost only (the paper's debiased repulsion).")
        self.view_columns = tuple(view_columns)
        self.required_columns = self.view_columns
        self.cost, self.alpha, self.beta = cost, alpha, beta
        self.tau_pos, self.tau_neg, self.temperature = tau_pos, tau_neg, temperature
        self.detach_weights, self.debias_prior = detach_weights, debias_prior
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local CACR loss of the views ``embeddings[view]`` [B, D]."""
        self.check_columns(tuple(embeddings))
        views = [F.normalize(embeddings[column], dim=-1) for column in self.view_columns]
        if self.cost == "cosine":
            loss = self.cosine_loss(views)
            return ObjectiveOutput(loss=loss, logs={"temperature": torch.tensor(self.temperature)})
        attraction, repulsion = self.attraction(views), self.repulsion(views)
        logs = {"attraction": attraction.detach(), "repulsion": repulsion.detach()}
        return ObjectiveOutput(loss=attraction + repulsion, logs=logs)

    def _weights(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the last dimension, without gradient when ``detach_weights``."""
        return (logits.detach() if self.detach_weights else logits).softmax(dim=-1)

    def attraction(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``L_CA``: per row, the ``t+``-softmax-weighted squared distances of each view to its other views."""
        num_views, local_batch = len(views), views[0].shape[0]
        stacked = torch.stack(views)  # [K, B, D]
        distances = (stacked[:, None] - stacked[None]).pow(2).sum(-1)  # [K, K, B]: a[k, k', i]
        others = ~torch.eye(num_views, dtype=torch.bool, device=stacked.device)
        costs = distances[others].view(num_views, num_views - 1, local_batch).transpose(1, 2)  # [K, B, K-1]
        weights = self._weights(self.tau_pos * costs)
        return (weights * self.alpha * costs).sum(-1).mean()

    def repulsion(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``L_CR``: per view pair ``k < k'``, local view-``k`` rows against the gathered view-``k'`` rows."""
        local_batch = views[0].shape[0]
        rows = torch.arange(local_batch, device=views[0].device)
        own = rows + self._local_offset(local_batch)
        pair_losses = []
        for k, k_other in itertools.combinations(range(len(views)), 2):
            anchors, candidates = views[k], self._gather(views[k_other])
            if candidates.shape[0] < 2:
                raise ValueError("CACR repulsion needs at least 2 rows in the global batch (one negative per row).")
            squared = squared_distances(anchors, candidates)  # [B, N]
            not_own = torch.ones_like(squared, dtype=torch.bool)
            not_own[rows, own] = False
            negatives = squared[not_own].view(local_batch, -1)  # [B, N-1]: j != i
            weights = self._weights(-self.tau_neg * negatives)
            repelled = (weights * -self.beta * negatives).sum(-1)
            if self.debias_prior:
                positive = squared[rows, own]
                repelled = (-self.debias_prior * positive + repelled) / (1 - self.debias_prior)
            pair_losses.append(repelled.mean())
        return torch.stack(pair_losses).mean()

    def cosine_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The ImageNet form: per key view, ``p``-weighted ``2T``-scaled cross-entropies of the other views."""
        local_batch = views[0].shape[0]
        offset = self._local_offset(local_batch)
        labels = torch.arange(offset, offset + local_batch, device=views[0].device)
        key_losses = []
        for u, keys in enumerate(views):
            queries = [view for v, view in enumerate(views) if v != u]
            gathered = self._gather(keys)
            if gathered.shape[0] < 2:
                raise ValueError("CACR needs at least 2 rows in the global batch (one negative per row).")
            distances = torch.stack([(query - keys).pow(2).sum(-1) for query in queries], dim=-1)  # [B, K-1]
            weights = self._weights(distances / self.temperature)
            cross_entropy = torch.stack(
                [
                    F.cross_entropy(query @ gathered.T / self.temperature, labels, reduction="none")
                    for query in queries
                ],
                dim=-1,
            )  # [B, K-1]
            key_losses.append((weights * cross_entropy).sum(-1).mean() * 2 * self.temperature)
        return torch.stack(key_losses).mean()

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Every other row's view in the gathered batch."""
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "view_columns": list(self.view_columns),
            "cost": self.cost,
            "alpha": self.alpha,
            "beta": self.beta,
            "tau_pos": self.tau_pos,
            "tau_neg": self.tau_neg,
            "temperature": self.temperature,
            "detach_weights": self.detach_weights,
            "debias_prior": self.debias_prior,
            "gather_across_devices": self.gather_across_devices,
        }
