"""Contrastive terms of sequential recommendation: CL4SRec's view contrast and MCLRec's four-view terms.

Both objectives read the sequence representations of two augmented views of every local sequence (``view_1``,
``view_2``: ``h1``, ``h2`` [B, d] from :class:`~hf_contrastive.models.seq_rec.SASRec`) and, for MCLRec, the two model
views (``model_view_1``, ``model_view_2``: ``z1``, ``z2`` [B, d], unit norm). The next-item cross-entropy ``L_rec``
is the model's own loss (``SASRec.next_item_loss``); the trainer adds these terms to it.

The pair contrast (SimCLR's NT-Xent with dot products, as RecBole's ``sim='dot'``): for a pair of views ``(a, b)``
gathered over ranks into ``A, B`` [N, d] (N = W*B), the 2B local anchors ``[a; b]`` are scored against the 2N
candidates ``[A; B]``, ``s_ij = <x_i, c_j> / tau``; the anchor's own row is excluded and its partner ``p(i)`` (the
other view of the same sequence) is the positive, so each anchor has 2N - 2 negatives:

.. math::

    L_{con}(a, b) = \\frac{1}{2B} \\sum_i -\\log \\frac{\\exp s_{i,p(i)}}{\\exp s_{i,p(i)} + \\sum_{j \\notin \\{i,
    p(i)\\}} \\exp s_{ij}}

This is :class:`~hf_contrastive.objectives.simclr.NTXentLoss` with dot products instead of cosines; it is built
here once as :class:`PairScores` because MCLRec's regulariser needs the same logits split into positives and
negatives. The loss is local (local anchors, gathered candidates): with DDP averaging, gradients equal the
single-process gradients of the global batch. Memory ``O(2B x 2N)`` per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput, ScaledSimilarity

CL4SREC_CITATION = """@inproceedings{xie2022cl4srec,
  title = {Contrastive Learning for Sequential Recommendation},
  author = {Xie, Xu and Sun, Fei and Liu, Zhaoyang and Wu, Shiwen and Gao, Jinyang and Zhang, Jiandong and Ding,
            Bolin and Cui, Bin},
  booktitle = {IEEE International Conference on Data Engineering (ICDE)},
  year = {2022}
}"""

MCLREC_CITATION = """@inproceedings{qin2023mclrec,
  title = {Meta-optimized Contrastive Learning for Sequential Recommendation},
  author = {Qin, Xiuyuan and Yuan, Huanhuan and Zhao, Pengpeng and Fang, Junhua and Zhuang, Fuzhen and Liu, Guanfeng
            and Liu, Yanchi and Sheng, Victor},
  booktitle = {ACM SIGIR Conference on Research and Development in Information Retrieval},
  pages = {89--98},
  year = {2023}
}"""


@dataclass
class PairScores:
    """Dot products of the 2B local anchors ``[a; b]`` with the 2N gathered candidates ``[A; B]``.

    ``dots`` [2B, 2N]; ``own`` [2B]: each anchor's own column; ``partner`` [2B]: its positive (the other view).
    """

    dots: torch.Tensor
    own: torch.Tensor
    partner: torch.Tensor

    @classmethod
    def build(cls, a: torch.Tensor, b: torch.Tensor, a_all: torch.Tensor, b_all: torch.Tensor, offset: int):
        """Scores of local views ``a, b`` [B, d] against gathered ``a_all, b_all`` [N, d] (rows ``offset..+B``)."""
        rows = torch.arange(offset, offset + a.shape[0], device=a.device)
        gathered = a_all.shape[0]
        dots = torch.cat([a, b]) @ torch.cat([a_all, b_all]).T
        return cls(dots, torch.cat([rows, rows + gathered]), torch.cat([rows + gathered, rows]))

    def _columns(self, index: torch.Tensor) -> torch.Tensor:
        return F.one_hot(index, self.dots.shape[1]).bool()

    def _logits(self, scale: float | torch.Tensor) -> torch.Tensor:
        """``scale * dots``, in float32 when the embeddings are half precision (the softmax needs the range)."""
        logits = scale * self.dots
        return logits.float() if logits.element_size() < 4 else logits

    def nt_xent(self, scale: float | torch.Tensor) -> torch.Tensor:
        """``L_con``: mean over the local anchors of the CE of the positive among all but the anchor itself."""
        logits = self._logits(scale)
        logits = logits.masked_fill(self._columns(self.own), torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, self.partner)

    def regulariser(self, scale: float | torch.Tensor) -> torch.Tensor:
        """MCLRec's ``R``: ``mean_i [s+_i - o_min,i]_+ + mean_ij [o_max,i - s-_ij]_+`` per anchor (as coded).

        ``o_min,i = min(s+_i, max_j s-_ij)``, ``o_max,i = max(s+_i, max_j s-_ij)``, no detach; negatives [2B, 2N-2].
        """
        logits = self._logits(scale)
        positive = logits.gather(1, self.partner[:, None])  # [2B, 1]
        negatives = logits[~(self._columns(self.own) | self._columns(self.partner))].view(logits.shape[0], -1)
        hardest = negatives.max(dim=1, keepdim=True).values
        low, high = torch.minimum(positive, hardest), torch.maximum(positive, hardest)
        return (positive - low).clamp(min=0).mean() + (high - negatives).clamp(min=0).mean()

    def accuracy(self) -> torch.Tensor:
        """Share of anchors whose positive scores highest among the candidates but themselves (a log)."""
        best = self.dots.masked_fill(self._columns(self.own), float("-inf")).argmax(dim=1)
        return (best == self.partner).float().mean().detach()


class CL4SRecLoss(ScaledSimilarity, ContrastiveObjective):
    """CL4SRec: ``weight * L_con(h1, h2)`` between two augmented views of each sequence (added to ``L_rec``).

    Columns: ``view_1``, ``view_2`` [B, d]. Args:
        temperature: ``tau`` (RecBole / MCLRec: 1.0 with dot products).
        weight: ``lambda`` in ``L = L_rec + lambda * L_cl`` (CL4SRec: 0.1).
        similarity: ``"dot"`` (RecBole's CL4SRec, MCLRec) or ``"cosine"``.
        gather_across_devices: negatives from every rank.
    """

    name = "cl4srec"
    paper = "2010.14395"
    citation = CL4SREC_CITATION
    required_columns = ("view_1", "view_2")

    def __init__(
        self,
        temperature: float = 1.0,
        weight: float = 0.1,
        similarity: str = "dot",
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        self.init_similarity(temperature, False, 100.0, similarity)
        self.weight = weight
        self.gather_across_devices = gather_across_devices

    def pair_scores(self, first: torch.Tensor, second: torch.Tensor) -> PairScores:
        """:class:`PairScores` of two local views [B, d] against both views gathered over ranks."""
        first, second = self._prepare(first), self._prepare(second)
        return PairScores.build(
            first, second, self._gather(first), self._gather(second), self._local_offset(len(first))
        )

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """``weight * L_con(view_1, view_2)``; logs the unweighted ``cl_loss`` and ``cl_accuracy``."""
        self.check_columns(tuple(embeddings))
        scores = self.pair_scores(embeddings["view_1"], embeddings["view_2"])
        contrast = scores.nt_xent(self.scale())
        return ObjectiveOutput(
            self.weight * contrast, {"cl_loss": contrast.detach(), "cl_accuracy": scores.accuracy()}
        )

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Every other row of both views: ``2 * W*B - 2``."""
        return 2 * gathered_rows - 2

    def get_config_dict(self) -> dict:
        return {"temperature": self.temperature, "weight": self.weight, "similarity": self.similarity}


class MCLRecLoss(CL4SRecLoss):
    """MCLRec's contrastive terms over the data views ``h1, h2`` and the model views ``z1, z2`` (dot products).

    .. math::

        L_{cl1} = L_{con}^{\\tau}(h_1, h_2), \\quad
        L_{cl2} = L_{con}^{\\tau'}(h_1, z_2) + L_{con}^{\\tau'}(h_2, z_1) + L_{con}^{\\tau'}(z_1, z_2), \\quad
        R = R^{\\tau}(h_1, z_2) + R^{\\tau}(h_2, z_1) + R^{\\tau}(z_1, z_2)

    Encoder step (``forward``, paper Eq. 14): ``lambda * L_cl1 + beta * (L_cl2 + regulariser_weight * R)`` (the
    trainer adds ``L_rec``); augmenter step (:meth:`augmenter_loss`, as coded): ``lambda * L_cl1 + L_cl2 +
    augmenter_regulariser_weight * R`` (``L_cl1`` has no augmenter parameters; kept so the step matches the code).

    Columns: ``view_1``, ``view_2``, ``model_view_1``, ``model_view_2`` [B, d]. Args:
        temperature: ``tau`` of ``L_cl1`` and ``R`` (config ``tau``, 1.0).
        view_weight: ``lambda`` (Beauty 0.0, Sports 0.04, Yelp 0.03, ML-1M 0.0).
        model_view_weight: ``beta`` (Beauty 0.05, Sports 0.4, Yelp 0.1, ML-1M 0.01).
        regulariser_weight: ``gamma / beta`` in the encoder step (0.1).
        augmenter_regulariser_weight: weight of ``R`` in the augmenter step (0.1, not scaled by beta).
        model_view_temperature: ``tau'`` of ``L_cl2`` (hard-coded 1.0 in the code).
        gather_across_devices: negatives from every rank.
    """

    name = "mclrec"
    paper = "2304.07763"
    citation = MCLREC_CITATION
    required_columns = ("view_1", "view_2", "model_view_1", "model_view_2")

    def __init__(
        self,
        temperature: float = 1.0,
        view_weight: float = 0.1,
        model_view_weight: float = 0.1,
        regulariser_weight: float = 0.1,
        augmenter_regulariser_weight: float = 0.1,
        model_view_temperature: float = 1.0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__(temperature, view_weight, "dot", gather_across_devices)
        for name, value in (
            ("model_view_weight", model_view_weight),
            ("regulariser_weight", regulariser_weight),
            ("augmenter_regulariser_weight", augmenter_regulariser_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if model_view_temperature <= 0:
            raise ValueError(f"model_view_temperature must be > 0, got {model_view_temperature}.")
        self.model_view_weight = model_view_weight
        self.regulariser_weight = regulariser_weight
        self.augmenter_regulariser_weight = augmenter_regulariser_weight
        self.model_view_temperature = model_view_temperature

    def terms(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"cl1", "cl2", "reg", "cl1_accuracy"}``: the unweighted terms of the module formula."""
        self.check_columns(tuple(embeddings))
        h1, h2, z1, z2 = (embeddings[name] for name in self.required_columns)
        views = self.pair_scores(h1, h2)
        model_pairs = [self.pair_scores(h1, z2), self.pair_scores(h2, z1), self.pair_scores(z1, z2)]
        return {
            "cl1": views.nt_xent(self.scale()),
            "cl2": sum(pair.nt_xent(1.0 / self.model_view_temperature) for pair in model_pairs),
            "reg": sum(pair.regulariser(self.scale()) for pair in model_pairs),
            "cl1_accuracy": views.accuracy(),
        }

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Encoder step: ``lambda * L_cl1 + beta * (L_cl2 + regulariser_weight * R)``; logs the three terms."""
        terms = self.terms(embeddings)
        loss = self.weight * terms["cl1"] + self.model_view_weight * (
            terms["cl2"] + self.regulariser_weight * terms["reg"]
        )
        return ObjectiveOutput(loss, {key: value.detach() for key, value in terms.items()})

    def augmenter_loss(self, embeddings: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """Augmenter step: ``lambda * L_cl1 + L_cl2 + augmenter_regulariser_weight * R``."""
        terms = self.terms(embeddings)
        loss = self.weight * terms["cl1"] + terms["cl2"] + self.augmenter_regulariser_weight * terms["reg"]
        return ObjectiveOutput(loss, {f"augmenter_{key}": value.detach() for key, value in terms.items()})

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "view_weight": self.weight,
            "model_view_weight": self.model_view_weight,
            "regulariser_weight": self.regulariser_weight,
            "augmenter_regulariser_weight": self.augmenter_regulariser_weight,
            "model_view_temperature": self.model_view_temperature,
        }
