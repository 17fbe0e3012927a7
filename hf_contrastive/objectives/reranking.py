"""SFT or contrastive learning for an answer-token reranker (Dai et al. 2025, arXiv:2510.14824).

A pointwise reranker reads ``template(instruction, query, document)`` and is scored at the *answer position*: the
position whose next-token distribution decides "yes" or "no". Only that position's logits enter the losses below:
``answer_logits`` [P, V] (full vocabulary) or ``yes_no_logits`` [P, 2] = (z_y, z_n), for P (query, document) pairs.
Groups are laid out as [B, G]: B queries, G = 1 + n documents, the positive in column 0, with an optional
``group_mask`` [B, G] (True = a real document) when groups have different sizes.

Losses (all pure torch, no Trainer):

- two-way SFT: ``L_i = BCE_with_logits(z_y - z_n, l_i)``, i.e. ``-log p(l_i)`` with ``p`` normalised over {yes, no}.
- full-vocabulary SFT: ``L_i = -log softmax(z)_{t_i}``, next-token CE at the answer position, as ``trl``'s
  ``SFTTrainer`` computes it for a one-token completion. It also pushes down every other token of the vocabulary.
- listwise contrastive (InfoNCE over the group): ``L = -log softmax(s / tau)_0`` with ``s = z_y`` (``cl_score=
  "yes_logit"``, the default) or ``s = log softmax_vocab(z)_yes`` (``"yes_logprob"``, the alternative reading).
- Unified Reranking Loss (URL, spec 2.4): the gradient of either loss w.r.t. the answer hidden state h_d factors into
  ``sign_d * W_d * D``. CL: ``W = 1 - p_0`` (positive) or ``p_i`` (negative), ``p = softmax(s / tau)`` over the
  group, ``D = w_yes``. SFT: ``W = 1 - sigma_d`` (positive) or ``sigma_d`` (negative), ``sigma = sigmoid(z_y - z_n)``,
  ``D = w_yes - w_no``. URL recombines a weight scheme and a direction scheme:
  ``L_URL = sum_d sg[r_d^(weight)] * phi^(direction)(h_d)`` with the signed weight ``r = sign * W`` (``p - onehot_0``
  or ``sigma - l``), ``phi_CL = s / tau``, ``phi_SFT = z_y - z_n``; its gradient is exactly the CL gradient for
  (cl, cl) and the SFT gradient for (sft, sft), for every parameter including the LM-head rows.

The construction of the URL and its normalisation are not verified against the paper (its notation was not
accessible); the default normalisation follows the weight scheme (mean over groups for CL weights, mean over pairs
for SFT weights) and is configurable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput

NAME = "sft_vs_cl_reranking"
PAPER = "2510.14824"
PAPER_TITLE = "Supervised Fine-Tuning or Contrastive Learning? Towards Better Multimodal LLM Reranking"
# First names are not given in the sources available here; the author list is as the spec records it.
CITATION = """@article{dai2025sftcl,
  title = {Supervised Fine-Tuning or Contrastive Learning? Towards Better Multimodal LLM Reranking},
  author = {Dai and Zhang and Li and Zhang and Long and Xie and Zhang and Li and Zhang},
  journal = {arXiv preprint arXiv:2510.14824},
  year = {2025},
}"""

LOSSES = ("sft", "sft_full_vocab", "contrastive", "url")
SCHEMES = ("cl", "sft")
CL_SCORES = ("yes_logit", "yes_logprob")
URL_NORMALIZATIONS = ("auto", "groups", "pairs", "sum")
GROUP_LOSSES = ("contrastive", "url")
SCORE_KINDS = ("sft", "yes_logit", "yes_logprob")


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the softmax / sigmoid; float32 and float64 stay as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _choice(value: str, allowed: tuple[str, ...], argument: str) -> str:
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {list(allowed)}, got {value!r}.")
    return value


def two_way_sft_loss(yes_no_logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Two-way SFT loss: ``BCE_with_logits(z_y - z_n, label)``, p(yes) normalised over {yes, no} only.

    ``L_i = -[l_i log sigma(z_y - z_n) + (1 - l_i) log(1 - sigma(z_y - z_n))]``.

    Args:
        yes_no_logits: [P, 2] logits of (yes, no) at the answer position.
        labels: [P] 1 for a relevant pair, 0 for an irrelevant one.
        reduction: "mean" (the spec's batch loss), "sum" or "none".
    """
    margin = yes_no_logits[..., 0] - yes_no_logits[..., 1]
    return F.binary_cross_entropy_with_logits(margin, labels.to(margin.dtype), reduction=reduction)


def full_vocab_sft_loss(answer_logits: torch.Tensor, target_token_ids: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary SFT loss: next-token CE at the answer position, mean over pairs (trl's one-token SFT loss).

    ``L_i = -log softmax(z_i)_{t_i}`` with ``t_i`` the id of "yes" (relevant) or "no" (irrelevant).

    Args:
        answer_logits: [P, V] logits at the answer position.
        target_token_ids: [P] the answer token id of each pair.
    """
    return F.cross_entropy(_upcast(answer_logits), target_token_ids)


def contrastive_scores(answer_logits: torch.Tensor, yes_token_id: int, cl_score: str = "yes_logit") -> torch.Tensor:
    """The CL score s of each pair: [P, V] -> [P].

    ``"yes_logit"``: ``s = z_y`` (the spec's reading, default); ``"yes_logprob"``: ``s = z_y - logsumexp(z)``.
    """
    _choice(cl_score, CL_SCORES, "cl_score")
    yes_logit = answer_logits[:, yes_token_id]
    if cl_score == "yes_logit":
        return yes_logit
    return _upcast(yes_logit) - torch.logsumexp(_upcast(answer_logits), dim=-1)


def relevance_scores(answer_logits: torch.Tensor, answer_token_ids: tuple[int, int], kind: str) -> torch.Tensor:
    """Inference scores (higher = more relevant) that match how the model was trained: [P, V] -> [P].

    ``"sft"``: ``sigmoid(z_y - z_n)`` (two-way SFT); ``"yes_logit"``: ``z_y`` (CL on z_y: its "no" logit was never
    trained, so ``sigmoid(z_y - z_n)`` would rank by noise); ``"yes_logprob"``: ``log softmax_vocab(z)_yes``
    (full-vocabulary SFT, CL with ``cl_score="yes_logprob"``).
    """
    _choice(kind, SCORE_KINDS, "score")
    yes_id, no_id = answer_token_ids
    if kind == "sft":
        return torch.sigmoid(_upcast(answer_logits[:, yes_id] - answer_logits[:, no_id]))
    return contrastive_scores(answer_logits, yes_id, kind)


def to_groups(flat: torch.Tensor, group_mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Lay out per-pair values [P, ...] (groups flattened row-major) as [B, G, ...], ``fill`` where masked out."""
    grouped = flat.new_full((*group_mask.shape, *flat.shape[1:]), fill)
    mask = group_mask.reshape(*group_mask.shape, *([1] * (flat.dim() - 1))).expand_as(grouped)
    return grouped.masked_scatter(mask, flat)  # row-major, like the flattening; no host sync (unlike indexing)


def _full_mask(scores: torch.Tensor, group_mask: torch.Tensor | None) -> torch.Tensor:
    if group_mask is None:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    return group_mask


def listwise_contrastive_loss(
    scores: torch.Tensor, temperature: float = 1.0, group_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Listwise contrastive loss over one positive and n negatives per query, mean over queries.

    ``L_b = -log [exp(s_b0 / tau) / sum_j exp(s_bj / tau)]`` (the sum runs over the real documents of group b).

    Args:
        scores: [B, 1 + n] CL scores, the positive in column 0.
        temperature: tau (the paper's formula has none: 1.0).
        group_mask: [B, 1 + n] True for real documents (padding is excluded from the softmax).
    """
    mask = _full_mask(scores, group_mask)
    logits = (_upcast(scores) / temperature).masked_fill(~mask, float("-inf"))
    return -torch.log_softmax(logits, dim=-1)[:, 0].mean()


def cl_signed_weights(
    scores: torch.Tensor, temperature: float = 1.0, group_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CL weights with their sign, ``dL_b / d(s_bj / tau) = p_bj - [j = 0]``: [B, G] -> [B, G] (0 on padding).

    ``|.|`` is the spec's weight W (``1 - p_0`` for the positive, ``p_i`` for negative i); the sign is -1 for the
    positive and +1 for negatives.
    """
    mask = _full_mask(scores, group_mask)
    probabilities = torch.softmax((_upcast(scores) / temperature).masked_fill(~mask, float("-inf")), dim=-1)
    target = torch.zeros_like(probabilities)
    target[:, 0] = 1.0
    return (probabilities - target).masked_fill(~mask, 0.0)


def sft_signed_weights(yes_no_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SFT weights with their sign, ``dL_i / d(z_y - z_n) = sigma_i - l_i``: [..., 2], [...] -> [...].

    ``|.|`` is the spec's weight W (``1 - sigma`` for a positive, ``sigma`` for a negative), per pair on its own.
    """
    margin = _upcast(yes_no_logits[..., 0] - yes_no_logits[..., 1])
    return torch.sigmoid(margin) - labels.to(margin.dtype)


def group_labels(group_mask: torch.Tensor) -> torch.Tensor:
    """Relevance labels of a group layout: 1 in column 0 (the positive), 0 elsewhere: [B, G] -> [B, G]."""
    labels = torch.zeros(group_mask.shape, device=group_mask.device)
    labels[:, 0] = 1.0
    return labels


def unified_reranking_loss(
    yes_no_logits: torch.Tensor,
    weight_scheme: str,
    direction_scheme: str,
    group_mask: torch.Tensor | None = None,
    cl_scores: torch.Tensor | None = None,
    temperature: float = 1.0,
    normalization: str = "auto",
) -> torch.Tensor:
    """Unified Reranking Loss: the weights of one objective with the update direction of another (spec 2.4).

    ``L_URL = (1 / N) sum_{b, j} sg[r_bj] * phi(b, j)`` where

    - ``r = p - onehot_0`` (weight_scheme "cl", group softmax of ``s / tau``) or ``r = sigma - l`` ("sft",
      ``sigma = sigmoid(z_y - z_n)``, ``l = 1`` in column 0); ``sg`` = stop-gradient;
    - ``phi = s / tau`` (direction_scheme "cl": direction ``w_yes`` when ``s = z_y``) or ``phi = z_y - z_n``
      ("sft": direction ``w_yes - w_no``);
    - ``N`` = B (``normalization="groups"``), the number of real pairs ("pairs"), 1 ("sum"); "auto" takes groups
      for CL weights and pairs for SFT weights, as in the original losses. The paper's normalisation is unverified.

    With (cl, cl) the gradient equals that of :func:`listwise_contrastive_loss`, with (sft, sft) that of
    :func:`two_way_sft_loss` (mean over pairs; sum-reduced with ``normalization="sum"``). The returned value is the
    weight scheme's own loss under the same normalisation (a straight-through value: the surrogate sum above has no
    meaning as a number), so a (cl, cl) run logs exactly the CL loss.

    Args:
        yes_no_logits: [B, G, 2] (z_y, z_n) per document, positive in column 0.
        weight_scheme, direction_scheme: "cl" or "sft".
        group_mask: [B, G] True for real documents.
        cl_scores: [B, G] CL scores s (default: z_y).
        temperature: tau of the CL softmax and of ``phi_CL``.
        normalization: "auto", "groups", "pairs" or "sum".
    """
    _choice(weight_scheme, SCHEMES, "weight_scheme")
    _choice(direction_scheme, SCHEMES, "direction_scheme")
    _choice(normalization, URL_NORMALIZATIONS, "normalization")
    scores = yes_no_logits[..., 0] if cl_scores is None else cl_scores
    mask = _full_mask(scores, group_mask)
    labels = group_labels(mask)
    if weight_scheme == "cl":
        signed_weights = cl_signed_weights(scores, temperature, mask)
        per_item_loss = -torch.log_softmax((_upcast(scores) / temperature).masked_fill(~mask, float("-inf")), -1)[:, 0]
    else:
        signed_weights = sft_signed_weights(yes_no_logits, labels)
        per_item_loss = two_way_sft_loss(yes_no_logits, labels, reduction="none").masked_fill(~mask, 0.0)
    if direction_scheme == "cl":
        direction = _upcast(scores) / temperature
    else:
        direction = _upcast(yes_no_logits[..., 0] - yes_no_logits[..., 1])
    if normalization == "auto":
        normalization = "groups" if weight_scheme == "cl" else "pairs"
    normalizer = {"groups": mask.shape[0], "pairs": mask.sum(), "sum": 1}[normalization]
    surrogate = (signed_weights.detach() * direction).masked_fill(~mask, 0.0).sum() / normalizer
    reported = per_item_loss.sum().detach() / normalizer
    return surrogate - surrogate.detach() + reported


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _weight_summary(prefix: str, weights: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> dict:
    negative_mass = (weights * negative).sum()
    total = (weights * positive).sum() + negative_mass
    return {
        f"{prefix}_weight_positive": _masked_mean(weights, positive),
        f"{prefix}_weight_negative": _masked_mean(weights, negative),
        f"{prefix}_negative_weight_fraction": negative_mass / total.clamp(min=torch.finfo(weights.dtype).tiny),
    }


def weight_direction_diagnostics(
    yes_no_logits: torch.Tensor,
    labels: torch.Tensor,
    answer_rows: torch.Tensor,
    cl_scores: torch.Tensor | None = None,
    group_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Detached scalars that show how SFT and CL would update this batch (spec 2.4), for the training logs.

    Weights W = |signed weight| (see :func:`unified_reranking_loss`):

    - ``sft_weight_positive`` / ``sft_weight_negative``: mean SFT weight (``1 - sigma`` / ``sigma``) over positive /
      negative pairs; ``sft_negative_weight_fraction``: the share of the SFT weight mass on negatives;
    - with ``cl_scores`` (group rows): the same three for CL weights (``1 - p_0`` / ``p_i``). The CL weights of a
      group sum to ``2 (1 - p_0)``, half of it on the negatives, so the CL fraction is 0.5 by construction (the
      coupling the paper contrasts with SFT's per-pair weights); ``sft_loss`` and ``cl_loss`` of the batch;
    - directions: ``norm_w_yes``, ``norm_w_yes_minus_no`` and ``cosine_w_yes_w_yes_minus_no``.

    Args:
        yes_no_logits: [P, 2] (z_y, z_n) of every pair (groups flattened row-major).
        labels: [P] 1 = relevant, 0 = not.
        answer_rows: [2, H] the LM-head rows (w_yes, w_no).
        cl_scores: [B, G] CL scores of the groups (the same pairs as ``yes_no_logits``), positive in column 0.
        group_mask: [B, G] True for real documents.
        temperature: tau of the CL softmax.
    """
    with torch.no_grad():
        yes_no_logits, labels = _upcast(yes_no_logits.detach()), labels.detach()
        sft_weights = sft_signed_weights(yes_no_logits, labels).abs()
        positive = labels > 0.5
        logs = _weight_summary("sft", sft_weights, positive, ~positive)
        logs["sft_loss"] = two_way_sft_loss(yes_no_logits, labels)
        if cl_scores is not None:
            scores = _upcast(cl_scores.detach())
            mask = _full_mask(scores, group_mask)
            cl_weights = cl_signed_weights(scores, temperature, mask).abs()
            first = torch.zeros_like(mask)
            first[:, 0] = True
            logs.update(_weight_summary("cl", cl_weights, first, mask & ~first))
            logs["cl_loss"] = listwise_contrastive_loss(scores, temperature, mask)
        w_yes, w_no = _upcast(answer_rows.detach())
        logs["norm_w_yes"] = w_yes.norm()
        logs["norm_w_yes_minus_no"] = (w_yes - w_no).norm()
        logs["cosine_w_yes_w_yes_minus_no"] = F.cosine_similarity(w_yes, w_yes - w_no, dim=0)
    return logs


class RerankingObjective(nn.Module):
    """The reranker's training loss, picked by ``loss``: answer-position logits + batch -> loss and logs.

    ================  ==========================================  ============================================
    ``loss``          loss                                        batch rows
    ================  ==========================================  ============================================
    "sft"             :func:`two_way_sft_loss` (mean over pairs)  group rows (flattened) or pair rows
    "sft_full_vocab"  :func:`full_vocab_sft_loss`                 group rows (flattened) or pair rows
    "contrastive"     :func:`listwise_contrastive_loss`           group rows (one positive, n >= 1 negatives)
    "url"             :func:`unified_reranking_loss`              group rows
    ================  ==========================================  ============================================

    ``forward(answer_logits [P, V], batch, answer_token_ids=(yes_id, no_id), answer_rows=[2, H] | None)``; the batch
    holds ``labels`` [P] and, for group rows, ``group_mask`` [B, G] (as :class:`~hf_contrastive.data.reranking.
    RerankerCollator` builds it). With ``diagnostics`` and ``answer_rows`` the logs carry
    :func:`weight_direction_diagnostics`.

    Args:
        loss: one of ``LOSSES``.
        weight_scheme, direction_scheme: URL schemes ("cl" / "sft"); only used by ``loss="url"``.
        cl_score: "yes_logit" (s = z_y) or "yes_logprob" (s = log softmax_vocab(z)_yes), for CL scores.
        temperature: tau of the CL softmax.
        url_normalization: see :func:`unified_reranking_loss`.
        diagnostics: log the weight/direction diagnostics.
    """

    paper = PAPER
    citation = CITATION

    def __init__(
        self,
        loss: str = "sft",
        weight_scheme: str = "sft",
        direction_scheme: str = "sft",
        cl_score: str = "yes_logit",
        temperature: float = 1.0,
        url_normalization: str = "auto",
        diagnostics: bool = True,
    ) -> None:
        super().__init__()
        self.loss = _choice(loss, LOSSES, "loss")
        self.weight_scheme = _choice(weight_scheme, SCHEMES, "weight_scheme")
        self.direction_scheme = _choice(direction_scheme, SCHEMES, "direction_scheme")
        self.cl_score = _choice(cl_score, CL_SCORES, "cl_score")
        self.url_normalization = _choice(url_normalization, URL_NORMALIZATIONS, "url_normalization")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = temperature
        self.diagnostics = diagnostics

    @property
    def name(self) -> str:
        return f"reranker_{self.loss}"

    @property
    def inference_score(self) -> str:
        """The score a model trained with this loss must be ranked by (see :func:`relevance_scores`)."""
        if self.loss == "sft" or (self.loss == "url" and self.direction_scheme == "sft"):
            return "sft"
        if self.loss == "sft_full_vocab":
            return "yes_logprob"
        return self.cl_score

    @property
    def needs_groups(self) -> bool:
        return self.loss in GROUP_LOSSES

    def get_config_dict(self) -> dict:
        """Settings that define the loss (shown in the model card)."""
        config = {"loss": self.loss}
        if self.loss == "url":
            config.update(
                weight_scheme=self.weight_scheme,
                direction_scheme=self.direction_scheme,
                url_normalization=self.url_normalization,
            )
        if self.loss in GROUP_LOSSES:
            config.update(cl_score=self.cl_score, temperature=self.temperature)
        return config

    def forward(
        self,
        answer_logits: torch.Tensor,
        batch: dict,
        answer_token_ids: tuple[int, int],
        answer_rows: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        labels = batch["labels"]
        group_mask = batch.get("group_mask")
        if self.needs_groups and group_mask is None:
            raise ValueError(f"loss={self.loss!r} needs group rows (query, positive, negatives); the batch has pairs.")
        yes_no_logits = answer_logits[:, list(answer_token_ids)]
        wants_diagnostics = self.diagnostics and answer_rows is not None
        cl_scores = None
        if group_mask is not None and (self.needs_groups or wants_diagnostics):
            flat_scores = contrastive_scores(answer_logits, answer_token_ids[0], self.cl_score)
            cl_scores = to_groups(flat_scores, group_mask)
        loss = self._loss(answer_logits, yes_no_logits, labels, answer_token_ids, cl_scores, group_mask)
        logs = {}
        if wants_diagnostics:
            logs = weight_direction_diagnostics(
                yes_no_logits, labels, answer_rows, cl_scores, group_mask, self.temperature
            )
        return ObjectiveOutput(loss=loss, logs=logs)

    def _loss(self, answer_logits, yes_no_logits, labels, answer_token_ids, cl_scores, group_mask) -> torch.Tensor:
        if self.loss == "sft":
            return two_way_sft_loss(yes_no_logits, labels)
        if self.loss == "sft_full_vocab":
            yes_id, no_id = answer_token_ids
            targets = torch.where(labels > 0.5, yes_id, no_id)
            return full_vocab_sft_loss(answer_logits, targets)
        if self.loss == "contrastive":
            return listwise_contrastive_loss(cl_scores, self.temperature, group_mask)
        return unified_reranking_loss(
            to_groups(yes_no_logits, group_mask),
            self.weight_scheme,
            self.direction_scheme,
            group_mask,
            cl_scores,
            self.temperature,
            self.url_normalization,
        )
