"""Input-label contrast: texts against embeddings of their label descriptions (softmax or binary form).

The primer's input-label setting (Rethmeier & Augenstein, arXiv:2102.12982, §2.8): a label ``y`` is embedded from
its *text* ``g(y)`` by the same encoder as the inputs, so a classifier is a nearest-description lookup that also
scores labels unseen in training (zero-shot) and learns from a few examples per label (few-shot).

Rows come from :func:`hf_contrastive.data.label_contrast.label_contrast_dataset`: ``anchor`` = text,
``positive`` = its label's description, ``negative_1..k`` = descriptions of ``k`` sampled other labels. For local
anchor ``t_i`` with candidate labels ``c_i1..c_iM`` (target ``c_i*``), score ``s_ij = cos(t_i, c_ij) / tau``
(``similarity="dot"``: the raw dot product over ``tau``) and a validity mask ``m_ij`` (below):

.. math::

    \\text{softmax (GILE / sampled InfoNCE, §2.8b, §2.3):}\\quad
    \\ell_i = -\\log \\frac{\\exp s_{i*}}{\\sum_j m_{ij} \\exp s_{ij}}

    \\text{binary (CLESS label-embedding NCE, §2.8a):}\\quad
    \\ell_i = -\\log \\sigma(s_{i*} + b) - \\sum_{j \\ne *} m_{ij} \\log \\sigma(-(s_{ij} + b))

    L = \\frac{1}{B} \\sum_i \\ell_i

Candidates (``in_batch_labels``):

- ``False`` (default): each text's own ``1 + k`` labels, ``positive`` first (``M = 1 + k``). No cross-rank
  traffic: the loss is per row, and DDP's gradient average over equal per-rank batches is already the global mean.
- ``True``: every label description of the *global* batch: ``[P_all | N1_all | ... | Nk_all]`` gathered across
  ranks (``M = W * B * (1 + k)``; layout in :mod:`hf_contrastive.distributed`), target ``rank * B + i``.

The mask makes a candidate set a set of *labels*: ``m_ij = 0`` when candidate ``j`` repeats the target's
description (another row of the same class: a false negative), the anchor's text, or a description already offered
earlier in the row (a label present ``n`` times in the batch would otherwise weigh ``n`` times in the denominator).
Texts are compared by ``batch["input_hashes"]``, since equal texts get different embeddings under dropout. The
target itself is always kept. So with ``in_batch_labels=True`` the softmax runs over the distinct labels of the
global batch, and the binary form sums over them.

Shapes: embeddings ``[B, D]`` per column; scores and mask ``[B, M]``; target ``[B]``. Memory ``O(B * M)``.

Hyperparameters: ``form`` ("softmax" | "binary"), ``temperature`` (scale ``1 / tau``; learnable CLIP-style with
``learnable_temperature``, clamped at ``max_scale``), ``bias`` ``b`` (binary form only; ``learnable_bias``: SigLIP
initialises ``tau = 0.1, b = -10``), ``similarity``, ``in_batch_labels``, ``gather_across_devices``.

Reconstruction notes (the primer gives formulas, not an implementation): the binary form sums the ``1 + k`` terms
of a text (the primer's per-text sum) and averages over texts; the score is ``cos / tau + b`` rather than CLESS's
MLP scorer, so the same encoder and evaluator serve both forms; label texts go through the shared encoder
(``f = g``, §2 notation) rather than a mean of word vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity
from .info_nce import negative_columns

PRIMER_CITATION = """@article{rethmeier2023primer,
  title = {A Primer on Contrastive Pretraining in Language Processing: Methods, Lessons Learned, and Perspectives},
  author = {Rethmeier, Nils and Augenstein, Isabelle},
  journal = {ACM Computing Surveys},
  volume = {55},
  number = {10},
  year = {2023},
  doi = {10.1145/3561970}
}"""

FORMS = ("softmax", "binary")


def first_occurrence(hashes: torch.Tensor) -> torch.Tensor:
    """Boolean [B, M]: True where ``hashes[i, j]`` is the first occurrence of its value in row ``i``."""
    ordered, order = hashes.sort(dim=1, stable=True)
    first_sorted = torch.ones_like(ordered, dtype=torch.bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return torch.empty_like(first_sorted).scatter_(1, order, first_sorted)


def label_candidate_mask(
    candidate_hashes: torch.Tensor, anchor_hashes: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Boolean [B, M]: True for the candidates that count (the target, and one copy of every other label).

    candidate_hashes: [B, M] hash of each candidate's text; anchor_hashes: [B]; target: [B] index of the positive.
    A candidate is dropped when it repeats the target's text, the anchor's text, or an earlier candidate of its row.
    """
    rows = torch.arange(len(target), device=target.device)
    target_hashes = candidate_hashes[rows, target]
    valid = (
        first_occurrence(candidate_hashes)
        & (candidate_hashes != target_hashes[:, None])
        & (candidate_hashes != anchor_hashes[:, None])
    )
    valid[rows, target] = True
    return valid


class InputLabelContrast(ScaledSimilarity, ContrastiveObjective):
    """Contrast texts with their label descriptions: softmax over candidate labels, or per-label sigmoid (BCE).

    Args:
        form: ``"softmax"`` (cross-entropy over the candidate labels) or ``"binary"`` (sigmoid BCE per text-label
            pair: the positive has target 1, every other candidate 0).
        temperature: ``tau`` in ``s = cos / tau``.
        learnable_temperature: learn ``log(1 / tau)``, initialised from ``temperature``, clamped at ``max_scale``.
        max_scale: upper clamp on the learned ``1 / tau``.
        similarity: ``"cosine"`` or ``"dot"``.
        bias: the binary form's logit offset ``b`` (its initial value when learned; the card shows that); must stay
            0 for the softmax form, which is shift-invariant.
        learnable_bias: learn ``b`` (binary form only).
        in_batch_labels: add the label descriptions of every row of the global batch to each text's candidates.
        gather_across_devices: with ``in_batch_labels``, take candidates from every rank (exact gradient).

    Columns: ``anchor`` (text), ``positive`` (its label's description), ``negative_1..k`` (other labels).
    """

    name = "input_label"
    paper = "2102.12982"
    citation = PRIMER_CITATION
    required_columns = ("anchor", "positive")
    optional_column_prefix = "negative"

    def __init__(
        self,
        form: str = "softmax",
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        similarity: str = "cosine",
        bias: float = 0.0,
        learnable_bias: bool = False,
        in_batch_labels: bool = False,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        _check_options(form, bias, learnable_bias)
        self.form = form
        self.init_similarity(temperature, learnable_temperature, max_scale, similarity)
        self.learnable_bias = learnable_bias
        self.in_batch_labels = in_batch_labels
        self.gather_across_devices = gather_across_devices
        self.initial_bias = float(bias)
        if learnable_bias:
            self.bias = nn.Parameter(torch.tensor(float(bias)))
        else:
            self.bias = float(bias)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Its own k negative labels; with ``in_batch_labels`` every label of the gathered batch (an upper bound:
        repeated labels are counted once at run time)."""
        if self.in_batch_labels:
            return super().effective_negatives(gathered_rows, negatives_per_row)
        return negatives_per_row

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local loss over the batch's text-label pairs; ``batch["input_hashes"]`` [C, B] aligned with its columns."""
        column_names = tuple(batch["column_names"])
        self.check_columns(column_names)
        label_roles = ["positive", *negative_columns(column_names)]
        hashes = dict(zip(column_names, batch["input_hashes"].to(embeddings["anchor"].device)))
        anchors = self._prepare(embeddings["anchor"])
        labels = [self._prepare(embeddings[role]) for role in label_roles]
        if self.in_batch_labels:
            scores, candidate_hashes, target = self._batch_candidates(anchors, labels, hashes, label_roles)
        else:
            scores = torch.einsum("bd,bmd->bm", anchors, torch.stack(labels, dim=1))
            candidate_hashes = torch.stack([hashes[role] for role in label_roles], dim=1)
            target = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
        if scores.shape[1] < 2:
            raise ValueError(
                "InputLabelContrast needs at least one negative label per text: add negative_1..k columns "
                "(label_contrast_dataset(num_negatives=...)) or set in_batch_labels=True."
            )
        valid = label_candidate_mask(candidate_hashes, hashes["anchor"], target)
        logits = scores * self.scale()
        logits = logits.float() if logits.element_size() < 4 else logits  # float64 stays float64 (gradcheck)
        loss = (
            self._softmax_loss(logits, valid, target)
            if self.form == "softmax"
            else self._binary_loss(logits, valid, target)
        )
        return ObjectiveOutput(loss=loss, logs=self._logs(logits, valid, target))

    def _batch_candidates(
        self, anchors: torch.Tensor, labels: list[torch.Tensor], hashes: dict, label_roles: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores [B, M] against the gathered label columns, their hashes [B, M] and the targets [B]."""
        gather = self._gather
        gather_hashes = self._gather_no_grad
        candidates = torch.cat([gather(label) for label in labels])
        candidate_hashes = torch.cat([gather_hashes(hashes[role]) for role in label_roles])
        offset = self._local_offset(len(anchors))
        target = torch.arange(offset, offset + len(anchors), device=anchors.device)
        return anchors @ candidates.T, candidate_hashes.expand(len(anchors), -1), target

    @staticmethod
    def _softmax_loss(logits: torch.Tensor, valid: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), target)

    def _binary_loss(self, logits: torch.Tensor, valid: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        shifted = logits + self.bias
        targets = F.one_hot(target, num_classes=logits.shape[1]).to(logits.dtype)
        per_pair = F.binary_cross_entropy_with_logits(shifted, targets, reduction="none")
        return (per_pair * valid).sum(dim=1).mean()

    def _logs(self, logits: torch.Tensor, valid: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        masked = logits.detach().masked_fill(~valid, torch.finfo(logits.dtype).min)
        logs = {
            "accuracy": (masked.argmax(dim=1) == target).float().mean(),
            "effective_negatives": valid.sum(dim=1).float().mean() - 1,
            "temperature": torch.as_tensor(1.0 / self.scale(), dtype=torch.float32).detach(),
        }
        if self.form == "binary":
            logs["bias"] = torch.as_tensor(self.bias, dtype=torch.float32).detach()
        return logs

    def get_config_dict(self) -> dict:
        return {
            "form": self.form,
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "similarity": self.similarity,
            "bias": self.initial_bias,
            "learnable_bias": self.learnable_bias,
            "in_batch_labels": self.in_batch_labels,
            "gather_across_devices": self.gather_across_devices,
        }


def _check_options(form: str, bias: float, learnable_bias: bool) -> None:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}.")
    if form == "softmax" and (bias != 0 or learnable_bias):
        raise ValueError("bias and learnable_bias apply to form='binary' only: a softmax ignores a shared offset.")
