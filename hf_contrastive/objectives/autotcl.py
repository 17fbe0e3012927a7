"""AutoTCL's two losses: the encoder's global + local InfoNCE and the augmenter's information-preserving (PRI) loss.

Notation (Luo et al., ICLR 2024, arXiv 2402.10434; formulas as in the released ``AutoTCL_CoST.py``): a batch
``x`` [B, T, C], its learned view ``v = g(x) * h(x) * x``, per-step representations ``r_x = f(x)``, ``r_v = f(v)``
[B, T, D] and the augmenter's mask probabilities ``w_h`` [B, T, C].

Encoder loss (augmenter fixed)::

    L_enc = InfoNCE_global(r_x, r_v) + local_weight * L_local(r_x)

Augmenter loss, "pri" mode (encoder fixed)::

    L_aug = MMD(maxpool_T f(x), maxpool_T f(v)) + reg_weight * ReLU(mean_{b,t} sum_c w_h - mask_threshold)
            + regular_weight * TemporalConsistency(w_h)

"adversarial" mode: ``L_aug = -InfoNCE_global(r_x, r_v)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput

AUTOTCL_CITATION = """@inproceedings{luo2024autotcl,
  title={Parametric Augmentation for Time Series Contrastive Learning},
  author={Luo, Xu and Ding, Hao and others},
  booktitle={International Conference on Learning Representations},
  year={2024}
}"""
AUG_MODES = ("pri", "adversarial")
MMD_KERNELS = 5
MMD_MULTIPLIER = 2.0


def max_pool_time(representations: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D]: the maximum over time of each feature."""
    return representations.max(dim=1).values


def global_infonce(
    original: torch.Tensor, view: torch.Tensor, temperature: float = 1.0, gather=None, offset: int = 0
) -> torch.Tensor:
    """One-direction cross-view InfoNCE of time-max-pooled, L2-normalised representations.

    .. math:: z = \\mathrm{normalise}(\\max_t r), \\quad
        L = \\frac{1}{B}\\sum_i -\\log \\frac{e^{z^x_i \\cdot z^v_i / \\tau}}{\\sum_j e^{z^x_i \\cdot z^v_j / \\tau}}

    original, view: [B, T, D]. ``gather`` (optional) returns every rank's view rows [W*B, D] with gradient;
    ``offset`` is this rank's first row among them.
    """
    z_x = F.normalize(max_pool_time(original), dim=-1)
    z_v = F.normalize(max_pool_time(view), dim=-1)
    candidates = gather(z_v) if gather is not None else z_v
    logits = z_x @ candidates.T / temperature  # [B, W*B]
    labels = torch.arange(len(z_x), device=z_x.device) + offset
    return F.cross_entropy(logits, labels)


def local_segment_masks(segments: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoTS's positive and negative masks over k segments: ``([k, k] positives, [k, k] negatives)``.

    Positive of segment i: i+1 (the last segment: k-2). Negatives: all but i-1, i, i+1, and also not 2 for row 0
    and not k-3 for the last row, so each row has k-3 negatives.
    """
    k = segments
    positives = torch.diag(torch.ones(k - 1, dtype=torch.bool, device=device), diagonal=1)
    positives[k - 1, k - 2] = True
    excluded = torch.eye(k, dtype=torch.bool, device=device)
    excluded |= torch.diag(torch.ones(k - 1, dtype=torch.bool, device=device), 1)
    excluded |= torch.diag(torch.ones(k - 1, dtype=torch.bool, device=device), -1)
    excluded[0, 2] = excluded[-1, -3] = True
    return positives, ~excluded


def local_infonce(
    original: torch.Tensor, segments: int = 16, temperature: float = 1.0, start: int | None = None
) -> torch.Tensor:
    """InfoTS's local contrast between neighbouring segments of the FIRST series of the batch (as the code does).

    ``r = normalise_D(original[0])`` [T, D]; a window of ``k * floor(T / k)`` steps (random ``start`` unless given)
    is cut into k segments, each max-pooled to ``q_i``; with ``S = Q Q^T``,

    .. math:: L = \\frac{1}{k}\\sum_i -\\log \\frac{e^{S_{i,p(i)}/\\tau}}{e^{S_{i,p(i)}/\\tau}
        + \\sum_{j \\in N(i)} e^{S_{ij}/\\tau}}

    with p and N from :func:`local_segment_masks`. Returns 0 when ``T < k`` (segments would be empty).
    original: [B, T, D].
    """
    steps = original.shape[1]
    length = steps // segments
    if length < 1 or segments < 4:
        return original.new_zeros(())
    window = length * segments
    if start is None:
        start = int(torch.randint(0, steps - window + 1, ()).item())
    series = F.normalize(original[0], dim=-1)[start : start + window]
    pooled = series.reshape(segments, length, -1).max(dim=1).values  # [k, D]
    similarity = pooled @ pooled.T / temperature
    positives, negatives = local_segment_masks(segments, original.device)
    logits = torch.cat(
        [similarity[positives].view(segments, 1), similarity[negatives].view(segments, segments - 3)], dim=1
    )
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def gaussian_mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernels: int = MMD_KERNELS,
    multiplier: float = MMD_MULTIPLIER,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Biased MMD^2 with a sum of Gaussian kernels whose bandwidth follows the data (no gradient through it).

    .. math:: k(a, b) = \\sum_{i=0}^{4} \\exp(-\\lVert a-b \\rVert^2 / (\\sigma\\, 2^i)),\\quad
        \\sigma = \\frac{\\mathrm{mean}_{a \\ne b} \\lVert a-b \\rVert^2}{2^{\\lfloor 5/2 \\rfloor}}

    and ``MMD = mean(K_xx + K_yy - K_xy - K_yx)``. x, y: [B, D]. Symmetric, 0 for identical batches. ``bandwidth``
    fixes sigma instead (for tests).
    """
    if x.shape != y.shape:
        raise ValueError(f"gaussian_mmd needs two batches of equal shape, got {tuple(x.shape)}, {tuple(y.shape)}.")
    total = torch.cat([x, y])
    distances = torch.cdist(total, total).pow(2)  # [2B, 2B]
    n = len(total)
    if bandwidth is None:
        bandwidth = distances.detach().sum() / (n * n - n)
        bandwidth = bandwidth.clamp_min(torch.finfo(distances.dtype).tiny) / multiplier ** (kernels // 2)
    kernel = sum(torch.exp(-distances / (bandwidth * multiplier**i)) for i in range(kernels))
    b = len(x)
    return (kernel[:b, :b] + kernel[b:, b:] - kernel[:b, b:] - kernel[b:, :b]).mean()


def mask_sparsity(mask_probability: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """``ReLU(mean_{b,t} sum_c w_h - threshold)``: zero while the kept mask is small. w_h: [B, T, C]."""
    return F.relu(mask_probability.sum(dim=-1).mean() - threshold)


def temporal_consistency(mask_probability: torch.Tensor, anchor: int | None = None, other: int | None = None):
    """AutoTCL's smoothness penalty on the mask at a random anchor time t0 (and a second time t1).

    ``|w[t0] - w[t0-1]| + |w[t0] - w[t0+1]|`` plus ``|w[t0] - w[t1]|`` if ``|t1 - t0| > 1`` else
    ``1 - |w[t0] - w[t1]|``, averaged over batch and channels. w: [B, T, C], T >= 4; t0 in [1, T-3], t1 in [0, T).
    """
    steps = mask_probability.shape[1]
    if steps < 4:
        return mask_probability.new_zeros(())
    anchor = int(torch.randint(1, steps - 2, ()).item()) if anchor is None else anchor
    other = int(torch.randint(0, steps, ()).item()) if other is None else other
    w = mask_probability
    smooth = (w[:, anchor] - w[:, anchor - 1]).abs() + (w[:, anchor] - w[:, anchor + 1]).abs()
    distance = (w[:, anchor] - w[:, other]).abs()
    far = distance if abs(other - anchor) > 1 else 1 - distance
    return (smooth + far).mean()


class AutoTCLEncoderLoss(ContrastiveObjective):
    """The encoder's loss: ``InfoNCE_global(r_x, r_v) + local_weight * L_local(r_x)`` (see the module docstring).

    ``embeddings``: ``{"original": r_x [B, T, D], "view": r_v [B, T, D]}``. The global term takes its negatives
    from every rank (B*W - 1 per anchor); the local term uses the first local series only, as the code does.
    """

    name = "autotcl"
    paper = "https://arxiv.org/abs/2402.10434"
    citation = AUTOTCL_CITATION
    required_columns = ("original", "view")

    def __init__(self, temperature: float = 1.0, local_weight: float = 0.3, local_segments: int = 16) -> None:
        super().__init__()
        if temperature <= 0 or local_weight < 0 or local_segments < 4:
            raise ValueError(
                f"Need temperature > 0, local_weight >= 0, local_segments >= 4; got {temperature}, {local_weight}, "
                f"{local_segments}."
            )
        self.temperature, self.local_weight, self.local_segments = temperature, local_weight, local_segments

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict | None = None) -> ObjectiveOutput:
        original, view = embeddings["original"], embeddings["view"]
        offset = self._local_offset(len(original))
        global_loss = global_infonce(original, view, self.temperature, self._gather, offset)
        local_loss = local_infonce(original, self.local_segments, self.temperature)
        loss = global_loss + self.local_weight * local_loss
        return ObjectiveOutput(loss, {"loss_global": global_loss.detach(), "loss_local": local_loss.detach()})

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "local_weight": self.local_weight,
            "local_segments": self.local_segments,
        }


class AutoTCLAugmenterLoss(ContrastiveObjective):
    """The augmenter's loss: PRI (MMD + mask sparsity + temporal consistency) or adversarial (-InfoNCE).

    ``embeddings``: ``{"original": f(x) [B, T, D], "view": f(v) [B, T, D], "mask_probability": w_h [B, T, C]}``.
    The MMD is per rank (a batch statistic, not an in-batch contrast); the adversarial InfoNCE gathers every rank's
    views, as the encoder loss it opposes does.
    """

    name = "autotcl_augmenter"
    paper = "https://arxiv.org/abs/2402.10434"
    citation = AUTOTCL_CITATION
    required_columns = ("original", "view", "mask_probability")

    def __init__(
        self,
        mode: str = "pri",
        reg_weight: float = 0.003,
        regular_weight: float = 0.0,
        mask_threshold: float = 0.4,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in AUG_MODES:
            raise ValueError(f"aug_mode must be one of {AUG_MODES}, got {mode!r}.")
        if reg_weight < 0 or regular_weight < 0:
            raise ValueError(f"reg_weight and regular_weight must be >= 0, got {reg_weight}, {regular_weight}.")
        self.mode, self.reg_weight, self.regular_weight = mode, reg_weight, regular_weight
        self.mask_threshold, self.temperature = mask_threshold, temperature

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict | None = None) -> ObjectiveOutput:
        original, view = embeddings["original"], embeddings["view"]
        if self.mode == "adversarial":  # the encoder's global term negated, over every rank's views alike
            loss = -global_infonce(original, view, self.temperature, self._gather, self._local_offset(len(original)))
            return ObjectiveOutput(loss, {"loss_adversarial": loss.detach()})
        mask_probability = embeddings["mask_probability"]
        mmd = gaussian_mmd(max_pool_time(original), max_pool_time(view))
        sparsity = mask_sparsity(mask_probability, self.mask_threshold)
        consistency = temporal_consistency(mask_probability) if self.regular_weight > 0 else mmd.new_zeros(())
        loss = mmd + self.reg_weight * sparsity + self.regular_weight * consistency
        logs = {"loss_mmd": mmd.detach(), "loss_sparsity": sparsity.detach(), "loss_consistency": consistency.detach()}
        return ObjectiveOutput(loss, logs)

    def get_config_dict(self) -> dict:
        return {
            "aug_mode": self.mode,
            "reg_weight": self.reg_weight,
            "regular_weight": self.regular_weight,
            "mask_threshold": self.mask_threshold,
        }
