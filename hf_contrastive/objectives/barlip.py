"""BarLIP: a Barlow Twins redundancy-reduction loss between image and text projections (Fini et al. 2023).

The SSL add-on of "Improved Baselines for Vision-Language Pre-training" built from Barlow Twins (Zbontar et al.
2021), trained next to the CLIP / CLIP-rocket loss (compose with
:class:`hf_contrastive.objectives.composite.CompositeObjective`). For projector outputs ``v`` (the ``barlow`` head of
:class:`hf_contrastive.models.CLIPRocketModel`: 3 linear layers, the last followed by an affine BatchNorm, so every
dimension is standardised over the batch) gathered over the ``N = W * B`` rows of all ranks:

.. math::

    C = \\frac{1}{N} V_I^\\top V_T \\in \\mathbb{R}^{D \\times D}, \\qquad
    L_{bt}(V_I, V_T) = \\sigma \\Big[\\sum_i (1 - C_{ii})^2 + \\lambda \\sum_{i \\ne j} C_{ij}^2\\Big]

    L = \\frac{1}{1 + A^2}\\Big[L_{bt}(v_I^{g}, v_T^{g}) + \\sum_{a, b} L_{bt}(v_I^{a}, v_T^{b})\\Big]

with ``sigma = 0.025`` and ``lambda = 5e-3``. The reference all-reduces ``C`` with a collective autograd cannot see;
here ``C`` is computed from rows gathered with their gradient, which is the same matrix and, once DDP averages, the
single-process gradient of the global batch. Limiting cases: ``C = I`` gives 0; collapsed (identical, standardised)
columns give ``sigma * lambda * D (D - 1)``.

Not under the gradient cache (``supports_gradient_cache = False``): the BatchNorm that ends the projector normalises
over whatever rows one forward sees, so mini-batch re-embedding changes the features. Under DDP, convert the model's
BatchNorms to ``SyncBatchNorm`` for the statistics of the global batch (as the reference does).

Columns: ``image.barlow``, ``text.barlow`` and ``{image,text}_view_k.barlow`` (k = 1..A), each ``[B, D]``.
"""

from __future__ import annotations

import torch

from .base import ContrastiveObjective, ObjectiveOutput
from .clip_rocket import CLIP_ROCKET_CITATION, view_columns


def barlow_twins_loss(
    image: torch.Tensor, text: torch.Tensor, off_diagonal_weight: float, scale: float
) -> torch.Tensor:
    """``scale * [sum_i (1 - C_ii)^2 + off_diagonal_weight * sum_{i != j} C_ij^2]`` with ``C = image^T text / N``.

    image, text: [N, D] (standardised per dimension by the projector's final BatchNorm).
    """
    correlation = image.T @ text / image.shape[0]
    diagonal = torch.diagonal(correlation)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return scale * (on_diagonal + off_diagonal_weight * off_diagonal)


class BarlowTwinsLoss(ContrastiveObjective):
    """BarLIP: Barlow Twins between image and text (global-global and every local a-b pair), averaged.

    Args:
        num_augs: local views per modality ``A`` (2); 0 uses the global pair only.
        off_diagonal_weight: ``lambda`` on the squared off-diagonal correlations (5e-3).
        scale: ``sigma``, the loss scale (0.025).
        output: the embedding key of the Barlow projector (``"barlow"``: columns ``image.barlow``, ...).
        image_column / text_column: global column names; views are ``{column}_view_{k}``.
        gather_across_devices: the correlation over every rank's rows.
    """

    name = "barlip"
    paper = "2305.08675"
    citation = CLIP_ROCKET_CITATION
    supports_gradient_cache = False

    def __init__(
        self,
        num_augs: int = 2,
        off_diagonal_weight: float = 5e-3,
        scale: float = 0.025,
        output: str = "barlow",
        image_column: str = "image",
        text_column: str = "text",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        self.num_augs = num_augs
        self.off_diagonal_weight = off_diagonal_weight
        self.scale = scale
        self.output = output
        images = [image_column, *view_columns(image_column, num_augs)]
        texts = [text_column, *view_columns(text_column, num_augs)]
        # (global, global), then every (image view a, text view b).
        self.pairs = [(f"{images[0]}.{output}", f"{texts[0]}.{output}")] + [
            (f"{image}.{output}", f"{text}.{output}") for image in images[1:] for text in texts[1:]
        ]
        self.required_columns = tuple(dict.fromkeys(name for pair in self.pairs for name in pair))
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Mean Barlow Twins loss over the 1 + A^2 image-text pairs, on gathered projector outputs."""
        self.check_columns(tuple(embeddings))
        gathered = {name: self._gather(embeddings[name]) for name in self.required_columns}
        losses = [
            barlow_twins_loss(gathered[image], gathered[text], self.off_diagonal_weight, self.scale)
            for image, text in self.pairs
        ]
        loss = torch.stack(losses).mean()
        return ObjectiveOutput(loss=loss, logs={"loss_global_pair": losses[0].detach()})

    def get_config_dict(self) -> dict:
        return {
            "num_augs": self.num_augs,
            "off_diagonal_weight": self.off_diagonal_weight,
            "scale": self.scale,
            "output": self.output,
        }
