"""ViewEncoder: one MLP encoder + projection head shared by a vector column and all its views (SimCLR-style SSL).

Self-supervised objectives (CACR, Hydra, SimCLR) embed several views of the same column (``x_view_1``,
``x_view_2``, ...) with *one* encoder, train through a projection head, and are evaluated on the representation
before the head. :class:`hf_contrastive.models.multimodal_encoder.MultiModalEncoder` keeps one encoder per column
name and has neither a head nor a momentum copy, hence this small model:

- ``embed_column(any column, {"values": [B, d]})`` -> the projection ``[B, embedding_dim]`` (what the objective
  trains); with ``momentum_encoder=True`` a dict ``{"embedding": q, "key": k}`` where ``k`` comes from an EMA copy
  (no gradient), so the multimodal trainer names it ``f"{column}.key"`` (Hydra-MoCo). The EMA update is
  :class:`hf_contrastive.trainers.ema.EMAUpdate` (``online_encoder()`` / ``momentum_encoder``).
- ``represent(values)`` -> the backbone representation ``[B, hidden_dims[-1]]`` for probes (the head is discarded).

Backbone: ``(Linear -> LayerNorm -> GELU) x len(hidden_dims)``; head: ``Linear -> GELU -> Linear -> LayerNorm``
(a final LayerNorm, not BatchNorm, so Hydra's gates can close; no BatchNorm anywhere, so the gradient cache and the
2-process equivalence are exact).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class ViewEncoderConfig(PretrainedConfig):
    """Config of a :class:`ViewEncoder`.

    Args:
        input_dim: size ``d`` of the input vectors.
        hidden_dims: widths of the backbone layers; the last is the representation size.
        projection_dim: hidden width of the projection head.
        embedding_dim: size of the projection (the embedding the objective sees).
        momentum_encoder: keep an EMA copy of backbone + head and also return its ``"key"`` embedding.
    """

    model_type = "view-encoder"

    def __init__(
        self,
        input_dim: int = 64,
        hidden_dims: list[int] | tuple[int, ...] = (128, 64),
        projection_dim: int = 64,
        embedding_dim: int = 32,
        momentum_encoder: bool = False,
        **kwargs,
    ) -> None:
        if not hidden_dims:
            raise ValueError("hidden_dims needs at least one layer (the representation).")
        self.input_dim, self.hidden_dims = input_dim, list(hidden_dims)
        self.projection_dim, self.embedding_dim = projection_dim, embedding_dim
        self.momentum_encoder = momentum_encoder
        super().__init__(**kwargs)


def _encoder(config: ViewEncoderConfig) -> nn.ModuleDict:
    layers, width = [], config.input_dim
    for hidden in config.hidden_dims:
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
        width = hidden
    head = nn.Sequential(
        nn.Linear(width, config.projection_dim),
        nn.GELU(),
        nn.Linear(config.projection_dim, config.embedding_dim),
        nn.LayerNorm(config.embedding_dim),
    )
    return nn.ModuleDict({"backbone": nn.Sequential(*layers), "head": head})


class ViewEncoder(PreTrainedModel):
    """Shared MLP encoder + projection head for every view of a vector column (see the module docstring)."""

    config_class = ViewEncoderConfig
    base_model_prefix = "view_encoder"
    main_input_name = "values"

    def __init__(self, config: ViewEncoderConfig) -> None:
        super().__init__(config)
        self.online = _encoder(config)
        self.momentum_encoder = copy.deepcopy(self.online) if config.momentum_encoder else None
        self.post_init()
        if self.momentum_encoder is not None:
            self.momentum_encoder.load_state_dict(self.online.state_dict())
            self.momentum_encoder.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation: the 0.02-normal default of transformers starves small MLPs.
        if isinstance(module, nn.Linear | nn.LayerNorm):
            module.reset_parameters()

    def online_encoder(self) -> nn.ModuleDict:
        """The trained backbone + head (EMAUpdate moves ``momentum_encoder`` toward it)."""
        return self.online

    def _values(self, column: str, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        values = features.get("values")
        if values is None or values.dim() != 2 or values.shape[1] != self.config.input_dim:
            shape = None if values is None else tuple(values.shape)
            raise ValueError(
                f"Column {column!r} must hold vectors of size {self.config.input_dim} as features['values'] "
                f"[B, {self.config.input_dim}], got {shape}."
            )
        return values.to(self.online["head"][0].weight.dtype)

    def embed_column(self, column: str, features: Mapping[str, torch.Tensor]) -> torch.Tensor | dict:
        """Projection [B, embedding_dim] of ``features["values"]`` [B, d]; plus the momentum ``"key"`` when kept."""
        values = self._values(column, features)
        embedding = self.online["head"](self.online["backbone"](values))
        if self.momentum_encoder is None:
            return embedding
        with torch.no_grad():
            key = self.momentum_encoder["head"](self.momentum_encoder["backbone"](values))
        return {"embedding": embedding, "key": key}

    @torch.no_grad()
    def represent(self, values) -> torch.Tensor:
        """Backbone representation [n, hidden_dims[-1]] of raw vectors [n, d] (for probes), without gradient."""
        was_training = self.training
        self.eval()
        tensor = torch.as_tensor(values, dtype=torch.float32, device=self.device)
        representation = self.online["backbone"](self._values("representation", {"values": tensor}))
        self.train(was_training)
        return representation

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Projection of ``values`` [B, d] (``embed_column`` for any column)."""
        output = self.embed_column("values", {"values": values})
        return output["embedding"] if isinstance(output, dict) else output
