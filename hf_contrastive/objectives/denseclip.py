"""DenseCLIP's segmentation loss: pixel-wise CE of the head plus the auxiliary pixel-text CE of the score maps.

.. math::

    L = L_{seg} + \\lambda \\, L_{aux}, \\qquad
    L_{seg} = \\mathrm{CE}\\big(\\mathrm{up}(\\mathrm{head\\ logits}),\\ y\\big), \\qquad
    L_{aux} = \\mathrm{CE}\\big(\\mathrm{up}(s / \\tau),\\ y\\big)

- ``s`` [B, K, h, w]: the pixel-text score map, cosine similarities of the dense image features and the K class
  text embeddings (values in [-1, 1]); ``tau`` = 0.07 is fixed, not learned; ``lambda = aux_weight`` = 0.4.
- ``up``: bilinear resize (``align_corners=False``) of the logits to the label size [H, W] (mmseg's
  ``BaseDecodeHead.losses``): the labels are never downsampled.
- ``y`` [B, H, W]: class ids, ``ignore_index`` (255) pixels count nowhere. CE is the mean over the counted pixels
  of the micro-batch; a batch with no counted pixel gives 0 (not 0/0 = NaN as ``F.cross_entropy`` would).

Gradients of ``L_aux`` reach the image encoder, the context decoder, gamma and the learnable text context (through
the frozen text encoder). Rao et al., "DenseCLIP: Language-Guided Dense Prediction with Context-Aware Prompting",
CVPR 2022 (arXiv:2112.01518).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.segmentation import IGNORE_INDEX
from .base import ContrastiveObjective, ObjectiveOutput

NAME = "denseclip"
PAPER = "https://arxiv.org/abs/2112.01518"
CITATION = """@inproceedings{rao2022denseclip,
  title = {DenseCLIP: Language-Guided Dense Prediction with Context-Aware Prompting},
  author = {Rao, Yongming and Zhao, Wenliang and Chen, Guangyi and Tang, Yansong and Zhu, Zheng and Huang, Guan and
    Zhou, Jie and Lu, Jiwen},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2022},
}"""


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean CE over the non-ignored pixels of ``labels`` [B, H, W] for ``logits`` [B, K, h, w] resized to H x W.

    The logits are resized bilinearly (``align_corners=False``) when their size differs from the labels'. With no
    counted pixel the loss is 0 (with a graph), not NaN.
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    summed = F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="sum")
    return summed / (labels != ignore_index).sum().clamp(min=1)


def pixel_text_loss(
    score_map: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """DenseCLIP's auxiliary loss: CE of ``score_map / temperature`` [B, K, h, w] upsampled to ``labels`` [B, H, W].

    Example (the spec's hand case): K = 2, s = [+1, -1] at every pixel, label 0: ``log(1 + exp(-2 / 0.07))``
    (about 4e-13); label 1: about ``2 / 0.07`` = 28.57.
    """
    return pixel_cross_entropy(score_map / temperature, labels, ignore_index)


class DenseCLIPLoss(ContrastiveObjective):
    """``L_seg + aux_weight * L_aux`` over a segmenter's outputs (see the module docstring for the formulas).

    Args:
        aux_weight: lambda, the weight of the pixel-text term (paper: 0.4; 0 drops the term, the baseline).
        temperature: tau of the score maps (paper: 0.07, fixed).
        ignore_index: label of pixels that count nowhere (255).

    Inputs: ``forward(outputs, batch)`` with ``outputs = {"logits": [B, K, H', W'], "score_map": [B, K, h, w] or
    None}`` and ``batch["labels"]`` [B, H, W]. Logs ``loss_seg`` and ``loss_aux`` (when there is a score map).
    Per-pixel and per-image, so nothing is gathered across ranks; the gradient cache does not apply.
    """

    name = NAME
    paper = PAPER
    citation = CITATION
    required_columns = ("logits", "score_map")
    supports_gradient_cache = False

    def __init__(self, aux_weight: float = 0.4, temperature: float = 0.07, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.aux_weight = aux_weight
        self.temperature = temperature
        self.ignore_index = ignore_index

    def forward(self, outputs: dict[str, torch.Tensor | None], batch: dict) -> ObjectiveOutput:
        labels = batch["labels"]
        loss_seg = pixel_cross_entropy(outputs["logits"], labels, self.ignore_index)
        logs = {"loss_seg": loss_seg.detach()}
        score_map = outputs.get("score_map")
        if score_map is None or self.aux_weight == 0:
            return ObjectiveOutput(loss=loss_seg, logs=logs)
        loss_aux = pixel_text_loss(score_map, labels, self.temperature, self.ignore_index)
        logs["loss_aux"] = loss_aux.detach()
        return ObjectiveOutput(loss=loss_seg + self.aux_weight * loss_aux, logs=logs)

    def get_config_dict(self) -> dict:
        return {"aux_weight": self.aux_weight, "temperature": self.temperature, "ignore_index": self.ignore_index}
