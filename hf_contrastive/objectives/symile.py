"""Symile: contrast M-tuples of modalities with the multilinear inner product (MIP); any M >= 2.

Saporta et al., *Contrasting with Symile: Simple Model-Agnostic Representation Learning for Unlimited Modalities*
(NeurIPS 2024, arXiv 2411.01053). For representations ``r_1 .. r_M`` [N, D] of a batch of N aligned tuples:

.. math::

    \\mathrm{MIP}(u_1, \\dots, u_M) = \\sum_{d=1}^{D} \\prod_{m=1}^{M} u_{m,d}

    L_a = \\frac{1}{N} \\sum_i -\\log \\frac{\\exp(s \\, \\mathrm{MIP}(r_a^i, r_{-a}^i))}
          {\\exp(s \\, \\mathrm{MIP}(r_a^i, r_{-a}^i))
           + \\sum_{u \\in \\mathrm{Neg}(i)} \\exp(s \\, \\langle r_a^i, u \\rangle)},
    \\qquad L = \\frac{1}{M} \\sum_a L_a

with ``s = exp(log_scale)`` learned, every modality ``a`` taking its turn as the anchor, and ``Neg(i)`` built from
products of non-anchor rows (:func:`symile_logits`):

- ``"n"`` (O(N), the package default): each non-anchor modality's rows are shuffled by its own fresh permutation,
  ``u_j = prod_{m != a} r_m^{pi_m(j)}``; the diagonal is overwritten with the positive, so every row has N - 1
  negatives (all rows share them). Memory: logits [B, N] and one product [N, D] per anchor.
- ``"n_squared"`` (O(N^{M-1})): every combination of non-anchor rows, laid out by cyclic shifts
  (:func:`shift_products`); N^{M-1} - 1 negatives per row. Memory: products [N^{M-1}, D] and logits [B, N^{M-1}]
  per anchor, so keep N small or M = 3.

With M = 2 both modes use the unshuffled matrix ``s * r_a r_b^T`` and the loss is exactly CLIP's symmetric InfoNCE
(a permutation would put the true partner among the negatives).

Distributed (``gather_across_devices``): local anchors [B, D] against the candidates of the *global* batch (every
column gathered with gradient, N = W * B), labels ``rank * B + arange(B)``. The ``"n"`` permutations are drawn over
the global batch from a generator seeded with ``seed + call count``, so every rank builds the same candidates and
2 processes x B equals 1 process x 2B exactly (tested), cached or not. The call count is saved with the objective's
state, so a resumed run draws the permutations of the uninterrupted run.

Columns: ``columns`` (default ``("a", "b", "c")``), one embedding [B, D] per modality, all the same D.

Hyperparameters: ``negative_sampling``, ``normalize`` (L2-normalise first: the package README does, the paper's
experiment models do not), ``logit_scale_init`` (log of s; CLIP 2.659, the package's XOR example -0.3),
``learnable_logit_scale``, ``max_scale`` (clamp on s), ``seed``.

Also here: :class:`PairwiseCLIPLoss`, the paper's baseline (the symmetric CLIP loss *summed* over all modality
pairs), and the zero-shot scores of both (:func:`symile_scores`, :func:`pairwise_clip_scores`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput, ResumableRandomState, ScaledSimilarity
from .clip import clip_loss

SYMILE_CITATION = """@inproceedings{saporta2024symile,
  title = {Contrasting with Symile: Simple Model-Agnostic Representation Learning for Unlimited Modalities},
  author = {Saporta, Adriel and Puli, Aahlad and Goldstein, Mark and Ranganath, Rajesh},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2024}
}"""

NEGATIVE_SAMPLING = ("n", "n_squared")


def mip(*vectors: torch.Tensor) -> torch.Tensor:
    """Multilinear inner product ``sum_d prod_m u_{m,d}`` of M tensors [..., D] (broadcast); returns [...]."""
    if len(vectors) < 2:
        raise ValueError(f"mip needs at least two vectors, got {len(vectors)}.")
    return math.prod(vectors[1:], start=vectors[0]).sum(dim=-1)


def shuffled_product(non_anchors: Sequence[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """``u_j = prod_m r_m[pi_m(j)]`` [N, D]: each non-anchor [N, D] permuted by its own fresh permutation pi_m."""
    rows = non_anchors[0].shape[0]
    permutations = [torch.randperm(rows, generator=generator).to(r.device) for r in non_anchors]
    return math.prod(r[permutation] for r, permutation in zip(non_anchors, permutations))


def shift_products(non_anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every combination of non-anchor rows as one product each: [N^K, D] for K tensors [N, D].

    Column ``(k_K, ..., k_2, j)`` (row-major, ``j`` fastest) holds ``r_1^j * r_2^{(j - k_2) mod N} * ... *
    r_K^{(j - k_K) mod N}``: for K = 2, block k is ``r_b^j * r_c^{(j - k) mod N}`` as in the reference
    ``compute_logits_n_squared_3_modes``. Block 0 holds the matched rows, so the positive of row i is column i, and
    the N^K columns enumerate every row combination exactly once.
    """
    rows = non_anchors[0].shape[0]
    products = non_anchors[0]  # [N^(t-1) * N, D] after t factors, viewed as blocks of N rows
    for tensor in non_anchors[1:]:
        shifted = torch.stack([torch.roll(tensor, shifts=k, dims=0) for k in range(rows)])  # [N_k, N_j, D]
        blocks = products.view(-1, rows, products.shape[-1])  # [N^(t-1), N_j, D]
        products = (shifted[:, None] * blocks[None]).reshape(-1, products.shape[-1])
    return products


def symile_logits(
    anchor: torch.Tensor,
    non_anchors: Sequence[torch.Tensor],
    candidates: Sequence[torch.Tensor],
    labels: torch.Tensor,
    negative_sampling: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unscaled logits of local anchors: [B, N] (``"n"`` or M = 2) or [B, N^{M-1}] (``"n_squared"``).

    anchor: [B, D]; non_anchors: the other modalities' local rows, each [B, D]; candidates: the same modalities
    gathered over ranks, each [N, D]; labels: [B], the column of each anchor's positive (``rank * B + arange(B)``).
    ``generator`` draws the ``"n"`` permutations (required then).
    """
    if len(candidates) == 1:  # M = 2: CLIP's unshuffled matrix, its diagonal is the positive
        return anchor @ candidates[0].T
    if negative_sampling == "n_squared":
        return anchor @ shift_products(candidates).T
    if generator is None:  # the global RNG would differ between ranks and break the exact distributed loss
        raise ValueError("symile_logits with negative_sampling='n' needs a generator for its permutations.")
    logits = anchor @ shuffled_product(candidates, generator).T
    positives = mip(anchor, *non_anchors)  # [B]
    return logits.scatter(1, labels[:, None], positives[:, None])


class SymileLoss(ResumableRandomState, ScaledSimilarity, ContrastiveObjective):
    """Symile over any M >= 2 modality columns: MIP scores, each modality the anchor in turn, mean over anchors.

    Args:
        columns: the modality columns (embedding names), at least two, all embeddings of the same size.
        negative_sampling: ``"n"`` (shuffled negatives, O(N)) or ``"n_squared"`` (all row combinations,
            O(N^{M-1}) memory).
        normalize: L2-normalise every representation first (package README; the paper's experiments used raw
            LayerNorm outputs: set False to reproduce those).
        logit_scale_init: initial ``log s``.
        learnable_logit_scale: learn ``log s`` (a ``log_scale`` parameter); False keeps it fixed.
        max_scale: upper clamp on ``s``.
        seed: base seed of the ``"n"`` permutations (drawn from ``seed + number of previous calls``).
        gather_across_devices: candidates from every rank (exact gradient, see the module docstring).
    """

    name = "symile"
    paper = "2411.01053"
    citation = SYMILE_CITATION
    random_state = ("calls",)

    def __init__(
        self,
        columns: Sequence[str] = ("a", "b", "c"),
        negative_sampling: str = "n",
        normalize: bool = True,
        logit_scale_init: float = math.log(1 / 0.07),
        learnable_logit_scale: bool = True,
        max_scale: float = 100.0,
        seed: int = 0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {negative_sampling!r}.")
        init_modality_scale(self, columns, normalize, logit_scale_init, learnable_logit_scale, max_scale)
        self.negative_sampling = negative_sampling
        self.seed = seed
        self.gather_across_devices = gather_across_devices
        self.calls = 0  # advances the permutation seed identically on every rank

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local Symile loss over ``embeddings[column]`` [B, D] for every column (``batch`` is not read)."""
        self.check_columns(tuple(embeddings))
        local = {column: self._prepare(embeddings[column]) for column in self.required_columns}
        gathered = {column: self._gather(rep) for column, rep in local.items()}
        global_batch = next(iter(gathered.values())).shape[0]
        if global_batch < 2:  # one tuple has no negative: the loss would be 0 and teach nothing
            raise ValueError("SymileLoss needs at least 2 rows per (gathered) batch: raise the batch size.")
        first = local[self.required_columns[0]]
        offset = self._local_offset(first.shape[0])
        labels = torch.arange(offset, offset + first.shape[0], device=first.device)
        generator = torch.Generator().manual_seed(self.seed + self.calls)
        self.calls += 1
        scale = self.scale()
        losses, hits = [], []
        for anchor in self.required_columns:
            others = [column for column in self.required_columns if column != anchor]
            logits = scale * symile_logits(
                local[anchor],
                [local[c] for c in others],
                [gathered[c] for c in others],
                labels,
                self.negative_sampling,
                generator,
            )
            # Half-precision logits are upcast for the log-sum-exp; float64 stays float64 (gradient checks).
            losses.append(F.cross_entropy(logits.float() if logits.element_size() < 4 else logits, labels))
            hits.append((logits.argmax(dim=1) == labels).float().mean())
        loss = torch.stack(losses).mean()
        logs = {
            "accuracy": torch.stack(hits).mean().detach(),
            "logit_scale": torch.as_tensor(scale, dtype=torch.float32).detach(),
            "log_n": torch.tensor(math.log(global_batch)),  # log N - L lower-bounds the total correlation
        }
        return ObjectiveOutput(loss=loss, logs=logs)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """N - 1 (``"n"`` and M = 2) or N^{M-1} - 1 (``"n_squared"``) per anchor row."""
        if self.negative_sampling == "n_squared":
            return gathered_rows ** (len(self.required_columns) - 1) - 1
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "columns": list(self.required_columns),
            "negative_sampling": self.negative_sampling,
            **modality_scale_config(self),
            "seed": self.seed,
        }


class PairwiseCLIPLoss(ScaledSimilarity, ContrastiveObjective):
    """The Symile paper's baseline: the symmetric CLIP loss summed (not averaged) over all pairs of ``columns``.

    ``L = sum_{m < n} 1/2 [CE(s r_m r_n^T) + CE(s r_n r_m^T)]`` with one shared learned ``s``; for two columns it
    is CLIP. Local anchors against gathered candidates as :func:`hf_contrastive.objectives.clip.clip_loss` does.
    Arguments as :class:`SymileLoss` (no negative sampling: each pair uses its full N x N matrix).
    """

    name = "pairwise_clip"
    paper = "2411.01053"
    citation = SYMILE_CITATION

    def __init__(
        self,
        columns: Sequence[str] = ("a", "b", "c"),
        normalize: bool = True,
        logit_scale_init: float = math.log(1 / 0.07),
        learnable_logit_scale: bool = True,
        max_scale: float = 100.0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        init_modality_scale(self, columns, normalize, logit_scale_init, learnable_logit_scale, max_scale)
        self.gather_across_devices = gather_across_devices

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local pairwise CLIP loss over ``embeddings[column]`` [B, D] for every column."""
        self.check_columns(tuple(embeddings))
        local = {column: self._prepare(embeddings[column]) for column in self.required_columns}
        offset = self._local_offset(next(iter(local.values())).shape[0])
        scale = self.scale()
        pair_losses = [
            clip_loss(local[m], local[n], scale, offset, 0.0, gather=self._gather)
            for m, n in itertools.combinations(self.required_columns, 2)
        ]
        logs = {"logit_scale": torch.as_tensor(scale, dtype=torch.float32).detach()}
        return ObjectiveOutput(loss=torch.stack(pair_losses).sum(), logs=logs)

    def get_config_dict(self) -> dict:
        return {"columns": list(self.required_columns), **modality_scale_config(self)}


def init_modality_scale(
    objective: ScaledSimilarity,
    columns: Sequence[str],
    normalize: bool,
    logit_scale_init: float,
    learnable_logit_scale: bool,
    max_scale: float,
) -> None:
    """Validate ``columns`` (>= 2, distinct) and set the learned ``log_scale`` = ``logit_scale_init`` (Symile's
    parameterisation of :class:`ScaledSimilarity`: ``s = exp(log_scale)``, temperature ``1 / s``)."""
    columns = tuple(columns)
    if len(columns) < 2 or len(set(columns)) != len(columns):
        raise ValueError(f"columns must name at least two distinct modalities, got {list(columns)}.")
    objective.required_columns = columns
    objective.logit_scale_init = logit_scale_init
    similarity = "cosine" if normalize else "dot"
    objective.init_similarity(math.exp(-logit_scale_init), learnable_logit_scale, max_scale, similarity)


def modality_scale_config(objective: ScaledSimilarity) -> dict:
    """The scale and normalisation settings shared by :class:`SymileLoss` and :class:`PairwiseCLIPLoss`."""
    return {
        "normalize": objective.similarity == "cosine",
        "logit_scale_init": objective.logit_scale_init,
        "learnable_logit_scale": objective.learnable_temperature,
        "max_scale": objective.max_scale,
    }


def symile_scores(query_reps: Mapping[str, torch.Tensor], target: str, candidates: torch.Tensor) -> torch.Tensor:
    """Zero-shot scores [Q, C] of ``candidates`` [C, D] of modality ``target`` for queries of the other modalities.

    ``score[q, c] = MIP(candidates[c], r_m[q] for m != target) = (prod_{m != target} r_m[q]) . candidates[c]``;
    ``query_reps``: ``{modality: [Q, D]}`` (a ``target`` entry is ignored), prepared as in training (normalised
    when the loss normalised). Predict with ``argmax`` over candidates; the logit scale does not change it.
    """
    queries = [rep for modality, rep in query_reps.items() if modality != target]
    if not queries:
        raise ValueError(f"symile_scores needs at least one query modality besides {target!r}.")
    return math.prod(queries) @ candidates.T


def pairwise_clip_scores(
    query_reps: Mapping[str, torch.Tensor], target: str, candidates: torch.Tensor
) -> torch.Tensor:
    """Pairwise-CLIP zero-shot scores [Q, C]: ``sum_{m != target} r_m[q] . candidates[c]``.

    The paper adds the pairwise terms among the query modalities, a constant per query that cannot change the
    argmax; it is left out. Arguments as :func:`symile_scores`.
    """
    queries = [rep for modality, rep in query_reps.items() if modality != target]
    if not queries:
        raise ValueError(f"pairwise_clip_scores needs at least one query modality besides {target!r}.")
    return sum(queries) @ candidates.T
