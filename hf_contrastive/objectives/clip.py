"""CLIP: symmetric image-text InfoNCE with a learnable temperature (Radford et al. 2021), as a local loss.

For the local rows ``i < B`` of rank ``r`` and the gathered columns (``W * B`` rows, layout in
:mod:`hf_contrastive.distributed`), with ``z`` the L2-normalised embeddings and ``s = exp(log_scale)``:

.. math::

    L = \\frac{1}{2}\\Big[\\mathrm{CE}_\\varepsilon\\big(s\\, z^I_{loc} (Z^T_{all})^\\top, y\\big)
        + \\mathrm{CE}_\\varepsilon\\big(s\\, z^T_{loc} (Z^I_{all})^\\top, y\\big)\\Big],
    \\qquad y = r B + \\mathrm{arange}(B)

``CE_eps`` is cross-entropy with label smoothing ``eps`` (target ``(1 - eps) onehot + eps / (W B)``; 0 = plain CLIP).
The gather keeps its gradient (open_clip's ``local_loss=True, gather_with_grad=True``), so 2 processes x B have the
gradient of 1 process x 2B. With one process this equals ``CLIPModel(..., return_loss=True).loss``.

Shapes: image, text ``[B, D]``; logits ``[B, W*B]``; labels ``[B]``. Memory: ``O(B * W * B)`` per rank.

Columns: ``image`` and ``text`` by default (``image_column`` / ``text_column`` name others, e.g. two views).
Hyperparameters: ``temperature`` (initial, 0.07 -> ``log_scale = log(1/0.07)``), ``learnable_temperature``,
``max_scale`` (100: the scale is clamped in the loss, and the trainer clamps ``log_scale`` to ``[0, ln 100]`` after
each step), ``label_smoothing``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity

CLIP_CITATION = """@inproceedings{radford2021clip,
  title = {Learning Transferable Visual Models From Natural Language Supervision},
  author = {Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, Gabriel and
            Agarwal, Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and Clark, Jack and
            Krueger, Gretchen and Sutskever, Ilya},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2021}
}"""


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def clip_logits_and_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor | float,
    offset: int = 0,
    label_smoothing: float = 0.0,
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`clip_loss` and the ``a``-to-``b`` logits [B, W*B] (for accuracy logs)."""
    labels = torch.arange(offset, offset + a.shape[0], device=a.device)
    logits_a = scale * a @ gather(b).T
    logits_b = scale * b @ gather(a).T
    # Half-precision logits are upcast for the log-sum-exp; float64 stays float64 (gradient checks).
    upcast = (lambda x: x.float()) if logits_a.element_size() < 4 else _identity
    loss_a = F.cross_entropy(upcast(logits_a), labels, label_smoothing=label_smoothing)
    loss_b = F.cross_entropy(upcast(logits_b), labels, label_smoothing=label_smoothing)
    return (loss_a + loss_b) / 2, logits_a


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor | float,
    offset: int = 0,
    label_smoothing: float = 0.0,
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> torch.Tensor:
    """Symmetric InfoNCE of local rows ``a``, ``b`` [B, D] (row i of a pairs with row i of b) against gathered ones.

    ``L = (CE_eps(scale * a @ gather(b).T, y) + CE_eps(scale * b @ gather(a).T, y)) / 2`` with
    ``y = offset + arange(B)``. Normalise ``a`` and ``b`` first for cosine similarity. An objective passes its own
    ``self._gather`` and ``self._local_offset(B)``; the defaults (no gather, offset 0) are the single-process loss.
    """
    return clip_logits_and_loss(a, b, scale, offset, label_smoothing, gather)[0]


def logged_clip_term(
    objective: ContrastiveObjective, images: torch.Tensor, texts: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The image-text term of a CLIP-family objective on its local rows [B, D], with its accuracy / temperature logs.

    Uses the objective's gather, local offset and ``scale()``; refuses a (gathered) batch of a single pair, whose
    loss would be 0 and teach nothing.
    """
    offset = objective._local_offset(images.shape[0])
    scale = objective.scale()
    loss, logits = clip_logits_and_loss(images, texts, scale, offset, label_smoothing, objective._gather)
    if logits.shape[1] < 2:
        raise ValueError(
            f"{type(objective).__name__} needs at least 2 pairs per (gathered) batch: raise the batch size."
        )
    labels = torch.arange(offset, offset + images.shape[0], device=logits.device)
    logs = {
        "accuracy": (logits.argmax(dim=1) == labels).float().mean().detach(),
        "temperature": torch.as_tensor(1.0 / scale, dtype=torch.float32).detach(),
    }
    return loss, logs


class CLIPLoss(ScaledSimilarity, ContrastiveObjective):
    """The CLIP objective: symmetric image-text InfoNCE with a learned temperature over every rank's pairs.

    Args:
        temperature: initial temperature ``tau``; ``log_scale`` starts at ``log(1 / tau)`` (CLIP: 0.07). The
            ``MultiModalTrainer`` overrides it with a ``CLIPModel``'s ``logit_scale``.
        learnable_temperature: learn ``log_scale`` (CLIP) or keep ``1 / tau`` fixed.
        max_scale: upper clamp on ``exp(log_scale)`` (CLIP: 100).
        label_smoothing: ``eps`` of the cross-entropies (0: plain CLIP; the improved-baselines recipe uses 0.1 on
            its augmented-view terms).
        image_column / text_column: the two embedding names paired row by row.
        gather_across_devices: candidates from every rank (local loss, exact gradients).
    """

    name = "clip"
    paper = "2103.00020"
    citation = CLIP_CITATION

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        label_smoothing: float = 0.0,
        image_column: str = "image",
        text_column: str = "text",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        self.init_similarity(temperature, learnable_temperature, max_scale, "cosine")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = label_smoothing
        self.image_column = image_column
        self.text_column = text_column
        self.required_columns = (image_column, text_column)
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local symmetric loss of ``embeddings[image_column]`` and ``embeddings[text_column]`` [B, D]."""
        self.check_columns(tuple(embeddings))
        images = self._prepare(embeddings[self.image_column])
        texts = self._prepare(embeddings[self.text_column])
        loss, logs = logged_clip_term(self, images, texts, self.label_smoothing)
        return ObjectiveOutput(loss=loss, logs=logs)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Each image is scored against every gathered text but its own (and vice versa)."""
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "max_scale": self.max_scale,
            "label_smoothing": self.label_smoothing,
            "image_column": self.image_column,
            "text_column": self.text_column,
        }
