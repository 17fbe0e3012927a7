"""SupReMix: supervised contrastive regression with embedding-level mixtures as hard negatives and hard positives.

SupReMix (Wu et al. 2023, arXiv:2309.16633) adds two kinds of mixtures of the (detached) embeddings of the batch to
the candidates of :class:`~hf_contrastive.objectives.supcon_regression.SupConRegressionLoss` (read its docstring
for the layout: ``2N`` gathered view candidates ``f_c`` with targets ``t_c``, local anchor views ``a`` whose own
candidate row is ``i``):

- **Mix-neg** (anchor-inclusive), for every partner ``k`` with ``t_k != t_i``: ``m = lam f_i + (1 - lam) f_k`` with
  ``lam ~ Beta(2, 8)`` (``beta_params``), label ``lam t_i + (1 - lam) t_k``. A negative close to the anchor.
- **Mix-pos** (anchor-exclusive), for every ordered pair ``(j, k)`` with ``t_j < t_i < t_k`` and both within the
  ``window`` of ``t_i``: ``m = lam f_j + (1 - lam) f_k`` with ``lam = (t_k - t_i) / (t_k - t_j)``, so the mixed
  label is exactly ``t_i``. A positive that is not a copy of the anchor.

Each mixture column ``x`` gets the logit ``u_ax = f_a . sg(m_ax) / tau``, joins the denominator with the
distance-magnifying weight ``w(|t_a - label_x|)`` (``"L1_inv"``: ``|d| + 1`` by default), and the Mix-pos columns
join the positives:

.. math::

    Z_a = \\sum_{c \\ne a} w_{ac} e^{s_{ac}} + \\sum_{x \\in \\text{mix}} w_{ax} e^{u_{ax}},\\qquad
    \\ell_a = -\\frac{1}{|P(a)| + |\\text{MixPos}(a)|}
              \\Big(\\sum_{p \\in P(a)} (s_{ap} - \\log Z_a) + \\sum_{x \\in \\text{MixPos}(a)} (u_{ax} - \\log Z_a)\\Big)

with ``L`` the mean of ``l_a`` over the ``2B`` local anchor views. The mixtures are **detached** (as in the official
``mixing_func``), so gradients reach only the anchor side of mixture terms; they are not re-normalised (norm < 1).

Never materialised: since ``m`` is linear in the embeddings, ``u_ax`` is the same mix of the ``[2B, 2N]`` matrix
``f_a . sg(f_c) / tau``. Memory ``O(B * N^2)`` (the ``[2B, 2N, 2N]`` Mix-pos block) instead of the original's
``O(N^3 * D)`` mixture tensor; a global batch of 256 rows costs about 0.5 GB per float32 ``[2B, 4N^2]`` tensor on a
single process, so keep ``N`` in the low hundreds.

Differences from the official code, on purpose (``papers/supremix.md``, pitfalls): one shared log-sum-exp over the
real and mixture logits (the code shifts them by two different detached maxima, which reweights the two groups by
``exp(max_real - max_mix)``; ``legacy_separate_shift=True`` reproduces that, taking the mixture maximum over the
valid mixtures, which the code does not state), and no ``compress_mixtures`` (invalid columns are masked).
Real positives need exact label equality: with continuous targets only the anchor's other view qualifies.

Exact under DDP: the Mix-neg ``lam`` are drawn for the whole global ``[2N, 2N]`` grid from a private NumPy
generator seeded with ``sampling_seed`` and the call count (the global RNG is untouched), the same on every rank, in
cached and uncached steps; each rank keeps its anchors' rows. The call count is saved with the objective's state
(a resumed run draws the uninterrupted run's ``lam``). Runs under the gradient cache.

Shapes: views ``[B, D]``, ``batch["labels"]`` ``[B]``; logits ``[2B, 2N]`` (real and Mix-neg) and
``[2B, (2N)^2]`` (Mix-pos).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .base import ResumableRandomState
from .supcon_regression import CandidateGroup, RegressionViews, SupConRegressionLoss

SUPREMIX_CITATION = """@article{wu2023supremix,
  title = {Mixup Your Own Pairs},
  author = {Wu, Yilei and Ge, Zijian and Zhang, Luoyu and Wang, Yanxin and Zhou, Juan Helen},
  journal = {arXiv preprint arXiv:2309.16633},
  year = {2023}
}"""


class SupReMixLoss(ResumableRandomState, SupConRegressionLoss):
    """SupReMix: SupCon regression plus Mix-neg hard negatives and Mix-pos hard positives at embedding level.

    Args:
        temperature: ``tau`` (official default 0.3).
        distance: denominator weight of the label distance (``"L1_inv"``: ``|d| + 1``, official); see
            :class:`~hf_contrastive.objectives.supcon_regression.SupConRegressionLoss`.
        window: Mix-pos window ``n`` in label units: both bracketing labels within ``n`` of the anchor's (official:
            5 years of age); ``float("inf")`` uses every bracketing pair.
        beta_params: ``(a, b)`` of the Beta distribution of the Mix-neg weight ``lam`` on the anchor (official
            ``b=0`` maps to ``(2, 8)``: mean 0.2, so the mixture leans to the partner).
        mix_neg / mix_pos: add the Mix-neg / Mix-pos columns (both off: ``SupConRegressionLoss``).
        legacy_separate_shift: shift the real and mixture logits by separate detached maxima as the official code
            does (not a pure stabiliser; off by default).
        sampling_seed: seed of the Mix-neg ``lam`` draws.
        view_columns / learnable_temperature / max_scale / similarity / gather_across_devices: as in the baseline.
    """

    name = "supremix"
    paper = "2309.16633"
    citation = SUPREMIX_CITATION
    random_state = ("calls",)

    def __init__(
        self,
        temperature: float = 0.3,
        distance: str | None = "L1_inv",
        window: float = 5.0,
        beta_params: tuple[float, float] = (2.0, 8.0),
        mix_neg: bool = True,
        mix_pos: bool = True,
        legacy_separate_shift: bool = False,
        sampling_seed: int = 0,
        view_columns: tuple[str, str] = ("x_view_1", "x_view_2"),
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        similarity: str = "cosine",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__(
            temperature, distance, view_columns, learnable_temperature, max_scale, similarity, gather_across_devices
        )
        if window < 0:
            raise ValueError(f"window must be >= 0 (label units), got {window}.")
        if len(beta_params) != 2 or min(beta_params) <= 0:
            raise ValueError(f"beta_params must be two positive numbers (a, b), got {beta_params}.")
        self.window = window
        self.beta_params = tuple(beta_params)
        self.mix_neg = mix_neg
        self.mix_pos = mix_pos
        self.legacy_separate_shift = legacy_separate_shift
        self.sampling_seed = sampling_seed
        self.calls = 0

    def _candidate_groups(self, views: RegressionViews) -> list[CandidateGroup]:
        """The real candidates, then the Mix-neg ``[2B, 2N]`` and Mix-pos ``[2B, (2N)^2]`` columns."""
        groups = super()._candidate_groups(views)
        # f_a . sg(f_c) / tau: every mixture is a constant, so only the anchor side receives gradient.
        anchor_dot = views.anchors @ views.candidates.detach().T * self.scale()
        mixtures = []
        if self.mix_neg:
            mixtures.append(self._mix_negatives(views, anchor_dot))
        if self.mix_pos:
            mixtures.append(self._mix_positives(views, anchor_dot))
        self.calls += 1
        if self.legacy_separate_shift and mixtures:
            mixtures = separate_shift(groups[0], mixtures)
        return groups + mixtures

    def _mix_negatives(self, views: RegressionViews, anchor_dot: torch.Tensor) -> CandidateGroup:
        """Anchor-inclusive mixtures ``lam f_i + (1 - lam) f_k`` for every partner ``k`` with another target."""
        lam = self.mix_neg_weights(len(views.candidates))[views.anchor_index.cpu()].to(anchor_dot)
        own = anchor_dot.gather(1, views.anchor_index[:, None])  # f_a . sg(f_i) / tau
        logits = lam * own + (1 - lam) * anchor_dot
        target_gap = (views.anchor_labels[:, None] - views.candidate_labels[None, :]).abs()
        valid = target_gap > 0
        return CandidateGroup(logits, (1 - lam) * target_gap, valid, torch.zeros_like(valid))

    def _mix_positives(self, views: RegressionViews, anchor_dot: torch.Tensor) -> CandidateGroup:
        """Anchor-exclusive mixtures ``lam f_j + (1 - lam) f_k`` of bracketing targets, labelled exactly ``t_i``."""
        anchor_labels, labels = views.anchor_labels[:, None], views.candidate_labels[None, :]
        below = (labels < anchor_labels) & (anchor_labels - labels < self.window)  # [2B, 2N], the j side
        above = (labels > anchor_labels) & (labels - anchor_labels < self.window)  # [2B, 2N], the k side
        valid = (below[:, :, None] & above[:, None, :]).flatten(1)
        lam = mix_pos_weights(views.anchor_labels, views.candidate_labels)
        logits = (lam * anchor_dot[:, :, None] + (1 - lam) * anchor_dot[:, None, :]).flatten(1)
        return CandidateGroup(logits, torch.zeros_like(logits), valid, valid)

    def mix_neg_weights(self, num_candidates: int) -> torch.Tensor:
        """The Mix-neg ``lam`` ``[2N, 2N]`` of this call (row: anchor candidate ``i``, column: partner ``k``)."""
        rng = np.random.default_rng([self.sampling_seed, self.calls])
        return torch.from_numpy(rng.beta(*self.beta_params, size=(num_candidates, num_candidates)))

    def get_config_dict(self) -> dict:
        return {
            **super().get_config_dict(),
            "window": self.window,
            "beta_params": list(self.beta_params),
            "mix_neg": self.mix_neg,
            "mix_pos": self.mix_pos,
            "legacy_separate_shift": self.legacy_separate_shift,
            "sampling_seed": self.sampling_seed,
        }


def mix_pos_weights(anchor_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``lam_ajk = clamp((t_k - t_a) / max(t_k - t_j, 1e-9), 0, 1)`` ``[A, M, M]``: ``lam t_j + (1 - lam) t_k = t_a``.

    anchor_labels: ``[A]``; labels: ``[M]``. The identity holds wherever ``t_j < t_a < t_k``.
    """
    upper_gap = labels[None, None, :] - anchor_labels[:, None, None]
    span = (labels[None, None, :] - labels[None, :, None]).clamp_min(1e-9)
    return (upper_gap / span).clamp(0, 1)


def separate_shift(real: CandidateGroup, mixtures: list[CandidateGroup]) -> list[CandidateGroup]:
    """The official code's shifts: mixture logits move by ``max_real - max_valid_mixture`` (detached) per anchor.

    Shifting the real logits by ``max_real`` and the mixtures by ``max_mix`` before one softmax equals shifting the
    mixtures alone by the difference (a common shift cancels).
    """
    real_max = real.logits.detach().max(dim=1, keepdim=True).values
    mixture_logits = torch.cat([m.logits.detach().masked_fill(~m.valid, float("-inf")) for m in mixtures], dim=1)
    mixture_max = mixture_logits.max(dim=1, keepdim=True).values
    offset = torch.where(torch.isfinite(mixture_max), real_max - mixture_max, torch.zeros_like(real_max))
    return [replace(m, logits=m.logits + offset) for m in mixtures]
