"""SepCLR: separate the factors shared by background and target data (common) from the target-only ones (salient).

Contrastive Analysis (Louiset et al., ICLR 2024, arXiv:2402.11928): a batch mixes **background** rows (``b = 0``,
e.g. healthy subjects, plain digits) and **target** rows (``b = 1``, patients, digits on a texture). Two encoders
give a common code ``c`` (L2-normalised: a hypersphere) and a salient code ``s`` (Euclidean, not normalised) per
view. With the Gaussian kernel ``k(u, v) = exp(-||u - v||^2 / (2 tau))`` (``tau = 0.5``):

.. math::

    \\mathrm{align}(u, v) = \\operatorname{mean}_i \\frac{\\|u_i - v_i\\|^2}{2\\tau}, \\quad
    \\mathrm{unif}(z) = \\log \\operatorname{mean}_{i<j} k(z_i, z_j), \\quad
    \\mathrm{JEM}(c, s) = \\operatorname{mean}_i \\log \\operatorname{mean}_j k(c_i, c_j)\\, k(s_i, s_j)

and, with ``s~`` the salient codes whose background rows are replaced by the information-less vector ``s' = 0``
(constant rows: no gradient),

.. math::

    L_{common} &= \\mathrm{align}(\\hat c_1, \\hat c_2) + \\tfrac{w_u}{2} (\\mathrm{unif}(\\hat c_1)
                  + \\mathrm{unif}(\\hat c_2)) \\\\
    L_{salient} &= \\mathrm{align}(s_1[b{=}1], s_2[b{=}1]) + \\tfrac{w_u}{2} (\\mathrm{unif}(\\tilde s_1)
                  + \\mathrm{unif}(\\tilde s_2)) \\\\
    L_{infoless} &= \\tfrac12 (\\mathrm{align}(0, s_1[b{=}0]) + \\mathrm{align}(0, s_2[b{=}0])) \\\\
    L_{jem} &= \\tfrac12 (\\mathrm{JEM}(\\hat c_1, \\tilde s_1) + \\mathrm{JEM}(\\hat c_2, \\tilde s_2)) \\\\
    L &= L_{common} + \\beta_s L_{salient} + \\beta_r L_{infoless} + \\lambda L_{jem}

``JEM`` is minus a kernel estimate of the joint entropy ``H(c, s)``: minimising it keeps ``I(c; s)`` low while
the InfoMax terms keep the marginal entropies high. ``w_u = 2`` (the code's "2 x mean of the two views"). The
formulas follow the official code (``losses.py``, ``cifar_mnist/sep_clr_k-jem.py``); presets of
(``salient_weight`` beta_s, ``infoless_weight`` beta_r, ``jem_weight`` lambda): CIFAR-10-MNIST and CelebA
(1000, 1000, 10, the defaults), CheXpert (1, 10, 10), ODIR (1, 100, 10). Limit: ``beta_s = beta_r = lambda = 0``
is Wang & Isola's alignment + uniformity on the common branch alone.

**Background mask.** ``batch["labels"]`` holds ``b`` per row (1 = target, 0 = background): set the collator's
``label_column`` to the dataset's ``is_target`` column. A global batch without any target row is refused (the
target alignment would be a mean over nothing); one without background rows simply has ``L_infoless = 0``. Keep both
kinds in every batch (shuffled data with a few percent of each is enough at batch sizes of a few hundred).

**Embeddings** (from a model's ``embed_column`` returning ``{"embedding": c, "salient": s}``, e.g.
:class:`~hf_contrastive.models.sepclr.SepCLRModel`): ``view_columns[v]`` is the common projector output ``[B, D_c]``
of view ``v`` and ``f"{view_columns[v]}.salient"`` its salient projector output ``[B, D_s]``.

**Exact under DDP.** Per-row terms (alignments, ``JEM``'s rows against all gathered rows) are local sums scaled by
``W / n_global`` with the global counts ``n`` of targets / background rows, so the mean of the ranks' losses is the
global loss. ``unif`` is the log of a mean over all global pairs, which does not split over rows: every rank
computes it on the gathered codes; since ``gather_with_grad`` sums the gradients every rank sends back to a row and
DDP averages, the model gradient is exactly that of the single-process loss. Runs under the gradient cache (a
function of the embedding matrix). A ``BatchNorm`` projector (the paper's) uses per-rank / per-mini-batch
statistics, so for exact equivalence use ``projector_norm="layer"`` or ``"none"`` in ``SepCLRConfig``.

Shapes: ``[B, D_c]`` and ``[B, D_s]`` per view, ``batch["labels"]`` ``[B]``; kernels ``[B, N]`` (``N = W * B``)
and ``[N, N]`` for the uniformity. Memory ``O(N^2)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import distributed
from .base import ContrastiveObjective, ObjectiveOutput

SEPCLR_CITATION = """@inproceedings{louiset2024sepclr,
  title = {Separating common from salient patterns with Contrastive Representation Learning},
  author = {Louiset, Robin and Duchesnay, Edouard and Grigis, Antoine and Gori, Pietro},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2024}
}"""


def squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``||u_i - v_j||^2`` ``[n, m]`` of ``u`` ``[n, D]`` and ``v`` ``[m, D]`` (a difference, so exactly 0 on ties)."""
    return (u[:, None, :] - v[None, :, :]).square().sum(dim=-1)


def uniformity(z: torch.Tensor, tau: float) -> torch.Tensor:
    """``log mean_{i<j} exp(-||z_i - z_j||^2 / (2 tau))`` of ``z`` ``[N, D]`` (Wang & Isola with ``t = 1 / (2 tau)``)."""
    rows, columns = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    pair_log_kernel = -(z[rows] - z[columns]).square().sum(dim=-1) / (2 * tau)
    return pair_log_kernel.logsumexp(dim=0) - math.log(len(rows))


def joint_entropy_rows(
    common: torch.Tensor, salient: torch.Tensor, all_common: torch.Tensor, all_salient: torch.Tensor, tau: float
) -> torch.Tensor:
    """``log mean_j k(c_i, c_j) k(s_i, s_j)`` ``[B]`` of local rows against all ``N`` rows (``j = i`` included)."""
    log_kernel = -(squared_distances(common, all_common) + squared_distances(salient, all_salient)) / (2 * tau)
    return log_kernel.logsumexp(dim=1) - math.log(all_common.shape[0])


class SepCLRLoss(ContrastiveObjective):
    """SepCLR: common/salient contrastive analysis with the info-less salient vector and the k-JEM term.

    Args:
        tau: kernel bandwidth of every term (0.5 in every experiment of the paper).
        salient_weight: ``beta_s`` on ``L_salient`` (CIFAR-10-MNIST: 1000).
        infoless_weight: ``beta_r`` on ``L_infoless`` (CIFAR-10-MNIST: 1000).
        jem_weight: ``lambda`` on ``L_jem`` (10 everywhere).
        uniformity_weight: ``w_u``, weight of the summed uniformity of the two views is ``w_u / 2`` (code: 2).
        view_columns: the embedding columns of the two views' common codes; the salient codes are read from
            ``f"{column}.salient"``.
        gather_across_devices: every term over the rows of all ranks (exact gradients).
    """

    name = "sepclr"
    paper = "2402.11928"
    citation = SEPCLR_CITATION

    def __init__(
        self,
        tau: float = 0.5,
        salient_weight: float = 1000.0,
        infoless_weight: float = 1000.0,
        jem_weight: float = 10.0,
        uniformity_weight: float = 2.0,
        view_columns: tuple[str, str] = ("x_view_1", "x_view_2"),
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}.")
        weights = {"salient_weight": salient_weight, "infoless_weight": infoless_weight, "jem_weight": jem_weight}
        negative = {
            name: value for name, value in {**weights, "uniformity_weight": uniformity_weight}.items() if value < 0
        }
        if negative:
            raise ValueError(f"SepCLR weights must be >= 0, got {negative}.")
        if len(view_columns) != 2:
            raise ValueError(f"view_columns must name exactly two view columns, got {list(view_columns)}.")
        self.tau = tau
        self.salient_weight, self.infoless_weight, self.jem_weight = salient_weight, infoless_weight, jem_weight
        self.uniformity_weight = uniformity_weight
        self.view_columns = tuple(view_columns)
        self.required_columns = (*self.view_columns, *(f"{column}.salient" for column in self.view_columns))
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local SepCLR loss; logs every term (global values) and the global share of target rows."""
        self.check_columns(tuple(embeddings))
        common = [F.normalize(embeddings[column], dim=-1) for column in self.view_columns]
        salient = [embeddings[f"{column}.salient"] for column in self.view_columns]
        is_target = self._target_mask(batch, len(common[0]), common[0].device)
        all_target = self._gather_no_grad(is_target)
        if not all_target.any():
            raise ValueError(
                f"SepCLR needs target rows (batch['labels'] == 1) in every batch, but this global batch of "
                f"{len(all_target)} rows has only background rows: shuffle the data or raise the batch size."
            )
        terms = self._terms(common, salient, is_target, all_target)
        loss = (
            terms["common"]
            + self.salient_weight * terms["salient"]
            + self.infoless_weight * terms["infoless"]
            + self.jem_weight * terms["jem"]
        )
        values = torch.stack([value.detach() for value in terms.values()])
        if self.gather_across_devices:  # the mean over ranks of the local terms is the global value
            values = distributed.all_reduce_sum(values) / distributed.world_size()
        logs = {f"{name}_loss": value for name, value in zip(terms, values)}
        logs["target_fraction"] = all_target.float().mean()
        return ObjectiveOutput(loss=loss, logs=logs)

    def _terms(
        self,
        common: list[torch.Tensor],
        salient: list[torch.Tensor],
        is_target: torch.Tensor,
        all_target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """This rank's share of ``L_common``, ``L_salient``, ``L_infoless`` and ``L_jem`` (see the module docstring).

        Per-row sums are scaled by ``W / n_global`` (rows, targets or background rows of the global batch), so that
        the mean over ranks is the global mean; the uniformities are global on every rank.
        """
        ranks = distributed.world_size() if self.gather_across_devices else 1
        per_row = ranks / len(all_target)
        per_target = ranks / int(all_target.sum())
        per_background = ranks / max(int((~all_target).sum()), 1)  # no background row: the term is 0
        # s~: background rows set to the info-less vector 0 (multiplying by 0 also stops their gradient).
        teacher = [s * is_target[:, None].to(s.dtype) for s in salient]
        background = [s[~is_target] for s in salient]
        return {
            "common": self._alignment_sum(*common) * per_row + self._uniformity(common),
            "salient": self._alignment_sum(salient[0][is_target], salient[1][is_target]) * per_target
            + self._uniformity(teacher),
            "infoless": sum(self._alignment_sum(s, torch.zeros_like(s)) for s in background) / 2 * per_background,
            "jem": sum(self._jem_sum(c, s) for c, s in zip(common, teacher)) / 2 * per_row,
        }

    def _target_mask(self, batch: dict, local_batch: int, device: torch.device) -> torch.Tensor:
        """Boolean ``[B]`` from ``batch["labels"]`` (1 = target, 0 = background); a ValueError says how otherwise."""
        labels = batch.get("labels")
        if labels is None:
            raise ValueError(
                "SepCLR needs batch['labels'] = 1 for target rows and 0 for background rows: set the collator's "
                "label_column to the dataset's is_target column."
            )
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (local_batch,) or not ((labels == 0) | (labels == 1)).all():
            raise ValueError(
                f"SepCLR needs batch['labels'] to be {local_batch} values in {{0 (background), 1 (target)}}, got "
                f"shape {tuple(labels.shape)} with values {sorted(set(labels.flatten().tolist()))[:5]}."
            )
        return labels == 1

    def _alignment_sum(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``sum_i ||u_i - v_i||^2 / (2 tau)`` over local rows (0 for none)."""
        return (u - v).square().sum() / (2 * self.tau)

    def _uniformity(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``w_u / 2 * (unif(z_1) + unif(z_2))`` over the gathered rows (the same value on every rank)."""
        return self.uniformity_weight / 2 * sum(uniformity(self._gather(z), self.tau) for z in views)

    def _jem_sum(self, common: torch.Tensor, salient: torch.Tensor) -> torch.Tensor:
        """Sum over local rows of the JEM row terms against every gathered row."""
        return joint_entropy_rows(common, salient, self._gather(common), self._gather(salient), self.tau).sum()

    def get_config_dict(self) -> dict:
        return {
            "tau": self.tau,
            "salient_weight": self.salient_weight,
            "infoless_weight": self.infoless_weight,
            "jem_weight": self.jem_weight,
            "uniformity_weight": self.uniformity_weight,
            "view_columns": list(self.view_columns),
            "gather_across_devices": self.gather_across_devices,
        }
