"""AutoTCL: a dilated-convolution time-series encoder with a learned, factorised augmentation network.

``AutoTCLModel`` holds three parts (Luo et al., ICLR 2024; architecture of the released ``AutoTCL_CoST.py``):

- ``encoder`` f: ``Linear(C -> hidden)``, a TS2Vec dilated-convolution stack (``depth`` residual blocks of two
  kernel-3 convolutions with dilation ``2^i``, GELU, then one block to ``repr_dims``), dropout, and CoST's trend head:
  the mean of causal convolutions with kernels ``kernels`` (1, 2, ..., 128). Output [B, T, D] per step.
- ``augmenter``: a small encoder of the same family (``aug_depth``, ``aug_hidden_dims`` -> ``aug_dim``) and two heads,
  ``w_h = sigmoid(mask_head(e))`` (mask probabilities h(x)) and ``g = sigmoid(scale_head(e))`` (the invertible
  scale g(x)), both [B, T, C]. The view is ``v = g * m * x`` with ``m`` a hard-concrete sample of ``w_h``
  (:func:`hard_concrete_mask`; ``w_h``, a probability, is used as the logit, as in the code).
- ``averaged_encoder``: the equal-weight (SWA) average of every encoder iterate, the initial one included
  (``n_averaged`` buffer, saved). :meth:`encode` uses it, as AutoTCL evaluates with the averaged model.

``legacy_argument_order=True`` reproduces the released code's positional-argument slip: in the augmenter step the
encoder returns its raw dilated-convolution features (no trend head); the encoder step and evaluation use the full
output. The encoder's input-masking modes never apply in that code and are left out here. The standardisation
statistics of the training split travel in ``config.scaler`` (``StandardScaler.to_dict()``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..data.timeseries import StandardScaler
from ..objectives.autotcl import AutoTCLAugmenterLoss, AutoTCLEncoderLoss

MODES = ("encoder", "augmenter")
AUGMENTATIONS = ("learned", "fixed")


class AutoTCLConfig(PretrainedConfig):
    """Sizes and loss weights of AutoTCL (defaults: the ETTh1 univariate preset, ``repr_dims`` 320, depth 10).

    Args:
        input_dims: channels C of ``past_values``.
        repr_dims / hidden_dims / depth / kernels / dropout: the encoder (see the module docstring).
        aug_hidden_dims / aug_depth / aug_dim: the augmenter's encoder.
        gamma_zeta / gumbel_bias / hard_mask: the hard-concrete mask sampler.
        local_weight / local_segments / contrastive_temperature: the encoder loss (tau; not ``temperature``, which
            transformers reserves for generation).
        aug_mode / reg_weight / regular_weight / mask_threshold: the augmenter loss.
        ratio_step: one augmenter update every ``ratio_step`` encoder updates; meta_lr: its AdamW learning rate.
        legacy_argument_order: the augmenter step reads raw convolution features (the released code's behaviour).
        augmentation: ``"learned"`` (AutoTCL) or ``"fixed"``, the baseline with the same factorisation but no
            parameters: ``m ~ Bernoulli(fixed_keep_probability)``, ``g ~ U(0.5, 1)`` per element (the trainer then
            skips the augmenter step).
        scaler: ``StandardScaler.to_dict()`` of the training split, or None.
    """

    model_type = "autotcl"

    def __init__(
        self,
        input_dims: int = 1,
        repr_dims: int = 320,
        hidden_dims: int = 64,
        depth: int = 10,
        kernels: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
        dropout: float = 0.1,
        aug_hidden_dims: int = 64,
        aug_depth: int = 1,
        aug_dim: int = 16,
        gamma_zeta: float = 0.05,
        gumbel_bias: float = 0.05,
        hard_mask: bool = True,
        local_weight: float = 0.3,
        local_segments: int = 16,
        contrastive_temperature: float = 1.0,
        aug_mode: str = "pri",
        reg_weight: float = 0.003,
        regular_weight: float = 0.0,
        mask_threshold: float = 0.4,
        ratio_step: int = 1,
        meta_lr: float = 0.01,
        legacy_argument_order: bool = True,
        augmentation: str = "learned",
        fixed_keep_probability: float = 0.7,
        scaler: dict | None = None,
        **kwargs,
    ) -> None:
        sizes = {"input_dims": input_dims, "repr_dims": repr_dims, "hidden_dims": hidden_dims, "aug_dim": aug_dim}
        sizes.update({"aug_hidden_dims": aug_hidden_dims, "ratio_step": ratio_step})
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad or depth < 0 or aug_depth < 0 or not kernels or min(kernels) < 1:
            raise ValueError(f"AutoTCLConfig sizes must be >= 1 (depths >= 0, kernels non-empty): {bad or kernels}.")
        if not 0 < gumbel_bias < 0.5 or gamma_zeta < 0:
            raise ValueError(f"Need 0 < gumbel_bias < 0.5 and gamma_zeta >= 0, got {gumbel_bias}, {gamma_zeta}.")
        if scaler is not None and len(StandardScaler.from_dict(scaler).mean) != input_dims:
            raise ValueError(f"config.scaler has {len(scaler['mean'])} channels but input_dims is {input_dims}.")
        self.input_dims, self.repr_dims, self.hidden_dims, self.depth = input_dims, repr_dims, hidden_dims, depth
        self.kernels, self.dropout = list(kernels), dropout
        self.aug_hidden_dims, self.aug_depth, self.aug_dim = aug_hidden_dims, aug_depth, aug_dim
        self.gamma_zeta, self.gumbel_bias, self.hard_mask = gamma_zeta, gumbel_bias, hard_mask
        self.local_weight, self.local_segments = local_weight, local_segments
        self.contrastive_temperature = contrastive_temperature
        self.aug_mode, self.reg_weight, self.regular_weight = aug_mode, reg_weight, regular_weight
        self.mask_threshold, self.ratio_step, self.meta_lr = mask_threshold, ratio_step, meta_lr
        if augmentation not in AUGMENTATIONS or not 0 < fixed_keep_probability <= 1:
            raise ValueError(
                f"augmentation must be one of {AUGMENTATIONS} and 0 < fixed_keep_probability <= 1, got "
                f"{augmentation!r}, {fixed_keep_probability}."
            )
        self.legacy_argument_order, self.scaler = legacy_argument_order, scaler
        self.augmentation, self.fixed_keep_probability = augmentation, fixed_keep_probability
        super().__init__(**kwargs)


@dataclass
class AutoTCLOutput(ModelOutput):
    """One step: the loss of ``mode``, the representations of x and v [B, T, D], the mask m and its probability
    w_h and the scale g [B, T, C]."""

    loss: torch.Tensor | None = None
    repr_x: torch.Tensor | None = None
    repr_v: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    mask_probability: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    logs: dict | None = None


# ------------------------------------------------------------------------------------------------------ encoder
class SamePadConv(nn.Module):
    """TS2Vec's dilated Conv1d whose output keeps the input length T (one trailing step cut for even fields)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        receptive_field = (kernel_size - 1) * dilation + 1
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=receptive_field // 2, dilation=dilation)
        self.remove = 1 if receptive_field % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out[:, :, : out.shape[-1] - self.remove]


class ConvBlock(nn.Module):
    """``x + conv2(gelu(conv1(gelu(x))))`` with a 1x1 projection of the residual when widths differ or at the end."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, final: bool) -> None:
        super().__init__()
        self.conv1 = SamePadConv(in_channels, out_channels, 3, dilation)
        self.conv2 = SamePadConv(out_channels, out_channels, 3, dilation)
        needs_projection = in_channels != out_channels or final
        self.projector = nn.Conv1d(in_channels, out_channels, 1) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.projector is None else self.projector(x)
        return self.conv2(F.gelu(self.conv1(F.gelu(x)))) + residual


class TrendEncoder(nn.Module):
    """CoST's trend encoder: input Linear, dilated convolutions, dropout, mean of causal convolutions per kernel.

    ``forward(x [B, T, C], raw=False)`` -> [B, T, D]; ``raw=True`` returns the dilated-convolution features.
    """

    def __init__(
        self, input_dims: int, hidden_dims: int, depth: int, output_dims: int, kernels: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        widths = [hidden_dims] * depth + [output_dims]
        self.input_fc = nn.Linear(input_dims, hidden_dims)
        self.blocks = nn.Sequential(
            *(
                ConvBlock(widths[i - 1] if i else hidden_dims, widths[i], 2**i, final=i == len(widths) - 1)
                for i in range(len(widths))
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.kernels = list(kernels)
        self.trend_convs = nn.ModuleList(nn.Conv1d(output_dims, output_dims, k, padding=k - 1) for k in self.kernels)

    def forward(self, x: torch.Tensor, raw: bool = False) -> torch.Tensor:
        steps = x.shape[1]
        features = self.dropout(self.blocks(self.input_fc(x).transpose(1, 2)))  # [B, D, T]
        if raw:
            return features.transpose(1, 2)
        # padding k-1 on both sides; keeping the first T outputs makes each one causal
        trend = torch.stack([conv(features)[..., :steps] for conv in self.trend_convs]).mean(dim=0)
        return trend.transpose(1, 2)


def hard_concrete_mask(
    logits: torch.Tensor,
    gumbel_bias: float,
    gamma_zeta: float,
    hard: bool,
    noisy: bool = True,
    temperature: float = 1.0,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample AutoTCL's mask from logits [B, T, C] (the code passes the sigmoid probabilities w_h as logits).

    .. math:: u \\sim U(b, 1-b),\\ s = \\sigma((\\log u - \\log(1-u) + w) / t),\\
        m = \\mathrm{clip}(s (1 + \\gamma) - \\gamma, 0, 1)

    (``s = sigma(w)`` when not ``noisy``); with ``hard`` the forward value is ``1[m > 0.5]`` and the gradient is
    that of m (straight-through). ``uniform``: a fixed u of the same shape, for tests.
    """
    if noisy:
        if uniform is None:
            uniform = (2 * gumbel_bias - 1) * torch.rand_like(logits) + (1 - gumbel_bias)
        logits = logits + torch.log(uniform) - torch.log1p(-uniform)
    stretched = (torch.sigmoid(logits / temperature) * (1 + gamma_zeta) - gamma_zeta).clamp(0.0, 1.0)
    if not hard:
        return stretched
    return stretched + ((stretched > 0.5).to(stretched.dtype) - stretched).detach()


class Augmenter(nn.Module):
    """AutoTCL's augmentation network: ``(w_h, g) = (sigmoid(mask_head(e)), sigmoid(scale_head(e)))``, e = f_aug(x)."""

    def __init__(self, config: AutoTCLConfig) -> None:
        super().__init__()
        self.encoder = TrendEncoder(
            config.input_dims, config.aug_hidden_dims, config.aug_depth, config.aug_dim, config.kernels, 0.0
        )
        self.mask_head = nn.Linear(config.aug_dim, config.input_dims)
        self.scale_head = nn.Linear(config.aug_dim, config.input_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return torch.sigmoid(self.mask_head(features)), torch.sigmoid(self.scale_head(features))


# ------------------------------------------------------------------------------------------------------ model
class AutoTCLModel(PreTrainedModel):
    """AutoTCL (arXiv:2402.10434): encoder, augmentation network and the averaged encoder; see the module docstring.

    ``forward(past_values [B, T, C], mode)`` returns the loss of one phase: ``"encoder"`` (the view is computed
    without gradient to the augmenter) or ``"augmenter"`` (the encoder is used in eval mode; the trainer steps only
    the augmenter's parameters with it).
    """

    config_class = AutoTCLConfig
    base_model_prefix = "autotcl"
    main_input_name = "past_values"

    def __init__(self, config: AutoTCLConfig) -> None:
        super().__init__(config)
        self.encoder = TrendEncoder(
            config.input_dims, config.hidden_dims, config.depth, config.repr_dims, config.kernels, config.dropout
        )
        self.augmenter = Augmenter(config)
        self.averaged_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.register_buffer("n_averaged", torch.tensor(1, dtype=torch.long))  # the initial weights count
        self.encoder_objective = AutoTCLEncoderLoss(
            config.contrastive_temperature, config.local_weight, config.local_segments
        )
        self.augmenter_objective = AutoTCLAugmenterLoss(
            config.aug_mode,
            config.reg_weight,
            config.regular_weight,
            config.mask_threshold,
            config.contrastive_temperature,
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation (the modules reset themselves at construction)."""

    @property
    def scaler(self) -> StandardScaler | None:
        """The training split's standardisation (``config.scaler``), or None."""
        return None if self.config.scaler is None else StandardScaler.from_dict(self.config.scaler)

    def augment(self, past_values: torch.Tensor, noisy: bool = True) -> AutoTCLOutput:
        """The view ``v = g * m * x`` of x [B, T, C] with its mask, mask probability and scale (all [B, T, C])."""
        config = self.config
        if config.augmentation == "fixed":
            mask_probability = torch.full_like(past_values, config.fixed_keep_probability)
            mask, scale = torch.bernoulli(mask_probability), 0.5 + 0.5 * torch.rand_like(past_values)
            return AutoTCLOutput(
                repr_v=scale * mask * past_values, mask=mask, mask_probability=mask_probability, scale=scale
            )
        mask_probability, scale = self.augmenter(past_values)
        mask = hard_concrete_mask(mask_probability, config.gumbel_bias, config.gamma_zeta, config.hard_mask, noisy)
        return AutoTCLOutput(
            repr_v=scale * mask * past_values, mask=mask, mask_probability=mask_probability, scale=scale
        )

    def forward(self, past_values: torch.Tensor, mode: str = "encoder") -> AutoTCLOutput:
        """The loss of one phase on a batch [B, T, C] (see the class docstring)."""
        self._check_input(past_values)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if mode == "encoder":
            with torch.no_grad():
                augmented = self.augment(past_values)
            view = augmented.repr_v
            repr_x, repr_v = self.encoder(past_values), self.encoder(view)
            output = self.encoder_objective({"original": repr_x, "view": repr_v})
        else:
            augmented = self.augment(past_values)
            raw = self.config.legacy_argument_order and self.config.aug_mode == "pri"
            repr_x, repr_v = self.encoder(past_values, raw=raw), self.encoder(augmented.repr_v, raw=raw)
            embeddings = {"original": repr_x, "view": repr_v, "mask_probability": augmented.mask_probability}
            output = self.augmenter_objective(embeddings)
        return AutoTCLOutput(
            loss=output.loss,
            repr_x=repr_x,
            repr_v=repr_v,
            mask=augmented.mask,
            mask_probability=augmented.mask_probability,
            scale=augmented.scale,
            logs=output.logs,
        )

    @torch.no_grad()
    def update_average(self) -> None:
        """Fold the current encoder into the equal-weight average: ``avg += (theta - avg) / (n + 1)``, ``n += 1``."""
        count = self.n_averaged.item()
        for averaged, current in zip(self.averaged_encoder.parameters(), self.encoder.parameters()):
            averaged.add_((current.detach() - averaged) / (count + 1))
        self.n_averaged += 1

    @torch.no_grad()
    def encode(self, past_values: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        """Per-step representations [B, T, D] of standardised x [B, T, C], from the averaged encoder (eval mode)."""
        self._check_input(past_values)
        encoder = self.averaged_encoder if averaged else self.encoder
        was_training = encoder.training
        encoder.eval()
        try:
            return encoder(past_values)
        finally:
            encoder.train(was_training)

    def embed(self, past_values: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        """One vector per series [B, D]: the time maximum of :meth:`encode` (TS2Vec's instance representation)."""
        return self.encode(past_values, averaged).max(dim=1).values

    def _check_input(self, past_values: torch.Tensor) -> None:
        if past_values.ndim != 3 or past_values.shape[-1] != self.config.input_dims:
            raise ValueError(
                f"AutoTCLModel takes past_values [B, T, {self.config.input_dims}] (config.input_dims), got "
                f"{tuple(past_values.shape)}."
            )
        if not torch.isfinite(past_values).all():
            raise ValueError("past_values contains NaN or infinite values; the series must be complete.")
