"""TSForecaster: an end-to-end Transformer forecaster trained with MSE + a MoCo contrastive term (arXiv 2306.12086).

The paper's recommended model (reference code ``informer-moco``), on standardised windows ``x`` [B, T, C]:

```
e     = Dropout(Linear(C -> hidden_size)(x))                  no positional or time encoding (the reference's default)
H     = Linear(hidden_size -> representation_dim)(LayerNorm(num_layers x TransformerLayer(e)))      [B, T, D]
y_hat = MLP(H)[:, -P:, :]    MLP = Linear(D -> D) -> ReLU -> Linear(D -> C_out)                     [B, P, C_out]
q     = head_q(H[:, r, :])   head = Linear(D -> D) -> ReLU -> Linear(D -> D), one random step r per batch  [B, D]
k     = head_k(H_k[:, r, :]) from the momentum copy of the encoder and head, without gradient              [B, D]
```

A Transformer layer is post-norm self-attention (``num_heads`` heads) + a GELU feed-forward of width ``ffn_dim``
(Informer's ``EncoderLayer``). The forecast is read from the last ``P`` positions of the encoder (so ``T >= P``).
The loss is :class:`~hf_contrastive.objectives.ts_forecasting.MoCoForecastingLoss` (``self.objective``, which owns
the key queue); ``contrastive_weight = 0`` builds the MSE-only baseline: the same encoder and forecast head (same
initial weights for the same seed), and no contrastive head, momentum encoder or queue.

Deviations from the reference, all for CPU-sized runs and stated in the card:

- Full softmax attention instead of Informer's ProbSparse attention (which samples ``factor * ln T`` keys at random;
  for the short windows used here it attends to nearly every key anyway, and full attention is deterministic).
- The momentum update runs after every optimizer step (:class:`hf_contrastive.trainers.ema.EMAUpdate`) instead of
  at the start of every forward: the same sequence of key weights with one forward per step, and neither evaluation
  nor gradient accumulation moves the key encoder. The queue is only updated in training mode (see the objective).

Channels: ``enc_in`` input channels; the forecast covers the input channels ``target_channels`` (default all: the
paper's multivariate "M" setting; ``enc_in = 1``: univariate "S"; one target among several inputs: Informer's "MS"),
``c_out = len(target_channels)`` of them, as :class:`hf_contrastive.data.timeseries.ForecastSeries` lays them out.

Normalisation: ``config.scaler`` holds the training split's per-channel statistics of the inputs
(:meth:`hf_contrastive.data.timeseries.StandardScaler.to_dict`); it is saved with the model, and
:meth:`TSForecaster.forecast` takes and returns values in original units. ``forward`` works on standardised values.
Registered with ``AutoConfig`` / ``AutoModel`` as ``ts-forecaster``.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from huggingface_hub import ModelCard
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..data.timeseries import StandardScaler
from ..objectives.ts_forecasting import MoCoForecastingLoss, jitter_shift_scale

POOLINGS = ("random_step", "mean")
AUGMENTATIONS = ("none", "jitter_shift_scale")


class TSForecasterConfig(PretrainedConfig):
    """Sizes, MoCo settings and saved normalisation of a :class:`TSForecaster` (defaults: the paper's ETTh1 runs).

    Args:
        enc_in: input channels ``C``.
        target_channels: indices of the forecast channels among the inputs (default: all); ``c_out`` is their count.
        seq_len: input window ``T``; pred_len: horizon ``P`` (``P <= T``).
        hidden_size: attention width (paper: 128); representation_dim: ``D`` of ``H`` (paper's d_model: 320).
        ffn_dim: feed-forward width (paper's d_ff: 64); num_layers (e_layers: 5); num_heads (8); dropout (0.05).
        contrastive_weight: ``lambda`` of ``(1 - lambda) MSE + lambda L_cl`` (paper: 0.5; 0 = MSE-only).
        moco_queue_size: MoCo ``K`` (512); moco_momentum: ``m`` (0.999); moco_temperature: ``T_m`` (1.0; named
            so because ``temperature`` is reserved for generation settings in transformers configs);
        l2_normalize: normalise queries, keys and queue (True).
        pooling: ``"random_step"`` (one random time step per batch, the paper's default) or ``"mean"`` over time
            (the reference's ``moco_average_pool``).
        augmentation: positive-pair view of the window: ``"none"`` (the paper: same window, dropout and the lagged
            key weights are the only differences) or ``"jitter_shift_scale"`` (CoST's, the reference's optional
            ``data_aug``), with ``augmentation_sigma`` (0.5) and ``augmentation_probability`` (0.5).
        scaler: per-channel statistics of the training split (``StandardScaler.to_dict()``); None: values are used
            as given.
    """

    model_type = "ts-forecaster"

    def __init__(
        self,
        enc_in: int | None = None,
        target_channels: list[int] | None = None,
        seq_len: int = 96,
        pred_len: int = 24,
        hidden_size: int = 128,
        representation_dim: int = 320,
        ffn_dim: int = 64,
        num_layers: int = 5,
        num_heads: int = 8,
        dropout: float = 0.05,
        contrastive_weight: float = 0.5,
        moco_queue_size: int = 512,
        moco_momentum: float = 0.999,
        moco_temperature: float = 1.0,
        l2_normalize: bool = True,
        pooling: str = "random_step",
        augmentation: str = "none",
        augmentation_sigma: float = 0.5,
        augmentation_probability: float = 0.5,
        scaler: dict | None = None,
        **kwargs,
    ) -> None:
        if enc_in is not None:
            if enc_in < 1:
                raise ValueError(f"enc_in must be >= 1, got {enc_in}.")
            target_channels = list(range(enc_in)) if target_channels is None else [int(c) for c in target_channels]
            if not target_channels or any(not 0 <= c < enc_in for c in target_channels):
                raise ValueError(f"target_channels must be indices in [0, {enc_in}), got {target_channels}.")
        if not 1 <= pred_len <= seq_len:
            raise ValueError(
                f"pred_len must be in [1, seq_len]: the forecast is read from the last pred_len encoder positions; "
                f"got seq_len={seq_len}, pred_len={pred_len}."
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads}).")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}.")
        if not 0.0 <= moco_momentum <= 1.0:
            raise ValueError(f"moco_momentum must be in [0, 1], got {moco_momentum}.")
        self.enc_in = enc_in
        self.target_channels = target_channels
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.hidden_size = hidden_size
        self.representation_dim = representation_dim
        self.ffn_dim = ffn_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout = dropout
        self.contrastive_weight = contrastive_weight
        self.moco_queue_size = moco_queue_size
        self.moco_momentum = moco_momentum
        self.moco_temperature = moco_temperature
        self.l2_normalize = l2_normalize
        self.pooling = pooling
        self.augmentation = augmentation
        self.augmentation_sigma = augmentation_sigma
        self.augmentation_probability = augmentation_probability
        self.scaler = scaler
        super().__init__(**kwargs)

    @property
    def c_out(self) -> int | None:
        """Forecast channels: ``len(target_channels)``."""
        return None if self.target_channels is None else len(self.target_channels)


@dataclass
class TSForecasterOutput(ModelOutput):
    """``prediction`` [B, P, C_out] (standardised); with ``future_values``: the loss and its two terms."""

    loss: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    mse_loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear``: the forecast head and the MoCo heads of the reference."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class SeriesEncoder(nn.Module):
    """Input embedding + post-norm Transformer layers + LayerNorm + projection: ``x`` [B, T, C] -> ``H`` [B, T, D]."""

    def __init__(self, config: TSForecasterConfig) -> None:
        super().__init__()
        self.embedding = nn.Sequential(nn.Linear(config.enc_in, config.hidden_size), nn.Dropout(config.dropout))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.hidden_size,
                config.num_heads,
                dim_feedforward=config.ffn_dim,
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size)
        self.projection = nn.Linear(config.hidden_size, config.representation_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(windows)
        for layer in self.layers:
            hidden = layer(hidden)
        return self.projection(self.norm(hidden))


class TSForecaster(PreTrainedModel):
    """Transformer forecaster with a MoCo branch (arXiv 2306.12086); see the module docstring."""

    config_class = TSForecasterConfig
    base_model_prefix = "ts_forecaster"
    main_input_name = "past_values"

    def __init__(self, config: TSForecasterConfig) -> None:
        super().__init__(config)
        if config.enc_in is None:
            raise ValueError("TSForecasterConfig needs enc_in (input channels).")
        self.encoder = SeriesEncoder(config)
        self.forecast_head = mlp(config.representation_dim, config.representation_dim, config.c_out)
        self.objective = MoCoForecastingLoss(
            config.contrastive_weight,
            config.representation_dim,
            config.moco_queue_size,
            config.moco_temperature,
            config.l2_normalize,
        )
        if self.objective.uses_contrastive_term:  # built after the forecaster: the baseline starts from equal weights
            self.contrastive_head = mlp(
                config.representation_dim, config.representation_dim, config.representation_dim
            )
            self.momentum_encoder = copy.deepcopy(self.online_encoder()).requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation (the modules reset themselves at construction)."""

    def online_encoder(self) -> nn.ModuleDict:
        """The query side, ``{"encoder", "contrastive_head"}``: the modules the momentum encoder follows."""
        return nn.ModuleDict({"encoder": self.encoder, "contrastive_head": self.contrastive_head})

    def forward(self, past_values: torch.Tensor, future_values: torch.Tensor | None = None) -> TSForecasterOutput:
        """Forecast [B, P, C_out] from standardised ``past_values`` [B, T, C]; ``future_values`` [B, P, C_out] add
        the loss (and, in training mode, enqueue the keys)."""
        self._check_window(past_values)
        hidden = self.encoder(past_values)
        prediction = self.forecast_head(hidden[:, -self.config.pred_len :])
        if future_values is None:
            return TSForecasterOutput(prediction=prediction)
        query = key = None
        if self.objective.uses_contrastive_term:
            query, key = self.query_and_key(past_values, hidden)
        result = self.objective(prediction, future_values.to(prediction.dtype), query, key)
        return TSForecasterOutput(
            loss=result.loss,
            prediction=prediction,
            mse_loss=result.logs["loss_mse"],
            contrastive_loss=result.logs.get("loss_contrastive"),
        )

    def query_and_key(self, past_values: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MoCo query [B, D] from the online ``hidden`` [B, T, D] and key [B, D] from the momentum encoder (no grad),
        both read at the same random time step (or averaged over time)."""
        step = int(torch.randint(hidden.shape[1], ())) if self.config.pooling == "random_step" else None
        query = self.contrastive_head(self._pool(hidden, step))
        with torch.no_grad():
            key_view = past_values
            if self.config.augmentation == "jitter_shift_scale":
                key_view = jitter_shift_scale(
                    past_values, self.config.augmentation_sigma, self.config.augmentation_probability
                )
            key_hidden = self.momentum_encoder["encoder"](key_view)
            key = self.momentum_encoder["contrastive_head"](self._pool(key_hidden, step))
        return query, key

    @staticmethod
    def _pool(hidden: torch.Tensor, step: int | None) -> torch.Tensor:
        return hidden.mean(dim=1) if step is None else hidden[:, step]

    def _check_window(self, past_values: torch.Tensor) -> None:
        expected = (self.config.seq_len, self.config.enc_in)
        if past_values.dim() != 3 or tuple(past_values.shape[1:]) != expected:
            raise ValueError(
                f"past_values must be [B, seq_len={expected[0]}, enc_in={expected[1]}], got {tuple(past_values.shape)}."
            )

    # ----------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def forecast(self, history: np.ndarray | torch.Tensor) -> np.ndarray:
        """Forecast the next ``pred_len`` steps in original units from ``history`` [T', C] or [B, T', C] (original
        units, ``T' >= seq_len``; the last ``seq_len`` steps are used): returns [P, C_out] or [B, P, C_out].

        Standardises with ``config.scaler``, runs the model in eval mode and maps the forecast back. Raises a
        ValueError for NaN/inf values, too short a history or the wrong number of channels.
        """
        history = np.asarray(
            history.detach().cpu() if isinstance(history, torch.Tensor) else history, dtype=np.float64
        )
        single = history.ndim == 2
        windows = history[None] if single else history
        self._check_history(windows)
        windows = windows[:, -self.config.seq_len :]
        scaler = self.scaler()
        if scaler is not None:
            windows = scaler.transform(windows)
        inputs = torch.as_tensor(windows, dtype=self.dtype, device=self.device)
        was_training = self.training
        self.eval()
        try:
            prediction = self(inputs).prediction.double().cpu().numpy()
        finally:
            self.train(was_training)
        if scaler is not None:
            prediction = scaler.select(self.config.target_channels).inverse_transform(prediction)
        return prediction[0] if single else prediction

    def _check_history(self, windows: np.ndarray) -> None:
        config = self.config
        if windows.ndim != 3 or windows.shape[2] != config.enc_in:
            raise ValueError(
                f"history must be [T, {config.enc_in}] or [B, T, {config.enc_in}] (enc_in channels), got "
                f"{windows.shape}."
            )
        if windows.shape[1] < config.seq_len:
            raise ValueError(
                f"history has {windows.shape[1]} time steps; the model reads windows of seq_len={config.seq_len}."
            )
        if not np.isfinite(windows[:, -config.seq_len :]).all():
            bad = np.argwhere(~np.isfinite(windows[:, -config.seq_len :]))[0]
            raise ValueError(
                f"history has a NaN/inf value (window {bad[0]}, step {bad[1]} of the last {config.seq_len}, channel "
                f"{bad[2]}); fill or drop missing values first."
            )

    def scaler(self) -> StandardScaler | None:
        """The training split's scaler of the ``enc_in`` input channels saved in the config (None: no scaling)."""
        if self.config.scaler is None:
            return None
        scaler = StandardScaler.from_dict(self.config.scaler)
        if len(scaler.mean) != self.config.enc_in:
            raise ValueError(
                f"config.scaler has {len(scaler.mean)} channels; the model reads enc_in={self.config.enc_in}."
            )
        return scaler

    # ----------------------------------------------------------------------------------------------- sharing
    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str = "Upload TSForecaster",
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
    ):
        """Upload config (with the scaler) and weights to ``repo_id`` with a card built from the config.

        A card already on the repo (e.g. the Trainer's, with evaluation numbers) is kept as it is.
        """
        from huggingface_hub import HfApi

        from ..hub import push_folder

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            if not api.file_exists(repo_id, "README.md", revision=revision):
                forecaster_model_card(self, repo_id).save(os.path.join(folder, "README.md"))
            return push_folder(folder, repo_id, token=token, commit_message=commit_message, revision=revision)


def forecaster_model_card(model: TSForecaster, repo_id: str, **card_fields) -> ModelCard:
    """The model card of a :class:`TSForecaster`: forecasting summary, usage with ``forecast``, sizes, MoCo setup.

    ``card_fields`` are further :class:`~hf_contrastive.hub.ContrastiveCardData` fields (training arguments,
    evaluation results, training summary, tags), which the Trainer's card adds.
    """
    from ..hub import ContrastiveCardData, build_model_card

    config = model.config
    objective = model.objective
    method = (
        f"MSE + MoCo contrastive term (weight {config.contrastive_weight})"
        if objective.uses_contrastive_term
        else "MSE only (the baseline of the paper's contrastive forecaster)"
    )
    summary = (
        f"An end-to-end Transformer forecaster (arXiv:2306.12086) trained with {method}. It reads "
        f"{config.seq_len} steps of {config.enc_in} channel(s) and forecasts the next {config.pred_len} steps of "
        f"channel(s) {config.target_channels}. The training split's normalisation statistics are saved in the "
        "config: `forecast` takes and returns original units."
    )
    usage = (
        "```python\nimport numpy as np\nimport hf_contrastive  # registers the model with AutoModel\n"
        "from transformers import AutoModel\n\n"
        f'model = AutoModel.from_pretrained("{repo_id}")\n'
        f"history = np.random.randn({config.seq_len}, {config.enc_in})  # [seq_len, enc_in], original units\n"
        f"forecast = model.forecast(history)  # [{config.pred_len}, {config.c_out}], original units\n```"
    )
    details = {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        **{key: getattr(config, key) for key in ("seq_len", "pred_len", "enc_in", "target_channels")},
        **{key: getattr(config, key) for key in ("hidden_size", "representation_dim", "num_layers", "pooling")},
        "normalisation saved": config.scaler is not None,
    }
    return build_model_card(
        ContrastiveCardData(
            objective=objective.name,
            repo_id=repo_id,
            paper=objective.paper,
            objective_config=objective.get_config_dict(),
            pipeline_tag="time-series-forecasting",
            tags=["time-series-forecasting", "moco"] + card_fields.pop("tags", []),
            summary=summary,
            usage=usage,
            model_details=details,
            citations=[objective.citation],
            **card_fields,
        )
    )
