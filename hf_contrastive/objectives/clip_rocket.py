"""CLIP-rocket (``CL2LLoss``): CLIP on a weak global view plus A x A cross-modal terms on strong local views.

From "Improved Baselines for Vision-Language Pre-training" (Fini et al., TMLR 2023). Per pair: one weakly augmented
image and caption (global, CLIP's linear projections ``z``) and ``A`` strongly augmented images and captions (local,
the separate MLP projectors ``h`` of :class:`hf_contrastive.models.CLIPRocketModel`). With ``s = exp(log_scale)``
(init 1/0.07), ``s_h = exp(local_log_scale)`` (init 1/0.1), ``CE_eps`` cross-entropy with label smoothing ``eps``
(target ``(1 - eps) onehot + eps / N``) and ``y = r B + arange(B)``:

.. math::

    L^{glob} = \\mathrm{clip}(z^I, z^T; s, 0), \\qquad
    L^{loc} = \\frac{1}{A^2} \\sum_{a, b} \\mathrm{clip}(h^{I,a}, h^{T,b}; s_h, \\varepsilon), \\qquad
    L = c \\cdot \\frac{L^{glob} + A\\, L^{loc}}{1 + A}

where ``clip(u, v; s, eps) = [CE_eps(s u V_all^T, y) + CE_eps(s v U_all^T, y)] / 2`` is
:func:`hf_contrastive.objectives.clip.clip_loss` and ``c = 2`` for ``reduction="sum"`` (every released run), 1 for
``"mean"``. This is the paper's ``(L_I + L_T) / 2`` with ``L_I = (L_I^glob + A L_I^loc) / (1 + A)``: the mean over
(a, b) of the symmetric pair losses is the mean of the two directions' A x A means. Label smoothing applies to the
local terms only; ``A = 0`` is CLIP (times ``c``).

Gathering: every column is gathered with its gradient (the library's exact local loss), so 2 processes x B give the
gradient of 1 process x 2B. The reference gathers without gradient (SLIP's ``all_gather_batch``), which gives each
rank's rows only the gradient of their own anchors; the two agree on one process.

Shapes: ``image``, ``text`` ``[B, D]`` (global projections), ``image_view_a``, ``text_view_a`` ``[B, D_h]`` for
``a = 1..A`` (local projections); logits ``[B, W*B]``. Memory: ``O((1 + A^2) B W B)`` for the logits.

Hyperparameters: ``num_augs`` (A = 2), ``temperature`` (0.07), ``local_temperature`` (0.1), ``label_smoothing``
(0.1), ``reduction`` ("sum"), ``max_scale`` (both scales clamped to 100; the trainer clamps every ``*log_scale``
parameter to ``[0, ln 100]`` after each step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity
from .clip import clip_loss, logged_clip_term

CLIP_ROCKET_CITATION = """@article{fini2023improved,
  title = {Improved Baselines for Vision-Language Pre-training},
  author = {Fini, Enrico and Astolfi, Pietro and Romero-Soriano, Adriana and Verbeek, Jakob and Drozdzal, Michal},
  journal = {Transactions on Machine Learning Research (TMLR)},
  year = {2023}
}"""

REDUCTION_FACTORS = {"sum": 2.0, "mean": 1.0}


def view_columns(column: str, num_augs: int) -> list[str]:
    """The local view columns of ``column``: ``[f"{column}_view_1", ..., f"{column}_view_{num_augs}"]``."""
    return [f"{column}_view_{k}" for k in range(1, num_augs + 1)]


def gather_each_once(
    tensors: Sequence[torch.Tensor], gather: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``gather`` for :func:`clip_loss` that returns precomputed gathers of ``tensors``: one collective per view,
    not one per (a, b) pair."""
    gathered = {id(tensor): gather(tensor) for tensor in tensors}
    return lambda tensor: gathered[id(tensor)]


class CL2LLoss(ScaledSimilarity, ContrastiveObjective):
    """The CLIP-rocket loss: global CLIP + label-smoothed A x A local terms with their own learnable temperature.

    Args:
        num_augs: number of strong views per modality ``A`` (2); 0 is plain CLIP.
        temperature: initial global temperature (0.07); the ``MultiModalTrainer`` takes it from a CLIP model's
            ``logit_scale``.
        local_temperature: initial temperature of the local terms (0.1), learned as ``local_log_scale``.
        separate_temperature: the local terms have their own temperature (CLIP-rocket's ``--separate-proj``); False
            shares the global one (the paper's "CLIP + augmentations" ablation, with a shared projector).
        learnable_temperature: learn both log-scales.
        max_scale: clamp on both scales (100).
        label_smoothing: ``eps`` of the local terms (0.1); the global terms never smooth.
        reduction: ``"sum"`` (reference runs: twice the mean of the two directions) or ``"mean"``.
        image_column / text_column: the global columns; views are ``{column}_view_{k}``.
        gather_across_devices: candidates from every rank (local loss, exact gradients).

    Example::

        objective = CL2LLoss(num_augs=2)
        loss = objective({"image": zi, "text": zt, "image_view_1": hi1, "image_view_2": hi2,
                          "text_view_1": ht1, "text_view_2": ht2}, batch).loss
    """

    name = "clip_rocket"
    paper = "2305.08675"
    citation = CLIP_ROCKET_CITATION
    supports_gradient_cache = True

    def __init__(
        self,
        num_augs: int = 2,
        temperature: float = 0.07,
        local_temperature: float = 0.1,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        label_smoothing: float = 0.1,
        reduction: str = "sum",
        separate_temperature: bool = True,
        image_column: str = "image",
        text_column: str = "text",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        self.init_similarity(temperature, learnable_temperature, max_scale, "cosine")
        if num_augs < 0:
            raise ValueError(f"num_augs must be >= 0, got {num_augs}.")
        if local_temperature <= 0:
            raise ValueError(f"local_temperature must be > 0, got {local_temperature}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        if reduction not in REDUCTION_FACTORS:
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.num_augs = num_augs
        self.local_temperature = local_temperature
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.separate_temperature = separate_temperature
        self.image_column, self.text_column = image_column, text_column
        self.image_views = view_columns(image_column, num_augs)
        self.text_views = view_columns(text_column, num_augs)
        self.required_columns = (image_column, text_column, *self.image_views, *self.text_views)
        self.gather_across_devices = gather_across_devices
        if learnable_temperature and separate_temperature:
            self.local_log_scale = nn.Parameter(torch.tensor(math.log(1.0 / local_temperature)))

    def local_scale(self) -> torch.Tensor | float:
        """``s_h = 1 / tau_h`` of the local terms: a tensor when learned (clamped to ``max_scale``), else a float."""
        if not self.separate_temperature:
            return self.scale()
        if self.learnable_temperature:
            return self.local_log_scale.exp().clamp(max=self.max_scale)
        return 1.0 / self.local_temperature

    def local_loss(self, image_views: list[torch.Tensor], text_views: list[torch.Tensor], offset: int) -> torch.Tensor:
        """Mean over the A x A (image view a, text view b) pairs of the label-smoothed symmetric CLIP loss.

        image_views, text_views: A normalised tensors [B, D_h] each.
        """
        gather = gather_each_once(image_views + text_views, self._gather)
        scale = self.local_scale()
        pair_losses = [
            clip_loss(image, text, scale, offset, self.label_smoothing, gather)
            for image in image_views
            for text in text_views
        ]
        return torch.stack(pair_losses).mean()

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """``c (L_glob + A L_loc) / (1 + A)`` over the local rows; logs both terms, accuracy and temperatures."""
        self.check_columns(tuple(embeddings))
        images = F.normalize(embeddings[self.image_column], dim=-1)
        texts = F.normalize(embeddings[self.text_column], dim=-1)
        offset = self._local_offset(images.shape[0])
        global_loss, logs = logged_clip_term(self, images, texts)
        logs["loss_global"] = global_loss.detach()
        loss = global_loss
        if self.num_augs > 0:
            image_views = [F.normalize(embeddings[name], dim=-1) for name in self.image_views]
            text_views = [F.normalize(embeddings[name], dim=-1) for name in self.text_views]
            local_loss = self.local_loss(image_views, text_views, offset)
            loss = (global_loss + self.num_augs * local_loss) / (1 + self.num_augs)
            logs["loss_local"] = local_loss.detach()
            logs["local_temperature"] = torch.as_tensor(1.0 / self.local_scale(), dtype=torch.float32).detach()
        return ObjectiveOutput(loss=REDUCTION_FACTORS[self.reduction] * loss, logs=logs)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Each view is scored against every gathered row of the other modality's view but its own pair."""
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "num_augs": self.num_augs,
            "temperature": self.temperature,
            "local_temperature": self.local_temperature,
            "learnable_temperature": self.learnable_temperature,
            "max_scale": self.max_scale,
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
            "separate_temperature": self.separate_temperature,
        }
