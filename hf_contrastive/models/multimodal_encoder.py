"""MultiModalEncoder: one small encoder per vector modality, for Symile / pairwise CLIP on any number of modalities.

Each modality ``m`` with input size ``d_m`` gets ``MLP -> Linear -> LayerNorm`` (Symile-M3's head; the MLP may be
empty), so the model maps ``{m: [B, d_m]}`` to ``{m: [B, embedding_dim]}``. It follows the multimodal trainer's
model contract: ``embed_column(column, {"values": [B, d_m], "missing": [B]})``.

Missing modalities (Symile, Saporta et al. 2024, Sec. 5): the sample stays in the batch; its features are replaced
by a placeholder (``missing_fill``: the training-set mean, set with :meth:`MultiModalEncoder.fit_missing_fill`, or
zeros) and a learned embedding of the binary missing flag (``Embedding(2, missing_embedding_dim)``) is concatenated
to the input, so a missing input is out of distribution rather than a plausible value. The loss is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

MISSING_FILLS = ("mean", "zeros")


class MultiModalEncoderConfig(PretrainedConfig):
    """Config of a :class:`MultiModalEncoder`.

    Args:
        modality_dims: ``{modality: input size}``; the order is the modality order of ``forward``'s output.
        hidden_dims: sizes of the MLP's hidden layers (empty: a linear encoder, ``Linear -> LayerNorm``).
        embedding_dim: size of every modality's representation.
        activation: the MLP's activation (a ``transformers.activations`` name).
        layer_norm: end each encoder with a LayerNorm (the paper's heads do; the package's XOR toy does not).
        missing_embedding_dim: size ``h`` of the missing-flag embedding; 0 disables missing-modality handling.
        missing_fill: placeholder for the features of a missing input, ``"mean"`` (training mean) or ``"zeros"``.
    """

    model_type = "multimodal-encoder"

    def __init__(
        self,
        modality_dims: Mapping[str, int] | None = None,
        hidden_dims: list[int] | tuple[int, ...] = (),
        embedding_dim: int = 16,
        activation: str = "gelu",
        layer_norm: bool = True,
        missing_embedding_dim: int = 0,
        missing_fill: str = "mean",
        **kwargs,
    ) -> None:
        if missing_fill not in MISSING_FILLS:
            raise ValueError(f"missing_fill must be one of {MISSING_FILLS}, got {missing_fill!r}.")
        if activation not in ACT2FN:
            raise ValueError(f"activation must be a transformers activation name, got {activation!r}.")
        self.modality_dims = dict(modality_dims or {"a": 1, "b": 1, "c": 1})
        self.hidden_dims = list(hidden_dims)
        self.embedding_dim = embedding_dim
        self.activation = activation
        self.layer_norm = layer_norm
        self.missing_embedding_dim = missing_embedding_dim
        self.missing_fill = missing_fill
        super().__init__(**kwargs)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.modality_dims)


@dataclass
class MultiModalEncoderOutput(ModelOutput):
    """``embeddings``: one [B, embedding_dim] tensor per modality given, in the config's modality order."""

    embeddings: tuple[torch.FloatTensor, ...] | None = None


class ModalityEncoder(nn.Module):
    """``[values (missing rows -> fill), Embedding(missing flag)] -> MLP -> Linear -> LayerNorm`` for one modality."""

    def __init__(self, input_dim: int, config: MultiModalEncoderConfig) -> None:
        super().__init__()
        self.handles_missing = config.missing_embedding_dim > 0
        self.missing_embedding = nn.Embedding(2, config.missing_embedding_dim) if self.handles_missing else None
        self.register_buffer("fill_value", torch.zeros(input_dim))  # placeholder of missing rows, saved
        layers: list[nn.Module] = []
        width = input_dim + config.missing_embedding_dim
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), ACT2FN[config.activation]]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.embedding_dim)
        self.norm = nn.LayerNorm(config.embedding_dim) if config.layer_norm else nn.Identity()

    def forward(self, values: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """values [B, d] (any value, NaN included, on missing rows), missing [B] 0/1 -> [B, embedding_dim]."""
        values = values.to(self.head.weight.dtype)
        if self.handles_missing:
            flags = torch.zeros(len(values), dtype=torch.long, device=values.device) if missing is None else missing
            flags = flags.to(device=values.device, dtype=torch.long)
            values = torch.where(flags[:, None].bool(), self.fill_value.to(values.dtype), values)
            values = torch.cat([values, self.missing_embedding(flags).to(values.dtype)], dim=-1)
        elif missing is not None and bool(missing.any()):
            raise ValueError(
                "The batch flags missing inputs but the encoder was built with missing_embedding_dim=0; set "
                "missing_embedding_dim > 0 to train with missing modalities."
            )
        return self.norm(self.head(self.mlp(values)))


class MultiModalEncoder(PreTrainedModel):
    """One encoder per vector modality (see the module docstring); ``embed_column`` serves the multimodal trainer."""

    config_class = MultiModalEncoderConfig
    base_model_prefix = "multimodal_encoder"
    main_input_name = "values"

    def __init__(self, config: MultiModalEncoderConfig) -> None:
        super().__init__(config)
        self.encoders = nn.ModuleDict({m: ModalityEncoder(d, config) for m, d in config.modality_dims.items()})
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation: the 0.02-normal default of transformers starves tiny MLPs.
        if isinstance(module, nn.Linear | nn.Embedding | nn.LayerNorm):
            module.reset_parameters()

    def encoder(self, column: str) -> ModalityEncoder:
        """The encoder of ``column`` (a modality name); a ValueError names the known modalities otherwise."""
        if column not in self.encoders:
            raise ValueError(
                f"MultiModalEncoder has no modality {column!r}; its modalities are {list(self.encoders)}."
            )
        return self.encoders[column]

    def embed_column(self, column: str, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Representations [B, embedding_dim] of ``features["values"]`` [B, d] (``features["missing"]`` [B]).

        A view column (``x_view_1``) is embedded by its source modality's encoder (``x``).
        """
        if "values" not in features:
            raise ValueError(f"Features of column {column!r} need 'values' [B, d]; got {sorted(features)}.")
        if column not in self.config.modality_dims and "_view_" in column:
            column = column.split("_view_")[0]
        encoder = self.encoder(column)
        values = features["values"]
        expected = self.config.modality_dims[column]
        if values.dim() != 2 or values.shape[1] != expected:
            raise ValueError(
                f"Column {column!r} must hold vectors of size {expected} (values [B, {expected}]), "
                f"got a tensor of shape {tuple(values.shape)}."
            )
        return encoder(values, features.get("missing"))

    def forward(self, **inputs: torch.Tensor) -> MultiModalEncoderOutput:
        """``forward(a=[B, d_a], b=..., a_missing=[B], ...)``: the given modalities' representations, config order."""
        unknown = sorted(k for k in inputs if k.removesuffix("_missing") not in self.encoders)
        if unknown:
            raise ValueError(f"Unknown inputs {unknown}; modalities are {list(self.encoders)} (+ '<name>_missing').")
        embeddings = tuple(
            self.embed_column(m, {"values": inputs[m], "missing": inputs.get(f"{m}_missing")})
            for m in self.config.modalities
            if m in inputs
        )
        return MultiModalEncoderOutput(embeddings=embeddings)

    @torch.no_grad()
    def fit_missing_fill(
        self, values: Mapping[str, torch.Tensor], missing: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Set every modality's placeholder: the mean of its observed training rows (``missing_fill="mean"``)
        or zeros. ``values``: ``{modality: [N, d]}``; ``missing``: ``{modality: [N]}`` 0/1 flags (absent: all seen).
        """
        for modality, rows in values.items():
            encoder = self.encoder(modality)
            observed = torch.ones(len(rows), dtype=torch.bool)
            if missing is not None and modality in missing:
                observed = ~torch.as_tensor(missing[modality]).bool()
            if self.config.missing_fill == "zeros" or not bool(observed.any()):
                encoder.fill_value.zero_()
            else:
                encoder.fill_value.copy_(torch.as_tensor(rows, dtype=torch.float32)[observed].mean(dim=0))
