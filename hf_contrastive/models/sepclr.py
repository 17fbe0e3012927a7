"""SepCLR's two encoders: a common and a salient encoder, each with a projector, over vectors or images.

``SepCLRModel.embed_column(column, features)`` returns ``{"embedding": common projection [B, D_c], "salient":
salient projection [B, D_s]}``, the contract of :class:`~hf_contrastive.trainers.multimodal.MultiModalTrainer`
(which names them ``column`` and ``column.salient`` for :class:`~hf_contrastive.objectives.sepclr.SepCLRLoss`).
The probes use the encoders' outputs before the projectors (:meth:`SepCLRModel.representations`), as the paper does.

Encoders (``encoder``): ``"mlp"`` (inputs flattened: vectors ``features["values"]`` [B, d] or images
``features["pixel_values"]`` [B, C, H, W]) with ``num_layers`` ReLU layers of ``hidden_dim``; ``"conv"`` (images) a
small CNN with three 3x3 convolutions (32, 64, 128 channels, max-pooling between) and global average pooling; a
stand-in for the paper's CIFAR ResNet-18 that fits CPU runs. Projector: ``Linear(d, projector_hidden) -> norm ->
ReLU -> Linear(projector_hidden, d)`` with ``projector_norm`` ``"batch"`` (the paper's), ``"layer"`` or ``"none"``;
BatchNorm's statistics depend on the rows a forward sees, so DDP and gradient-cache runs equal the single-process
run only with ``"layer"`` or ``"none"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

ENCODERS = ("mlp", "conv")
PROJECTOR_NORMS = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, "none": lambda width: nn.Identity()}


class SepCLRConfig(PretrainedConfig):
    """Sizes of SepCLR's encoders and projectors.

    Args:
        input_dim: features of a vector input, or ``C * H * W`` of an image for the ``"mlp"`` encoder.
        num_channels: image channels (``"conv"`` encoder).
        encoder: ``"mlp"`` or ``"conv"``.
        hidden_dim / num_layers: width and depth of the ``"mlp"`` encoder.
        common_dim / salient_dim: sizes of the common and salient representations (paper: 32 / 32).
        projector_hidden: hidden width of both projectors (paper: 128).
        projector_norm: ``"batch"`` (paper), ``"layer"`` or ``"none"``.
    """

    model_type = "sepclr"

    def __init__(
        self,
        input_dim: int | None = None,
        num_channels: int = 1,
        encoder: str = "mlp",
        hidden_dim: int = 256,
        num_layers: int = 2,
        common_dim: int = 32,
        salient_dim: int = 32,
        projector_hidden: int = 128,
        projector_norm: str = "batch",
        **kwargs,
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}.")
        if encoder == "mlp" and input_dim is None:
            raise ValueError("The 'mlp' encoder needs input_dim (features per row, C*H*W for images).")
        if projector_norm not in PROJECTOR_NORMS:
            raise ValueError(f"projector_norm must be one of {sorted(PROJECTOR_NORMS)}, got {projector_norm!r}.")
        self.input_dim = input_dim
        self.num_channels = num_channels
        self.encoder = encoder
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.common_dim = common_dim
        self.salient_dim = salient_dim
        self.projector_hidden = projector_hidden
        self.projector_norm = projector_norm
        super().__init__(**kwargs)


@dataclass
class SepCLROutput(ModelOutput):
    """Representations (pre-projector, for probes) and projections (for the loss) of one batch."""

    common_rep: torch.Tensor | None = None
    salient_rep: torch.Tensor | None = None
    common_projection: torch.Tensor | None = None
    salient_projection: torch.Tensor | None = None


def mlp_encoder(config: SepCLRConfig, out_dim: int) -> nn.Module:
    layers, width = [nn.Flatten()], config.input_dim
    for _ in range(config.num_layers):
        layers += [nn.Linear(width, config.hidden_dim), nn.ReLU()]
        width = config.hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def conv_encoder(config: SepCLRConfig, out_dim: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]

    return nn.Sequential(
        *block(config.num_channels, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, out_dim),
    )


def projector(config: SepCLRConfig, dim: int) -> nn.Module:
    hidden = config.projector_hidden
    return nn.Sequential(
        nn.Linear(dim, hidden), PROJECTOR_NORMS[config.projector_norm](hidden), nn.ReLU(), nn.Linear(hidden, dim)
    )


class SepCLRModel(PreTrainedModel):
    """Common and salient encoders with projectors (SepCLR, arXiv:2402.11928); see the module docstring."""

    config_class = SepCLRConfig
    base_model_prefix = "sepclr"
    main_input_name = "values"

    def __init__(self, config: SepCLRConfig) -> None:
        super().__init__(config)
        make_encoder = mlp_encoder if config.encoder == "mlp" else conv_encoder
        self.common_encoder = make_encoder(config, config.common_dim)
        self.salient_encoder = make_encoder(config, config.salient_dim)
        self.common_projector = projector(config, config.common_dim)
        self.salient_projector = projector(config, config.salient_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation (the modules reset themselves at construction)."""

    @staticmethod
    def inputs_of(features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The input tensor of a collated column: ``pixel_values`` [B, C, H, W] or ``values`` [B, d]."""
        for name in ("pixel_values", "values"):
            if name in features:
                return features[name]
        raise ValueError(f"SepCLRModel reads 'pixel_values' or 'values' features, got {sorted(features)}.")

    def representations(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Common ``[B, D_c]`` and salient ``[B, D_s]`` representations before the projectors (for probes)."""
        return self.common_encoder(inputs), self.salient_encoder(inputs)

    def forward(self, values: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> SepCLROutput:
        """Representations and projections of ``values`` [B, d] or ``pixel_values`` [B, C, H, W]."""
        inputs = pixel_values if pixel_values is not None else values
        if inputs is None:
            raise ValueError("SepCLRModel.forward needs values [B, d] or pixel_values [B, C, H, W].")
        common, salient = self.representations(inputs)
        return SepCLROutput(common, salient, self.common_projector(common), self.salient_projector(salient))

    def embed_column(self, column: str, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"embedding": common projection [B, D_c], "salient": salient projection [B, D_s]}`` of one column."""
        common, salient = self.representations(self.inputs_of(features))
        return {"embedding": self.common_projector(common), "salient": self.salient_projector(salient)}
