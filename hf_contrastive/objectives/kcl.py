"""KCL's contrastive pre-training loss: NT-Xent between a molecule's graph and its knowledge-augmented graph.

For a batch of N molecules with projections ``z_i = P(h_i)`` of the original graph and ``z'_i = P(h'_i)`` of the
augmented graph, the official code (ZJU-Fangyin/KCL ``code/model/loss``) computes

.. math::

    E = \\mathrm{normalize}([z_1..z_N; z'_1..z'_N]) \\in \\mathbb{R}^{2N \\times D}, \\qquad
    \\ell_r = -\\log \\frac{\\exp(E_r \\cdot E_{(r+N) \\bmod 2N} / \\tau)}{\\sum_{s \\ne r} \\exp(E_r \\cdot E_s / \\tau)},
    \\qquad L = \\frac{1}{2N} \\sum_{r=1}^{2N} \\ell_r

so every row of both views is an anchor, its other view is the positive, and the other ``2N - 2`` rows of both
views are negatives (hard negatives come from batching clusters of similar molecules, not from the loss). This is
exactly SimCLR's NT-Xent, so the class reuses :class:`~hf_contrastive.objectives.simclr.NTXentLoss` (local anchors
against the rows of every rank, exact gradients; runs under the gradient cache) with KCL's columns and temperature.

The temperature is 0.05: the reference code hard-codes the logit scale 20 and ignores its ``--temperature 0.1``
argument (recorded in ``../shared/papers/kcl.md``); pass ``temperature=0.1`` for the paper's stated value.

Shapes: ``original`` / ``augmented`` ``[B, D]`` (D = 128 in KCL); logits ``[B, 2*W*B]`` per direction.
Columns: ``original``, ``augmented`` (the embedding names of :class:`~hf_contrastive.models.kcl.KCLModel`).
"""

from __future__ import annotations

from .simclr import NTXentLoss

KCL_CITATION = """@inproceedings{fang2022kcl,
  title = {Molecular Contrastive Learning with Chemical Element Knowledge Graph},
  author = {Fang, Yin and Zhang, Qiang and Yang, Haihong and Zhuang, Xiang and Deng, Shumin and Zhang, Wen and
            Qin, Ming and Chen, Zhuo and Fan, Xiaohui and Chen, Huajun},
  booktitle = {AAAI Conference on Artificial Intelligence},
  year = {2022}
}"""


class KCLLoss(NTXentLoss):
    """KCL's NT-Xent over the original-graph and augmented-graph projections (see the module docstring).

    Args:
        view_columns: the embedding names of the original and the knowledge-augmented view.
        temperature: ``tau``; 0.05 is what the reference code uses (logits x 20).
        learnable_temperature / max_scale: learn ``log(1 / tau)`` (not in KCL), clamped at ``max_scale``.
        gather_across_devices: negatives from every rank.
    """

    name = "kcl"
    paper = "2112.00544"
    citation = KCL_CITATION

    def __init__(
        self,
        view_columns: tuple[str, str] | list[str] = ("original", "augmented"),
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__(view_columns, temperature, learnable_temperature, max_scale, gather_across_devices)
