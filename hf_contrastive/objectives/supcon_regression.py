"""Supervised contrastive regression: SupCon over two views with exact-label positives and label-distance weights.

The plain baseline that SupReMix (:mod:`hf_contrastive.objectives.supremix`) improves on, and the code it builds on.
Each row has a continuous target ``y`` and two views (``x_view_1``, ``x_view_2``); the ``N = W * B`` rows of all
ranks give ``2N`` candidates ``F = [view_1 of all ranks | view_2 of all ranks]`` with targets ``t = [y; y]``
(layout of :mod:`hf_contrastive.distributed`, each column gathered separately). For every local anchor view ``a``
(the ``2B`` views of this rank) and candidate ``c != a``, with ``s_ac = f_a . f_c / tau`` on L2-normalised
embeddings:

.. math::

    Z_a = \\sum_{c \\ne a} w(|t_a - t_c|)\\, e^{s_{ac}}, \\qquad
    \\ell_a = -\\frac{1}{|P(a)|} \\sum_{p \\in P(a)} \\big(s_{ap} - \\log Z_a\\big), \\qquad
    L = \\frac{1}{2B} \\sum_{a \\in \\text{local}} \\ell_a

with positives ``P(a) = {c != a : t_c = t_a}`` (exact equality, which always holds for the anchor's other view; bin
a continuous target to get more) and the distance-magnifying weight ``w`` (``distance``): ``"L1_inv"``
``|d| + 1`` (SupReMix's default), ``"L2_inv"`` ``d^2 + 1``, ``"L1"`` ``1 / (|d| + 1)``, ``"L2"`` ``1 / (d^2 + 1)``,
or ``None`` (``w = 1``: SupCon's ``L_out``, Khosla et al. 2020). Every choice gives weight 1 at ``d = 0``, so the
weights only reshape the negatives. Without weights and with one positive per anchor this is SimCLR's NT-Xent.

Exact under DDP: each rank scores its 2B local anchor views against the gathered candidates, every rank has the same
number of anchors, so the mean of the local means is the global mean (see ``distributed``). It runs under the
gradient cache (the loss is a function of the embedding matrix only).

Shapes: views ``[B, D]``, ``batch["labels"]`` ``[B]`` (float); logits ``[2B, 2N]``. Memory ``O(B * N)``.
Columns: two views of one input column (``view_columns``, default ``("x_view_1", "x_view_2")``) and the target as
the collator's ``labels`` (``label_column`` of ``MultiModalCollator``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity

SUPCON_CITATION = """@inproceedings{khosla2020supcon,
  title = {Supervised Contrastive Learning},
  author = {Khosla, Prannay and Teterwak, Piotr and Wang, Chen and Sarna, Aaron and Tian, Yonglong and Isola, Phillip
            and Maschinot, Aaron and Liu, Ce and Krishnan, Dilip},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020}
}"""

DISTANCE_WEIGHTS = {
    "L1_inv": lambda d: d.abs() + 1,
    "L2_inv": lambda d: d.square() + 1,
    "L1": lambda d: 1 / (d.abs() + 1),
    "L2": lambda d: 1 / (d.square() + 1),
}


def distance_weight(label_distance: torch.Tensor, distance: str | None) -> torch.Tensor:
    """Denominator weight ``w(d)`` of a candidate at label distance ``d`` (any shape); ones when ``distance`` is None."""
    if distance is None:
        return torch.ones_like(label_distance)
    return DISTANCE_WEIGHTS[distance](label_distance)


@dataclass
class CandidateGroup:
    """One block of candidate columns scored against the anchors (real views, or SupReMix's mixtures).

    All tensors are ``[A, M]`` for ``A`` anchors and ``M`` columns: ``logits`` (similarity / tau), ``label_distance``
    (``|t_a - label of the column|``), ``valid`` (in the denominator) and ``positive`` (a subset of ``valid``).
    """

    logits: torch.Tensor
    label_distance: torch.Tensor
    valid: torch.Tensor
    positive: torch.Tensor


def multi_positive_loss(groups: list[CandidateGroup], distance: str | None) -> torch.Tensor:
    """Per-anchor loss ``[A]``: minus the mean over positives of ``logit - log sum_valid w * exp(logit)``.

    The groups are concatenated along the columns; invalid columns contribute nothing, whatever their logits hold.
    """
    logits = torch.cat([group.logits for group in groups], dim=1)
    valid = torch.cat([group.valid for group in groups], dim=1)
    positive = torch.cat([group.positive for group in groups], dim=1)
    log_weight = distance_weight(torch.cat([group.label_distance for group in groups], dim=1), distance).log()
    log_partition = (logits + log_weight).masked_fill(~valid, float("-inf")).logsumexp(dim=1)
    positive_log_prob = (logits - log_partition[:, None]).masked_fill(~positive, 0.0).sum(dim=1)
    return -positive_log_prob / positive.sum(dim=1)


@dataclass
class RegressionViews:
    """Local anchors and gathered candidates of a two-view regression batch.

    ``anchors`` ``[2B, D]`` (this rank's view 1 then view 2, prepared), ``candidates`` ``[2N, D]`` (view 1 of all
    ranks, then view 2 of all ranks), ``anchor_labels`` ``[2B]``, ``candidate_labels`` ``[2N]`` and ``anchor_index``
    ``[2B]`` (each anchor's own row among the candidates).
    """

    anchors: torch.Tensor
    candidates: torch.Tensor
    anchor_labels: torch.Tensor
    candidate_labels: torch.Tensor
    anchor_index: torch.Tensor


def regression_targets(batch: dict, objective_name: str, local_batch: int) -> torch.Tensor:
    """The continuous targets ``batch["labels"]`` ``[B]``; a ValueError says how to provide them otherwise."""
    labels = batch.get("labels")
    if labels is None:
        raise ValueError(
            f"{objective_name} needs a continuous target per row in batch['labels']: set the collator's "
            "label_column to the target column (e.g. label_column='rings')."
        )
    labels = torch.as_tensor(labels)
    if labels.shape != (local_batch,) or not torch.isfinite(labels.double()).all():
        raise ValueError(
            f"{objective_name} needs batch['labels'] to be {local_batch} finite numbers (one per row), got a tensor "
            f"of shape {tuple(labels.shape)}{'' if torch.isfinite(labels.double()).all() else ' with NaN/inf'}."
        )
    return labels


class SupConRegressionLoss(ScaledSimilarity, ContrastiveObjective):
    """Supervised contrastive regression (SupCon with exact-label positives and label-distance weights).

    Args:
        temperature: ``tau`` (SupReMix: 0.3).
        distance: denominator weight ``w(d)`` of the label distance: ``"L1_inv"``, ``"L2_inv"``, ``"L1"``, ``"L2"``
            or ``None`` (plain SupCon, the default here).
        view_columns: the two embedding columns holding the views of each row.
        learnable_temperature / max_scale / similarity: see :class:`~hf_contrastive.objectives.base.ScaledSimilarity`
            (``"cosine"`` normalises the embeddings, as SupCon does).
        gather_across_devices: candidates from every rank (exact gradients).
    """

    name = "supcon_regression"
    paper = "2004.11362"
    citation = SUPCON_CITATION

    def __init__(
        self,
        temperature: float = 0.3,
        distance: str | None = None,
        view_columns: tuple[str, str] = ("x_view_1", "x_view_2"),
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        similarity: str = "cosine",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        self.init_similarity(temperature, learnable_temperature, max_scale, similarity)
        if distance is not None and distance not in DISTANCE_WEIGHTS:
            raise ValueError(f"distance must be one of {sorted(DISTANCE_WEIGHTS)} or None, got {distance!r}.")
        if len(view_columns) != 2:
            raise ValueError(f"view_columns must name exactly two view columns, got {list(view_columns)}.")
        self.distance = distance
        self.view_columns = tuple(view_columns)
        self.required_columns = self.view_columns
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local loss of this rank's ``2B`` anchor views; logs the mean number of positives per anchor."""
        self.check_columns(tuple(embeddings))
        views = self._views(embeddings, batch)
        groups = self._candidate_groups(views)
        loss = multi_positive_loss(groups, self.distance).mean()
        logs = {
            "positives_per_anchor": torch.cat([g.positive for g in groups], dim=1).sum(dim=1).float().mean(),
            "temperature": torch.as_tensor(1.0 / self.scale(), dtype=torch.float32).detach(),
        }
        return ObjectiveOutput(loss=loss, logs={key: value.detach() for key, value in logs.items()})

    def _views(self, embeddings: dict[str, torch.Tensor], batch: dict) -> RegressionViews:
        """Prepare, gather and label the two views (layout in :class:`RegressionViews`)."""
        first, second = (self._prepare(embeddings[column]) for column in self.view_columns)
        local_batch = first.shape[0]
        labels = regression_targets(batch, type(self).__name__, local_batch).to(first.device, first.dtype)
        all_labels = self._gather_no_grad(labels)
        global_batch = all_labels.shape[0]
        local_rows = torch.arange(local_batch, device=first.device) + self._local_offset(local_batch)
        return RegressionViews(
            anchors=torch.cat([first, second]),
            candidates=torch.cat([self._gather(first), self._gather(second)]),
            anchor_labels=torch.cat([labels, labels]),
            candidate_labels=torch.cat([all_labels, all_labels]),
            anchor_index=torch.cat([local_rows, local_rows + global_batch]),
        )

    def _candidate_groups(self, views: RegressionViews) -> list[CandidateGroup]:
        """The real candidates: every gathered view but the anchor itself; positives share the anchor's target."""
        logits = views.anchors @ views.candidates.T * self.scale()
        label_distance = (views.anchor_labels[:, None] - views.candidate_labels[None, :]).abs()
        not_self = torch.ones_like(logits, dtype=torch.bool)
        not_self[torch.arange(len(views.anchor_index), device=logits.device), views.anchor_index] = False
        return [CandidateGroup(logits, label_distance, not_self, not_self & (label_distance == 0))]

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "similarity": self.similarity,
            "distance": self.distance,
            "view_columns": list(self.view_columns),
            "gather_across_devices": self.gather_across_devices,
        }
