"""Forecasting MSE plus a MoCo instance-contrastive term, trained end to end (Zhang et al., arXiv 2306.12086).

The paper's recommended setting (code model ``informer-moco``): a Transformer forecaster whose encoder is also the
MoCo query encoder; a momentum copy of the encoder and of the contrastive head gives the keys; a FIFO queue of past
keys gives the negatives. Per batch of ``B`` windows:

.. math::

    L = (1 - \\lambda)\\, L_{mse} + \\lambda\\, L_{cl}, \\qquad
    L_{mse} = \\mathrm{mean}_{b,p,c}\\, (\\hat y_{bpc} - y_{bpc})^2

    L_{cl} = \\frac1B \\sum_b -\\log \\frac{\\exp(\\langle q_b, k_b\\rangle / T)}
        {\\exp(\\langle q_b, k_b\\rangle / T) + \\sum_{j=1}^{K} \\exp(\\langle q_b, Q_{:,j}\\rangle / T)}

with ``q = head_q(H[:, r])`` from the online encoder, ``k = head_k(H_k[:, r])`` from the momentum encoder (no
gradient) at the same random time step ``r`` (or the mean over time), ``Q`` [D, K] the queue, and ``q``, ``k``
L2-normalised when ``l2_normalize`` (the queue columns are unit vectors then). Defaults are the paper's: ``lambda =
0.5``, ``K = 512``, ``T = 1.0``, L2 normalisation on. ``lambda = 0`` is the MSE-only baseline: the contrastive branch
is skipped and the loss is exactly ``L_mse``.

Shapes: ``prediction`` and ``target`` [B, P, C_out] (standardised values), ``query`` and ``key`` [B, D].

State: the queue ``queue`` [D, K] (initialised with random unit columns, as the reference) and ``queue_ptr`` are
buffers of this module; the model that owns the objective saves them with its weights. After the loss is computed,
the keys are written into columns ``[ptr, ptr + B)`` (modulo ``K``) and ``ptr`` advances by ``B`` modulo ``K``,
only in training mode: the reference also enqueues at validation and test time, which makes evaluation change the
model (a pitfall the spec names). The reference requires ``K % B == 0``; writing modulo ``K`` drops that requirement
and is identical when it holds. Under DDP the keys of every rank are enqueued (gathered without gradient), so the
queue stays the same on every rank; a rank's queries are scored against its own keys and the shared queue.

The momentum update ``theta_k <- m theta_k + (1 - m) theta_q`` is not part of the loss: the trainer applies it after
every optimizer step (:class:`hf_contrastive.trainers.ema.EMAUpdate`, see
:mod:`hf_contrastive.trainers.ts_forecasting`).

The reference's optional positive-pair augmentation (CoST's, off by default) is :func:`jitter_shift_scale`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput

TS_FORECASTING_CITATION = """@article{zhang2023constitutes,
  title = {What Constitutes Good Contrastive Learning in Time-Series Forecasting?},
  author = {Zhang, Chiyu and Yan, Qi and Meng, Lili and Sylvain, Tristan},
  journal = {arXiv preprint arXiv:2306.12086},
  year = {2023}
}"""


def moco_logits(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float, l2_normalize: bool
) -> torch.Tensor:
    """MoCo logits ``[<q, k>, q^T Q] / T`` [B, 1 + K] of queries [B, D], keys [B, D] and the queue [D, K].

    The positive is column 0. With ``l2_normalize`` the queries and keys are normalised first (the queue is
    assumed to hold unit columns already). ``queue`` is used as a constant (copied), so it may be updated in place
    before the backward pass.
    """
    if l2_normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    positive = (query * key).sum(dim=1, keepdim=True)
    negatives = query @ queue.detach().clone()
    return torch.cat([positive, negatives], dim=1) / temperature


def jitter_shift_scale(windows: torch.Tensor, sigma: float = 0.5, probability: float = 0.5) -> torch.Tensor:
    """CoST's augmentation ``jitter(shift(scale(x)))`` of windows [B, T, C]; each step applied with ``probability``.

    ``scale``: ``x * (1 + sigma * e_c)``, ``shift``: ``x + sigma * e_c`` (one draw per channel ``c``, shared by the
    batch and time steps, as the reference), ``jitter``: ``x + sigma * e_btc`` (independent noise), ``e ~ N(0, 1)``.
    One coin flip per step and batch, as the reference (``random.random() > p`` skips the step).
    """
    channels = windows.shape[-1]

    def applies() -> bool:
        return bool(torch.rand(()) < probability)

    if applies():
        windows = windows * (1 + sigma * torch.randn(channels, device=windows.device, dtype=windows.dtype))
    if applies():
        windows = windows + sigma * torch.randn(channels, device=windows.device, dtype=windows.dtype)
    if applies():
        windows = windows + sigma * torch.randn_like(windows)
    return windows


class MoCoForecastingLoss(ContrastiveObjective):
    """``(1 - lambda) MSE + lambda MoCo-InfoNCE`` with a key queue; see the module docstring for the formula.

    Args:
        contrastive_weight: ``lambda`` in [0, 1] (paper: 0.5; 0 = MSE-only baseline, 1 = contrastive only).
        embedding_dim: ``D``, the size of queries and keys (the queue's rows).
        queue_size: ``K`` negatives kept from previous batches (paper: 512).
        temperature: ``T`` (paper: 1.0).
        l2_normalize: normalise queries, keys and the queue's initial columns (paper: True).
    """

    name = "ts_forecasting_moco"
    paper = "2306.12086"
    citation = TS_FORECASTING_CITATION
    required_columns = ("past_values", "future_values")

    def __init__(
        self,
        contrastive_weight: float = 0.5,
        embedding_dim: int = 320,
        queue_size: int = 512,
        temperature: float = 1.0,
        l2_normalize: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= contrastive_weight <= 1.0:
            raise ValueError(f"contrastive_weight must be in [0, 1], got {contrastive_weight}.")
        if temperature <= 0 or queue_size < 1 or embedding_dim < 1:
            raise ValueError(
                f"temperature, queue_size and embedding_dim must be > 0, got {temperature}, {queue_size}, "
                f"{embedding_dim}."
            )
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.l2_normalize = l2_normalize
        self.queue_size = queue_size
        # The MSE-only baseline keeps an empty queue: nothing to save, nothing to enqueue.
        queue = torch.randn(embedding_dim, queue_size if contrastive_weight > 0 else 0)
        self.register_buffer("queue", F.normalize(queue, dim=0) if l2_normalize else queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def uses_contrastive_term(self) -> bool:
        """False for the MSE-only baseline (``lambda = 0``): no keys, no queue update."""
        return self.contrastive_weight > 0

    def forward(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        query: torch.Tensor | None = None,
        key: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """The loss of forecasts [B, P, C_out] against targets [B, P, C_out] and of queries / keys [B, D].

        Logs ``loss_mse`` and, when ``lambda > 0``, ``loss_contrastive``. Enqueues ``key`` in training mode.
        """
        if prediction.shape != target.shape:
            raise ValueError(
                f"future_values must have the forecast's shape {tuple(prediction.shape)} [B, P, C_out], got "
                f"{tuple(target.shape)}."
            )
        mse = F.mse_loss(prediction, target)
        if not self.uses_contrastive_term:
            return ObjectiveOutput(mse, {"loss_mse": mse.detach()})
        if query is None or key is None:
            raise ValueError("MoCoForecastingLoss with contrastive_weight > 0 needs query and key embeddings [B, D].")
        logits = moco_logits(query, key, self.queue, self.temperature, self.l2_normalize)
        contrastive = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        if self.training:
            self.enqueue(F.normalize(key, dim=1) if self.l2_normalize else key)
        loss = (1 - self.contrastive_weight) * mse + self.contrastive_weight * contrastive
        return ObjectiveOutput(loss, {"loss_mse": mse.detach(), "loss_contrastive": contrastive.detach()})

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys of every rank [N, D] into queue columns ``ptr .. ptr + N - 1`` (mod K); advance ``ptr``."""
        keys = self._gather_no_grad(keys.detach())
        queue_size = self.queue_size
        if len(keys) > queue_size:
            raise ValueError(
                f"The MoCo queue ({queue_size} keys) is smaller than one global batch ({len(keys)} keys); raise "
                "queue_size or lower the batch size."
            )
        columns = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % queue_size
        self.queue[:, columns] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % queue_size)

    def get_config_dict(self) -> dict:
        return {
            "contrastive_weight": self.contrastive_weight,
            "queue_size": self.queue_size,
            "temperature": self.temperature,
            "l2_normalize": self.l2_normalize,
        }
