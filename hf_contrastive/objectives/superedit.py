"""SuperEdit's loss: InstructPix2Pix's denoising MSE plus a triplet term between positive and negative instructions.

.. math::

    d^{pos}_b = \\operatorname{mean}_{c,h,w} (\\hat\\epsilon^{pos}_b - y_b)^2, \\qquad
    d^{neg}_b = \\operatorname{mean}_{c,h,w} (\\hat\\epsilon^{neg}_b - y_b)^2

    t_b = \\operatorname{relu}(d^{pos}_b - d^{neg}_b + m) \\cdot 1[t_b \\ge \\theta], \\qquad
    L_{trip} = \\frac{\\sum_b t_b \\, k_b}{\\sum_b k_b + 10^{-8}}

    L = \\operatorname{mean}(\\hat\\epsilon^{pos} - y)^2 + \\lambda(s) \\, L_{trip}, \\qquad
    \\lambda(s) = \\lambda \\cdot 1[s \\ge s_0]

- ``eps_pos``, ``eps_neg`` [B, C, H, W]: the UNet's predictions under the positive (rectified) and a negative
  instruction, from the **same** noisy latent, timestep and image conditioning (the trainer runs both as one batch
  of 2B). ``y`` [B, C, H, W]: the target, the noise for epsilon prediction or ``scheduler.get_velocity(z0, eps, t)``
  for v-prediction (:func:`denoising_target`).
- Distances are per-sample **means** over C x H x W (typical values 0.05-0.2), hence the tiny margin ``m`` = 5e-4.
- ``k_b`` [B]: which samples enter the triplet term (:func:`triplet_mask`); ``theta`` = 0 makes the threshold a
  no-op; ``s``: the optimizer step (global by default, see ``TripletEditConfig.start_step_counter``).
- Minimising ``L_trip`` pushes ``d_neg`` up (a repulsive gradient on ``eps_neg`` only) and ``d_pos`` down, until
  ``d_neg >= d_pos + m``. With ``stop_pos_grad`` the triplet term sees ``eps_pos.detach()``: only the MSE then
  moves the positive branch. When ``eps_neg == eps_pos`` (identical instructions, or both conditions dropped)
  ``t_b = m`` with zero gradient.

Per-sample, so nothing is gathered across ranks: each rank averages its own masked samples (as the reference code
does per GPU) and DDP averages the ranks' gradients. Li et al., "SuperEdit: Rectifying and Facilitating Supervision
for Instruction-Based Image Editing", ICCV 2025 (arXiv:2505.02370); reference code ``bytedance/SuperEdit``
``superedit/instruct_pix2pix/train_sd15.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput

NAME = "superedit"
PAPER = "https://arxiv.org/abs/2505.02370"
CITATION = """@inproceedings{li2025superedit,
  title = {SuperEdit: Rectifying and Facilitating Supervision for Instruction-Based Image Editing},
  author = {Li, Ming and Gu, Xin and Chen, Fan and Xing, Xiaoying and Wen, Longyin and Chen, Chen and Zhu, Sijie},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year = {2025},
}"""
MASK_MODES = ("official", "both_available")
PREDICTION_TYPES = ("epsilon", "v_prediction")


class ConditioningDropout(NamedTuple):
    """Which samples lost their text / image conditioning this step: two bool tensors [B]."""

    text_dropped: torch.Tensor
    image_dropped: torch.Tensor


def conditioning_dropout(random_p: torch.Tensor, probability: float) -> ConditioningDropout:
    """InstructPix2Pix's dropout for classifier-free guidance, from one uniform draw ``r`` [B] per sample.

    With ``p = probability``: ``r < p`` drops the text only, ``p <= r < 2p`` both, ``2p <= r < 3p`` the image only,
    otherwise nothing (diffusers ``examples/instruct_pix2pix/train_instruct_pix2pix.py``). The trainer applies the
    same masks to the positive and the negative branch.
    """
    text_dropped = random_p < 2 * probability
    image_dropped = (random_p >= probability) & (random_p < 3 * probability)
    return ConditioningDropout(text_dropped, image_dropped)


def triplet_mask(dropout: ConditioningDropout, mode: str = "official") -> torch.Tensor:
    """``k`` [B] (float 0/1): the samples that enter the triplet term.

    ``"official"`` reproduces the reference code, ``k = 1 - text_dropped * image_kept``: only "text dropped, image
    kept" samples leave; samples with both conditions dropped stay and add the constant ``m`` with zero gradient.
    ``"both_available"`` is the stricter reading of the code's comment: text kept and image kept.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"triplet_mask_mode must be one of {MASK_MODES}, got {mode!r}.")
    text_kept, image_kept = ~dropout.text_dropped, ~dropout.image_dropped
    keep = text_kept | dropout.image_dropped if mode == "official" else text_kept & image_kept
    return keep.float()


def denoising_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet must predict [B, C, H, W]: ``noise`` (epsilon) or ``scheduler.get_velocity(z0, noise, t)``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")


def per_sample_distance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d_b = mean_{c,h,w} (prediction_b - target_b)^2`` [B] in fp32, for [B, C, H, W] inputs."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def triplet_term(
    d_pos: torch.Tensor, d_neg: torch.Tensor, mask: torch.Tensor, margin: float, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_trip, t)``: the masked mean of ``t_b = relu(d_pos - d_neg + m) * 1[t_b >= threshold]`` and ``t`` [B].

    ``L_trip`` is 0 (with a graph) when no sample is in the mask.
    """
    per_sample = F.relu(d_pos - d_neg + margin)
    per_sample = per_sample * (per_sample >= threshold)
    return (per_sample * mask).sum() / (mask.sum() + 1e-8), per_sample


class SuperEditTripletLoss(ContrastiveObjective):
    """``L_mse + lambda(step) * L_trip`` over the UNet's noise predictions (formulas in the module docstring).

    Args:
        margin: ``m`` between the per-sample mean distances (official script: 5e-4; its argparse default is 0.02).
        weight: ``lambda`` once the term is on (official: 1.0; 0 gives plain InstructPix2Pix).
        start_step: ``s_0``, the first step with the term on (official: 2000).
        threshold: ``theta``, zero out ``t_b`` below it (official: 0, a no-op).
        stop_pos_grad: detach ``eps_pos`` inside the triplet term (official: off).

    Inputs: ``forward(outputs, batch)`` with ``outputs = {"positive": [B, C, H, W], "negative": [B, C, H, W] or
    None}`` and ``batch = {"target": [B, C, H, W], "triplet_mask": [B] (0/1), "step": int}``. Without a negative
    prediction, or before ``start_step``, the loss is exactly the InstructPix2Pix MSE. Logs ``mse_loss``, and with
    a negative ``triplet_loss``, ``d_pos``, ``d_neg`` (means over the batch) and ``frac_active = mean(t_b > 0)``.
    """

    name = NAME
    paper = PAPER
    citation = CITATION
    required_columns = ("positive",)
    supports_gradient_cache = False

    def __init__(
        self,
        margin: float = 5e-4,
        weight: float = 1.0,
        start_step: int = 2000,
        threshold: float = 0.0,
        stop_pos_grad: bool = False,
    ) -> None:
        super().__init__()
        for option, value in (("margin", margin), ("weight", weight), ("start_step", start_step)):
            if value < 0:
                raise ValueError(f"{option} must be >= 0, got {value}.")
        self.margin = margin
        self.weight = weight
        self.start_step = start_step
        self.threshold = threshold
        self.stop_pos_grad = stop_pos_grad

    def weight_at(self, step: int) -> float:
        """``lambda(step)``: ``weight`` from ``start_step`` on, 0 before."""
        return self.weight if step >= self.start_step else 0.0

    def forward(self, outputs: dict[str, torch.Tensor | None], batch: dict) -> ObjectiveOutput:
        positive, negative, target = outputs["positive"], outputs.get("negative"), batch["target"]
        mse = F.mse_loss(positive.float(), target.float())
        logs = {"mse_loss": mse.detach()}
        weight = self.weight_at(batch["step"])
        if negative is None or weight == 0:
            return ObjectiveOutput(mse, logs)
        d_pos = per_sample_distance(positive.detach() if self.stop_pos_grad else positive, target)
        d_neg = per_sample_distance(negative, target)
        triplet, per_sample = triplet_term(d_pos, d_neg, batch["triplet_mask"], self.margin, self.threshold)
        logs.update(
            triplet_loss=triplet.detach(),
            d_pos=d_pos.detach().mean(),
            d_neg=d_neg.detach().mean(),
            frac_active=(per_sample.detach() > 0).float().mean(),
        )
        return ObjectiveOutput(mse + weight * triplet, logs)

    def get_config_dict(self) -> dict:
        return {
            "margin": self.margin,
            "weight": self.weight,
            "start_step": self.start_step,
            "threshold": self.threshold,
            "stop_pos_grad": self.stop_pos_grad,
        }
