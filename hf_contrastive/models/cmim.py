"""A small probabilistic encoder-decoder for vectors (cMIM / MIM / VAE), with mean and informative embeddings.

``CMIMModel`` maps ``values`` [B, d] through an MLP encoder to a Gaussian posterior ``(mu, log_sigma)`` [B, d_z]
(``log_sigma`` clamped at ``min_log_sigma``, -6 as in KERMT: the A-MIM loss rewards a shrinking sigma), samples
``z = mu + sigma * eps`` in training mode (``z = mu`` in eval mode) and decodes ``z`` with an MLP to
``reconstruction`` [B, d] (Gaussian means or Bernoulli logits, as the objective's ``likelihood`` reads them).

Training goes through :class:`~hf_contrastive.trainers.multimodal.MultiModalTrainer`: the cMIM step is one forward
of one column plus a loss on what it yields, which is the trainer's embedding contract. ``embed_column`` returns
``{"embedding": z, "mu", "log_sigma", "reconstruction"}`` (named ``x``, ``x.mu``, ... by the trainer), so the
trainer's gather, gradient cache (its RNG replay re-draws ``eps``), evaluators and card all apply, and no trainer
subclass is needed. In eval mode ``embedding`` is ``mu``: the trainer's ``embed_values`` gives the mean embedding.

Downstream features (``torch.no_grad()`` is up to the caller):

- :meth:`CMIMModel.mean_embeddings`: ``mu(x)`` [B, d_z].
- :meth:`CMIMModel.informative_embeddings`: ``concat[mu(x), h_l(mu(x)) for l in layers]`` [B, d_z + H * len(layers)],
  the decoder's hidden states (after each hidden layer's ReLU) when decoding the mean latent. The paper reads
  decoder hidden states without extra training (verified); its pooling is unverified, and for an MLP decoder of
  vectors there is no sequence to teacher-force or pool, so the hidden layer itself is the feature (``layers``
  configurable, default the last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class CMIMConfig(PretrainedConfig):
    """Sizes of the cMIM encoder-decoder for vectors.

    Args:
        input_dim: features per row ``d``.
        hidden_dim / num_layers: width and number of ReLU hidden layers of the encoder and of the decoder.
        latent_dim: ``d_z``.
        min_log_sigma: floor of the posterior log standard deviation (KERMT: -6).
    """

    model_type = "cmim"

    def __init__(
        self,
        input_dim: int | None = None,
        hidden_dim: int = 256,
        num_layers: int = 2,
        latent_dim: int = 16,
        min_log_sigma: float = -6.0,
        **kwargs,
    ) -> None:
        if input_dim is not None and input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}.")
        if num_layers < 1 or hidden_dim < 1 or latent_dim < 1:
            raise ValueError(
                f"num_layers, hidden_dim and latent_dim must be >= 1, got {num_layers}, {hidden_dim}, {latent_dim}."
            )
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.latent_dim = latent_dim
        self.min_log_sigma = min_log_sigma
        super().__init__(**kwargs)


@dataclass
class CMIMOutput(ModelOutput):
    """One forward: the latent ``z`` (sampled in training), the posterior, the decoder output and hidden states."""

    z: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    log_sigma: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None


def relu_layers(in_dim: int, hidden_dim: int, num_layers: int) -> nn.ModuleList:
    """``num_layers`` blocks ``Linear -> ReLU``, the first from ``in_dim``."""
    widths = [in_dim] + [hidden_dim] * num_layers
    return nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths, widths[1:]))


class CMIMModel(PreTrainedModel):
    """MLP encoder to ``N(mu, sigma^2)``, MLP decoder from ``z`` (cMIM, arXiv:2502.19642); see the module docstring."""

    config_class = CMIMConfig
    base_model_prefix = "cmim"
    main_input_name = "values"

    def __init__(self, config: CMIMConfig) -> None:
        super().__init__(config)
        if config.input_dim is None:
            raise ValueError("CMIMConfig needs input_dim (features per row).")
        self.encoder = nn.Sequential(*relu_layers(config.input_dim, config.hidden_dim, config.num_layers))
        self.posterior = nn.Linear(config.hidden_dim, 2 * config.latent_dim)
        self.decoder_layers = relu_layers(config.latent_dim, config.hidden_dim, config.num_layers)
        self.decoder_output = nn.Linear(config.hidden_dim, config.input_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation (the modules reset themselves at construction)."""

    def encode(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``mu`` [B, d_z] and ``log_sigma`` [B, d_z] (clamped at ``min_log_sigma``) of ``values`` [B, d]."""
        if values.ndim != 2 or values.shape[1] != self.config.input_dim:
            raise ValueError(
                f"CMIMModel takes values [B, {self.config.input_dim}] (config.input_dim), got {tuple(values.shape)}."
            )
        mu, log_sigma = self.posterior(self.encoder(values)).chunk(2, dim=-1)
        return mu, log_sigma.clamp(min=self.config.min_log_sigma)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Decoder output [B, d] of latents [B, d_z] and the hidden state [B, H] after each hidden layer."""
        hidden, states = z, []
        for layer in self.decoder_layers:
            hidden = layer(hidden)
            states.append(hidden)
        return self.decoder_output(hidden), tuple(states)

    def forward(self, values: torch.Tensor, sample: bool | None = None) -> CMIMOutput:
        """Encode ``values`` [B, d], take ``z`` (sampled when ``sample``, default in training mode) and decode it."""
        return self.encode_sample_decode(values, sample)

    def encode_sample_decode(self, values: torch.Tensor, sample: bool | None = None) -> CMIMOutput:
        """The body of :meth:`forward`; ``embed_column`` calls it because the trainer routes ``forward`` itself to
        ``embed_column`` while embedding (see ``trainers.multimodal.column_forward``)."""
        mu, log_sigma = self.encode(values)
        sample = self.training if sample is None else sample
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu) if sample else mu
        reconstruction, hidden_states = self.decode(z)
        return CMIMOutput(z, mu, log_sigma, reconstruction, hidden_states)

    def embed_column(self, column: str, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"embedding": z [B, d_z], "mu", "log_sigma": [B, d_z], "reconstruction": [B, d]}`` of a vector column."""
        if "values" not in features:
            raise ValueError(
                f"CMIMModel embeds vector columns ({{'values': [B, d]}}); {column!r} has {sorted(features)}."
            )
        output = self.encode_sample_decode(features["values"])
        return {
            "embedding": output.z,
            "mu": output.mu,
            "log_sigma": output.log_sigma,
            "reconstruction": output.reconstruction,
        }

    def mean_embeddings(self, values: torch.Tensor) -> torch.Tensor:
        """The latent mean ``mu(x)`` [B, d_z]: the plain downstream embedding."""
        return self.encode(values)[0]

    def informative_embeddings(self, values: torch.Tensor, layers: Sequence[int] = (-1,)) -> torch.Tensor:
        """``concat[mu(x), decoder hidden state l at z = mu(x) for l in layers]`` [B, d_z + H * len(layers)]."""
        if not layers:
            raise ValueError("layers must name at least one decoder hidden layer, e.g. (-1,).")
        mu = self.mean_embeddings(values)
        states = self.decode(mu)[1]
        try:
            return torch.cat([mu, *(states[layer] for layer in layers)], dim=-1)
        except IndexError:
            raise ValueError(f"layers {list(layers)} out of range for {len(states)} decoder hidden layers.") from None
