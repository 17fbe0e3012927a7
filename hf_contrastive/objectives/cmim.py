"""cMIM: the A-MIM encoder-decoder objective plus a probabilistic contrastive term (Livne, arXiv 2502.19642).

An encoder gives a Gaussian posterior ``q(z|x) = N(mu(x), diag sigma(x)^2)``, ``z = mu + sigma * eps`` is sampled
(reparameterised) and a decoder reconstructs ``x`` from ``z``; the prior is ``P(z) = N(0, I)``. Per row ``i`` of a
batch (``B`` local rows, ``N`` rows after the gather):

.. math::

    \\ell_i = w_c\\, C_i \\;-\\; \\tfrac12 \\big(\\log q(z_i|x_i) + \\log P(z_i)\\big) \\;+\\; \\lambda_{rec}\\,
        \\mathrm{NLL}_i, \\qquad L = \\frac1B \\sum_i \\ell_i

    C_i = -\\log p(k{=}1 | z_i) = \\log\\Big(e^{1/\\tau} + \\frac{1}{N-1} \\sum_{j \\ne i} e^{s_{ij}/\\tau}\\Big)
        - \\frac1\\tau, \\qquad s_{ij} = \\cos(z_i, z_j)

- **Latent term** (``latent_loss="amim"``, MIM / A-MIM; verified against NVIDIA's NeMo A-MIM and KERMT cMIM code):
  exact Gaussian log-densities of the *sampled* ``z``, summed over the ``d_z`` latent dimensions. Its sign rewards a
  *low* posterior entropy (the opposite of a VAE), so the model clamps ``log sigma >= -6`` (KERMT).
  ``latent_loss="vae"`` is the VAE baseline instead: the analytic ``KL(q || P) = 1/2 sum(mu^2 + sigma^2 - 1 -
  log sigma^2)``.
- **Contrastive term** (verified from KERMT's ``compute_cmim_loss``; the cMIM paper's own equations were not
  readable, so small differences from the paper are possible): cosine similarities of the sampled latents; the
  "positive" is the row itself with ``s_ii = 1`` fixed, so only the negatives carry gradient (it repels latents in
  angle). ``negatives_reduction="mean"`` (paper / KERMT) averages the negatives (``- log(N - 1)`` inside the
  log-sum-exp), which makes the loss level independent of the batch size (``log 2`` at collapse for any ``N``);
  ``"sum"`` is the InfoNCE-like variant (``log N`` at collapse) for comparison. ``N = 1`` gives ``C = 0``.
  ``contrastive_weight = 0`` is the plain A-MIM (MIM baseline), bit for bit.
- **Reconstruction** ``NLL_i = -log p(x_i | z_i)`` of the decoder output ``x_hat`` [B, d] against the collated
  input ``batch["features"][column]["values"]`` [B, d]: ``likelihood="gaussian"`` (unit variance:
  ``1/2 (x - x_hat)^2 + 1/2 log 2 pi`` per feature) or ``"bernoulli"`` (``x_hat`` are logits, targets in [0, 1]).
  ``reconstruction_reduction="mean"`` averages over the ``d`` features (KERMT's per-token mean, the default);
  ``"sum"`` is the exact log-likelihood of the vector (the MIM paper). ``reconstruction_weight`` is
  ``lambda_rec`` (1 in NeMo and KERMT; the symmetric MIM derivation has 1/2).
- ``normalize_latent_grad`` (KERMT flag, off by default): scale the latent term's gradient by ``1 / d_z`` and keep
  its value (balances a large latent size against the other terms).
- Not implemented: the earlier draft's "posterior identification" term (``log q(z_i|x_j)``), which NVIDIA's code
  does not use.

Embeddings read (``column`` default ``"x"``; :class:`~hf_contrastive.models.cmim.CMIMModel` yields them through
``embed_column``): ``x`` = sampled ``z`` [B, d_z], ``x.mu`` [B, d_z], ``x.log_sigma`` [B, d_z] (already clamped),
``x.reconstruction`` [B, d]; the target comes from the batch's features, not from an embedding.

Distributed and cached: only the contrastive term is in-batch. Its anchors are the local ``z``, its negatives the
gathered ``z`` of every rank (own row at ``rank * B + i``), so 2 processes x B have the gradient of 1 process x 2B
when the latents are the same (the sampled noise differs by rank in a real run). The latent and reconstruction terms
are per row and never gathered. Every term is a function of the embeddings and the batch, so the objective runs
under the gradient cache (whose RNG replay re-draws the same ``eps``). Memory: ``O(B * N)`` similarities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput

CMIM_CITATION = """@article{livne2025cmim,
  title = {cMIM: A Contrastive Mutual Information Framework for Unified Generative and Discriminative
           Representation Learning},
  author = {Livne, Micha},
  journal = {arXiv preprint arXiv:2502.19642},
  year = {2025}
}"""

LATENT_LOSSES = ("amim", "vae")
LIKELIHOODS = ("gaussian", "bernoulli")
REDUCTIONS = ("mean", "sum")
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag exp(log_sigma)^2)`` summed over the last dimension: [B, d_z] -> [B]."""
    return (-0.5 * ((z - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * LOG_2PI).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension: [B, d_z] -> [B]."""
    return (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)


def scale_gradient(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` in the forward pass, ``factor`` times its gradient in the backward pass."""
    return value * factor + (value * (1 - factor)).detach()


class CMIMLoss(ContrastiveObjective):
    """cMIM = A-MIM + mean-normalised cosine contrastive term; also the MIM and VAE baselines (module docstring).

    Args:
        column: the modality column; reads ``column``, ``column.mu``, ``column.log_sigma``, ``column.reconstruction``.
        contrastive_weight: ``w_c`` (1 in KERMT, "unit-weighted factors"); 0 gives A-MIM (or a VAE).
        temperature: ``tau`` of the contrastive term (KERMT default 0.1; the paper's value is unverified).
        reconstruction_weight: ``lambda_rec`` (1 in NeMo and KERMT).
        latent_loss: ``"amim"`` (``-1/2 (log q + log P)`` on the sampled z) or ``"vae"`` (analytic KL).
        likelihood: decoder distribution, ``"gaussian"`` (unit variance) or ``"bernoulli"`` (logits).
        reconstruction_reduction: ``"mean"`` over features (KERMT) or ``"sum"`` (exact log-likelihood).
        negatives_reduction: ``"mean"`` (paper / KERMT) or ``"sum"`` (InfoNCE-like, grows with log N).
        normalize_latent_grad: scale the latent term's gradient by ``1 / d_z`` (KERMT flag).
        gather_across_devices: take the contrastive negatives from every rank.
    """

    name = "cmim"
    paper = "2502.19642"
    citation = CMIM_CITATION

    def __init__(
        self,
        column: str = "x",
        contrastive_weight: float = 1.0,
        temperature: float = 0.1,
        reconstruction_weight: float = 1.0,
        latent_loss: str = "amim",
        likelihood: str = "gaussian",
        reconstruction_reduction: str = "mean",
        negatives_reduction: str = "mean",
        normalize_latent_grad: bool = False,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if contrastive_weight < 0 or reconstruction_weight < 0:
            raise ValueError(
                f"contrastive_weight and reconstruction_weight must be >= 0, got {contrastive_weight} and "
                f"{reconstruction_weight}."
            )
        for option, value, allowed in (
            ("latent_loss", latent_loss, LATENT_LOSSES),
            ("likelihood", likelihood, LIKELIHOODS),
            ("reconstruction_reduction", reconstruction_reduction, REDUCTIONS),
            ("negatives_reduction", negatives_reduction, REDUCTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {value!r}.")
        self.column = column
        self.required_columns = (column, f"{column}.mu", f"{column}.log_sigma", f"{column}.reconstruction")
        self.contrastive_weight, self.temperature = contrastive_weight, temperature
        self.reconstruction_weight, self.latent_loss = reconstruction_weight, latent_loss
        self.likelihood, self.reconstruction_reduction = likelihood, reconstruction_reduction
        self.negatives_reduction, self.normalize_latent_grad = negatives_reduction, normalize_latent_grad
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local cMIM loss of the sampled latents ``embeddings[column]`` [B, d_z] and their posterior / decoder."""
        self.check_columns(tuple(embeddings))
        z, mu, log_sigma = (embeddings[name] for name in self.required_columns[:3])
        if not (z.shape == mu.shape == log_sigma.shape) or z.ndim != 2:
            raise ValueError(
                f"cMIM needs {self.required_columns[:3]} of one shape [B, d_z], got {tuple(z.shape)}, "
                f"{tuple(mu.shape)} and {tuple(log_sigma.shape)}."
            )
        latent = self.latent_term(z, mu, log_sigma)
        reconstruction = self.reconstruction_term(embeddings[self.required_columns[3]], self._targets(batch))
        loss = latent + self.reconstruction_weight * reconstruction
        logs = {"latent": latent.detach().mean(), "reconstruction": reconstruction.detach().mean()}
        if self.contrastive_weight:
            contrastive = self.contrastive_term(z)
            loss = loss + self.contrastive_weight * contrastive
            logs["contrastive"] = contrastive.detach().mean()
        return ObjectiveOutput(loss=loss.mean(), logs=logs)

    def _targets(self, batch: dict) -> torch.Tensor:
        features = batch.get("features", {}).get(self.column, {})
        if "values" not in features:
            raise ValueError(
                f"cMIM reconstructs batch['features'][{self.column!r}]['values'] [B, d], but the batch's features "
                f"are {sorted(batch.get('features', {}))} ({sorted(features)} for {self.column!r})."
            )
        return features["values"]

    def latent_term(self, z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """Per row [B]: ``-1/2 (log q(z|x) + log P(z))`` (A-MIM) or ``KL(q || P)`` (VAE)."""
        if self.latent_loss == "amim":
            latent = -0.5 * (gaussian_log_density(z, mu, log_sigma) + standard_normal_log_density(z))
        else:
            latent = 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(-1)
        return scale_gradient(latent, 1.0 / z.shape[-1]) if self.normalize_latent_grad else latent

    def reconstruction_term(self, reconstruction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row [B]: ``-log p(x|z)`` of the decoder output [B, d] for targets [B, d], reduced over features."""
        if reconstruction.shape != targets.shape:
            raise ValueError(
                f"The decoder output {tuple(reconstruction.shape)} must match the input "
                f"{self.column!r} {tuple(targets.shape)} it reconstructs."
            )
        targets = targets.to(reconstruction.dtype)
        if self.likelihood == "gaussian":
            nll = 0.5 * (targets - reconstruction).pow(2) + 0.5 * LOG_2PI
        else:
            if targets.min() < 0 or targets.max() > 1:
                raise ValueError(f"likelihood='bernoulli' needs {self.column!r} values in [0, 1].")
            nll = F.binary_cross_entropy_with_logits(reconstruction, targets, reduction="none")
        return nll.mean(-1) if self.reconstruction_reduction == "mean" else nll.sum(-1)

    def contrastive_term(self, z: torch.Tensor) -> torch.Tensor:
        """Per local row [B]: ``-log p(k=1 | z_i)`` against the gathered latents (self-similarity fixed at 1)."""
        local_batch = z.shape[0]
        candidates = self._gather(z)
        if candidates.shape[0] < 2:
            return z.new_zeros(local_batch)
        rows = torch.arange(local_batch, device=z.device)
        similarities = F.normalize(z, dim=-1) @ F.normalize(candidates, dim=-1).T  # [B, N]
        not_own = torch.ones_like(similarities, dtype=torch.bool)
        not_own[rows, rows + self._local_offset(local_batch)] = False
        negatives = similarities[not_own].view(local_batch, -1) / self.temperature  # [B, N-1]
        if self.negatives_reduction == "mean":
            negatives = negatives - math.log(negatives.shape[1])
        positive = torch.full_like(negatives[:, :1], 1.0 / self.temperature)
        return torch.logsumexp(torch.cat([positive, negatives], dim=1), dim=1) - 1.0 / self.temperature

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Every other row's latent in the gathered batch."""
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "column": self.column,
            "contrastive_weight": self.contrastive_weight,
            "temperature": self.temperature,
            "reconstruction_weight": self.reconstruction_weight,
            "latent_loss": self.latent_loss,
            "likelihood": self.likelihood,
            "reconstruction_reduction": self.reconstruction_reduction,
            "negatives_reduction": self.negatives_reduction,
            "normalize_latent_grad": self.normalize_latent_grad,
            "gather_across_devices": self.gather_across_devices,
        }
