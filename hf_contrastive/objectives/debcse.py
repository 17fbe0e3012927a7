"""DebCSE: contrastive sentence embeddings with positives and hard negatives chosen by inverse-propensity weights.

DebCSE (Miao et al., CIKM 2023, arXiv:2309.07396) says that the rules which build unsupervised pairs make surface
form a shortcut: a dropout positive always has the anchor's words and length, a random negative rarely shares
either. It picks positive and negative pairs by **inverse propensity weighting (IPW)** over surface similarity
(and length) and semantic similarity, so that surface form no longer predicts whether a pair is positive or
negative. Only the abstract is public: everything below except that idea is a reconstruction
(``papers/debcse.md``, marked [R] there), and every reconstructed choice is an argument of :class:`DebCSE`.

**In-batch reconstruction.** The spec mines pools offline over the corpus; here they are mined online in the
*global* batch, so the objective runs under ``ContrastiveTrainer`` unchanged (plain, cached or distributed). For
the ``N`` gathered anchors ``a_i`` and the ``M`` gathered candidates ``c_j = [P_all | N1_all | ...]`` (the layout
of :mod:`hf_contrastive.distributed`; candidate ``i`` is anchor ``i``'s own positive, its dropout copy for a
single ``text`` column):

- surface similarity ``u_ij`` in [0, 1]: Jaccard (``surface="jaccard"``) or overlap coefficient
  (``"overlap"``) of the token-id *sets* of the two texts, read from ``batch["input_ids"]``; length covariate
  ``l_ij = |len_i - len_j| / max(len_i, len_j)`` in tokens. With ``exclude_common_tokens`` ids present in every
  text of the global batch (``[CLS]``, ``[SEP]``) are left out of both.
- semantic similarity ``v_ij = cos(T(a_i), T(c_j))`` of a **frozen teacher** ``T`` (``semantic_source="teacher"``,
  the default and the spec's reading): its embeddings of the merged batch come in ``batch["teacher_embeddings"]``
  [C*B, D_T], which :class:`~hf_contrastive.trainers.ContrastiveTrainer` adds (by default ``T`` is a frozen copy of
  the model at trainer construction; see ``needs_teacher_embeddings``). ``semantic_source="model"`` takes
  ``v_ij = cos(a_i, c_j)`` from the current model's detached embeddings instead: the re-mining feedback the spec
  warns against (papers/debcse.md, pitfalls). Measured on MiniLM + 11,914 wiki sentences (batch 64) it collapses:
  the mined positive share rose from 0.01 to 0.85 within ~90 steps and STS-B dev fell 0.866 -> 0.667.
- pools: ``C+_i`` = {own positive} + the ``num_neighbors`` candidates with the highest ``v_ij``;
  ``C-_i`` = every other candidate (``negative_pool="all"``: the random in-batch sentences, which contain the
  lexical neighbours) or the ``num_neighbors`` highest ``u_ij`` (``"lexical"``). Candidates repeating the
  anchor's or positive's text (equal input hash) are in no pool and no denominator.
- propensity of bin ``b = (bin(u), bin(l))`` (``surface_bins x length_bins`` equal-width bins) in a pool: its
  frequency over the pool pairs of *all* ``N`` anchors, ``e±(b) = |{(i, j) in C±: b_ij = b}| / |C±|``.
- weights ``w+_ij = max(v_ij - theta+, 0) / max(e+(b_ij), eps)`` on ``C+``, ``w-_ij = max(theta- - v_ij, 0) /
  max(e-(b_ij), eps)`` on ``C-``, normalised per anchor: ``pi±_ij = w±_ij / sum_k w±_ik``. An anchor whose
  positive weights are all zero falls back to its own positive; one without negative weight gets no extra hard
  negative (its in-batch negatives remain).

**Loss.** With ``s_ij = cos(a_i, c_j) / tau`` and ``Z_i = sum_j m_ij exp(s_ij)`` over the unmasked candidates,
sampling a positive ``k ~ pi+_i`` and a hard negative ``n ~ pi-_i`` gives (SimCSE-supervised form, the hard
negative counted once more in the denominator)

.. math::

    \\ell_i(k, n) = -s_{ik} + \\log\\big(Z_i + e^{s_{in}}\\big)

``mode="sample"`` draws ``(k, n)``; ``mode="weighted"`` (default) uses its exact expectation, which separates
because ``pi+`` and ``pi-`` each sum to one:

.. math::

    \\ell_i = -\\sum_k \\pi^+_{ik} s_{ik} + \\sum_n \\pi^-_{in} \\log\\big(Z_i + e^{s_{in}}\\big)
              + \\big(1 - \\textstyle\\sum_n \\pi^-_{in}\\big) \\log Z_i,
    \\qquad L = \\frac{1}{B} \\sum_{i \\in \\text{local}} \\ell_i + \\lambda L_{\\text{SimCSE}}.

The weights are constants (no gradient through ``u``, ``l``, ``v`` or ``e``). ``simcse_weight`` ``lambda`` adds
the plain in-batch InfoNCE with the own positive (the spec's option a). Limiting cases: ``num_neighbors=0`` and
``hard_negatives=False`` is unsupervised SimCSE (the InfoNCE objective).

**Exact in every mode.** Pools, propensities and weights are computed from *gathered* token ids and detached
embeddings (the model's or the teacher's) for all ``N`` anchors on every rank, then the local rows are kept:
2 processes x B give the weights of 1 process x 2B. Ranks pad their batches to different lengths, so token ids are
right-padded to the longest rank's ``L`` before the gather (padding is ignored through the attention mask).
``mode="sample"`` draws from a private generator seeded with ``sampling_seed`` and the call count, noise over the
global ``[N, M]`` matrix: the same draws on every rank and in cached and uncached steps (the global RNG, hence
dropout, is untouched). The call count is saved with the objective's state: a resumed run draws what the
uninterrupted run would have drawn.

Shapes: anchor / positive / negative_k ``[B, D]``; pair matrices ``[N, M]`` with ``N = W * B``,
``M = N * (1 + k)``; token ids ``[N + M, L]``. Memory: ``O(N * M)`` for the pair features plus ``O((N + M) * V)``
for the token sets, ``V`` the distinct ids of the global batch (at most ``(N + M) * L``).

Columns: ``anchor``, ``positive`` (a single ``text`` column gives both as dropout views), optional
``negative_1..k`` (extra candidates, in both ``Z`` and ``C-``). Needs ``input_ids`` and ``attention_mask`` in the
batch (the collator's output), and ``teacher_embeddings`` with ``semantic_source="teacher"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed
from .base import ContrastiveObjective, ObjectiveOutput, ResumableRandomState, split_columns
from .info_nce import false_negative_mask, negative_columns

DEBCSE_CITATION = """@inproceedings{miao2023debcse,
  title = {{DebCSE}: Rethinking Unsupervised Contrastive Sentence Embedding Learning in the Debiasing Perspective},
  author = {Miao, Pu and Du, Zeyao and Zhang, Junlin},
  booktitle = {Proceedings of the 32nd ACM International Conference on Information and Knowledge Management (CIKM)},
  year = {2023},
  doi = {10.1145/3583780.3614833}
}"""

SURFACE_MEASURES = ("jaccard", "overlap")
NEGATIVE_POOLS = ("all", "lexical")
MODES = ("weighted", "sample")
SEMANTIC_SOURCES = ("teacher", "model")
EDGE_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------------- token features
def column_tokens(batch: dict, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``input_ids`` and boolean ``attention_mask`` rows [B, L] of one role of the column-major merged batch."""
    index = tuple(batch["column_names"]).index(role)
    rows = batch["input_ids"].shape[0] // len(batch["column_names"])
    ids = batch["input_ids"][index * rows : (index + 1) * rows]
    mask = batch["attention_mask"][index * rows : (index + 1) * rows].bool()
    return ids, mask


def gather_tokens(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather token ids and mask [B, L] from every rank into [W*B, L_max], right-padding each rank to ``L_max``.

    Ranks pad their own batches to their own longest text, so ``L`` differs; the all-gather needs one shape.
    """
    if not distributed.is_distributed():
        return ids, mask
    length = torch.tensor([ids.shape[1]], device=ids.device)
    longest = int(distributed.gather_no_grad(length).max())
    ids = F.pad(ids, (0, longest - ids.shape[1]))
    mask = F.pad(mask, (0, longest - mask.shape[1]))
    return distributed.gather_no_grad(ids), distributed.gather_no_grad(mask)


def token_sets(ids: torch.Tensor, mask: torch.Tensor, exclude_common: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot token sets [R, V] over the batch's distinct ids and the token counts [R] of R texts.

    ids, mask: [R, L] (mask True on real tokens). ``exclude_common`` drops the ids present in every text (special
    tokens) from both the sets and the counts.
    """
    rows = mask.nonzero()[:, 0]
    distinct, column = torch.unique(ids[mask], return_inverse=True)
    counts = torch.zeros(ids.shape[0], len(distinct), device=ids.device)
    counts.index_put_((rows, column), torch.ones_like(column, dtype=counts.dtype), accumulate=True)
    present = counts > 0
    if exclude_common and ids.shape[0] > 1:
        keep = ~present.all(dim=0)
        counts, present = counts * keep, present & keep
    return present.float(), counts.sum(dim=1)


def surface_similarity(sets_a: torch.Tensor, sets_c: torch.Tensor, measure: str = "jaccard") -> torch.Tensor:
    """Set similarity [N, M] of token sets [N, V] and [M, V]: Jaccard ``|A & C| / |A | C|`` or overlap ``/ min``.

    Two empty sets count as identical (1).
    """
    intersection = sets_a @ sets_c.T
    size_a, size_c = sets_a.sum(dim=1)[:, None], sets_c.sum(dim=1)[None, :]
    if measure == "jaccard":
        denominator = size_a + size_c - intersection
    else:
        denominator = torch.minimum(size_a, size_c)
    return torch.where(denominator > 0, intersection / denominator.clamp(min=1), torch.ones_like(intersection))


def length_difference(lengths_a: torch.Tensor, lengths_c: torch.Tensor) -> torch.Tensor:
    """Relative length difference [N, M]: ``|len_a - len_c| / max(len_a, len_c)`` (0 for two empty texts)."""
    longest = torch.maximum(lengths_a[:, None], lengths_c[None, :]).clamp(min=1)
    return (lengths_a[:, None] - lengths_c[None, :]).abs() / longest


def pair_bins(surface: torch.Tensor, length_diff: torch.Tensor, surface_bins: int, length_bins: int) -> torch.Tensor:
    """Bin index [N, M] of ``(bin(u), bin(l))``, equal-width bins on [0, 1]: ``bin(u) * length_bins + bin(l)``.

    A value on a bin edge (up to float rounding: 0.7 is 6.9999 bins of 0.1) goes to the upper bin; 1 to the last.
    """
    surface_bin = (surface * surface_bins + EDGE_TOLERANCE).long().clamp(0, surface_bins - 1)
    length_bin = (length_diff * length_bins + EDGE_TOLERANCE).long().clamp(0, length_bins - 1)
    return surface_bin * length_bins + length_bin


# ----------------------------------------------------------------------------------------------- pools and weights
def top_neighbors(scores: torch.Tensor, allowed: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean [N, M]: the ``count`` allowed entries of each row with the highest ``scores`` (fewer if fewer allowed).

    Ties are broken by torch.topk (value, then position); the result is the same on every rank.
    """
    chosen = torch.zeros_like(allowed)
    count = min(count, scores.shape[1])
    if count == 0:
        return chosen
    values, indices = scores.masked_fill(~allowed, float("-inf")).topk(count, dim=1)
    chosen.scatter_(1, indices, torch.isfinite(values))
    return chosen


def propensities(pool: torch.Tensor, bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Empirical bin frequencies [num_bins] over the pairs of ``pool`` [N, M]: ``e(b) = |pool & bin b| / |pool|``."""
    counts = torch.zeros(num_bins, device=bins.device).scatter_add_(0, bins.flatten(), pool.flatten().float())
    return counts / counts.sum().clamp(min=1)


def ipw_weights(
    pool: torch.Tensor, bins: torch.Tensor, gate: torch.Tensor, num_bins: int, epsilon: float
) -> torch.Tensor:
    """Unnormalised inverse-propensity weights [N, M]: ``w_ij = gate_ij / max(e(b_ij), eps)`` inside the pool, else 0.

    pool: bool [N, M]; bins: long [N, M]; gate: the semantic quality ``q(v_ij) >= 0`` [N, M].
    """
    propensity = propensities(pool, bins, num_bins).to(gate.dtype)
    return torch.where(pool, gate / propensity[bins].clamp(min=epsilon), torch.zeros_like(gate))


def normalize_rows(weights: torch.Tensor) -> torch.Tensor:
    """Rows of ``weights`` [N, M] divided by their sums; an all-zero row stays zero."""
    total = weights.sum(dim=1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp(min=torch.finfo(weights.dtype).tiny), weights)


def sample_rows(probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One-hot rows [N, M] drawn from each row of ``probabilities`` (Gumbel-max); an all-zero row stays zero.

    The noise is drawn for the whole matrix on the CPU generator, so the draws depend only on its seed.
    """
    uniform = torch.rand(probabilities.shape, generator=generator, dtype=torch.float64).to(probabilities.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-300)))
    keys = torch.where(probabilities > 0, probabilities.double().log() + gumbel, float("-inf"))
    one_hot = F.one_hot(keys.argmax(dim=1), probabilities.shape[1]).to(probabilities.dtype)
    return one_hot * (probabilities.sum(dim=1, keepdim=True) > 0)


# ----------------------------------------------------------------------------------------------- loss
def debcse_loss(
    scores: torch.Tensor, positive_weights: torch.Tensor, negative_weights: torch.Tensor, excluded: torch.Tensor
) -> torch.Tensor:
    """Per-anchor DebCSE loss [B] (module docstring): expected InfoNCE over weighted positives and hard negatives.

    ``l_i = -sum_k pi+_ik s_ik + sum_n pi-_in log(Z_i + e^{s_in}) + (1 - sum_n pi-_in) log Z_i``.

    scores: ``s = cos / tau`` [B, M]; positive_weights: rows summing to 1 [B, M]; negative_weights: rows summing to
    1 or 0 [B, M]; excluded: bool [B, M], candidates left out of ``Z`` (never weighted).
    """
    log_z = scores.masked_fill(excluded, torch.finfo(scores.dtype).min).logsumexp(dim=1)
    positive_term = (positive_weights * scores).sum(dim=1)
    with_hard_negative = torch.logaddexp(log_z[:, None], scores)
    negative_term = (negative_weights * with_hard_negative).sum(dim=1) + (1 - negative_weights.sum(dim=1)) * log_z
    return negative_term - positive_term


class DebCSE(ResumableRandomState, ContrastiveObjective):
    """DebCSE: InfoNCE whose positives and hard negatives are chosen by inverse-propensity weights (in-batch).

    Example: ``ContrastiveConfig(objective="debcse", objective_options={"num_neighbors": 20})`` on a ``text``
    column (unsupervised) or ``anchor, positive[, negative_k]`` columns; the trainer supplies the frozen teacher
    (a copy of the initial model, or ``ContrastiveTrainer(teacher=...)`` / ``teacher_name_or_path``). Logs
    ``accuracy``, ``mined_positive_share`` (weight moved off the own positive), ``hard_negative_rate`` (anchors
    with a weighted hard negative) and the mean surface similarity of the weighted positives / hard negatives
    (``positive_surface``, ``hard_negative_surface``): after IPW the two should be close, which is the debiasing the
    paper aims at.

    Args:
        temperature: ``tau`` (0.05).
        num_neighbors: ``M``, semantic neighbours added to each positive pool (and lexical neighbours forming the
            negative pool with ``negative_pool="lexical"``); spec default 20. 0: own positive only.
        positive_threshold: ``theta+``, positive gate ``max(v - theta+, 0)`` (0.7).
        negative_threshold: ``theta-``, negative gate ``max(theta- - v, 0)``; removes likely false negatives (0.5).
        surface: ``"jaccard"`` or ``"overlap"`` of token-id sets.
        surface_bins / length_bins: propensity bins of ``u`` and ``l`` (10 x 5).
        epsilon: propensity floor ``eps`` (1e-3): rare bins never give infinite weights.
        negative_pool: ``"all"`` other candidates, or the ``"lexical"`` top-``num_neighbors`` by ``u``.
        hard_negatives: add the weighted hard negative to each denominator (False: positives only).
        mode: ``"weighted"`` (expected loss, deterministic) or ``"sample"`` (one positive and one hard negative
            drawn per anchor and step).
        simcse_weight: ``lambda`` of the added plain in-batch InfoNCE with the own positive (0: off).
        exclude_common_tokens: leave ids present in every text of the global batch out of ``u`` and ``l``.
        mask_false_negatives: leave candidates repeating the anchor's or positive's text out of everything.
        gather_across_devices: candidates and weights from every rank (exact gradients).
        sampling_seed: seed of the ``mode="sample"`` draws.
        semantic_source: where ``v`` comes from: ``"teacher"`` (``batch["teacher_embeddings"]`` of a frozen
            teacher, required) or ``"model"`` (the current model's detached embeddings: the feedback variant the
            spec warns against, kept for comparison).
    """

    name = "debcse"
    paper = "2309.07396"
    citation = DEBCSE_CITATION
    required_columns = ("anchor", "positive")
    optional_column_prefix = "negative"
    random_state = ("calls",)

    def __init__(
        self,
        temperature: float = 0.05,
        num_neighbors: int = 20,
        positive_threshold: float = 0.7,
        negative_threshold: float = 0.5,
        surface: str = "jaccard",
        surface_bins: int = 10,
        length_bins: int = 5,
        epsilon: float = 1e-3,
        negative_pool: str = "all",
        hard_negatives: bool = True,
        mode: str = "weighted",
        simcse_weight: float = 0.0,
        exclude_common_tokens: bool = True,
        mask_false_negatives: bool = True,
        gather_across_devices: bool = True,
        sampling_seed: int = 0,
        semantic_source: str = "teacher",
    ) -> None:
        super().__init__()
        check_options(temperature, num_neighbors, surface, surface_bins, length_bins, epsilon, negative_pool, mode)
        check_choice("semantic_source", semantic_source, SEMANTIC_SOURCES)
        self.temperature = temperature
        self.num_neighbors = num_neighbors
        self.positive_threshold = positive_threshold
        self.negative_threshold = negative_threshold
        self.surface = surface
        self.surface_bins = surface_bins
        self.length_bins = length_bins
        self.epsilon = epsilon
        self.negative_pool = negative_pool
        self.hard_negatives = hard_negatives
        self.mode = mode
        self.simcse_weight = simcse_weight
        self.exclude_common_tokens = exclude_common_tokens
        self.mask_false_negatives = mask_false_negatives
        self.gather_across_devices = gather_across_devices
        self.sampling_seed = sampling_seed
        self.semantic_source = semantic_source
        self.needs_teacher_embeddings = semantic_source == "teacher"  # read by the trainer
        self.calls = 0  # advances the sampling generator once per forward, identically on every rank

    # ------------------------------------------------------------------------------------------- gathering
    def _gather_tokens(self, batch: dict, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = column_tokens(batch, role)
        return gather_tokens(ids, mask) if self.gather_across_devices else (ids, mask)

    # ------------------------------------------------------------------------------------------- weights
    @torch.no_grad()
    def semantic_similarity(
        self, anchors: torch.Tensor, candidates: torch.Tensor, batch: dict, candidate_roles: list[str]
    ) -> torch.Tensor:
        """Semantic similarity ``v`` [N, M] of every (global anchor, global candidate) pair, in float32 at least.

        anchors: the local normalised model embeddings [B, D]; candidates: the gathered normalised ones [M, D]
        (used with ``semantic_source="model"``). With ``"teacher"``: ``v_ij = cos(T(a_i), T(c_j))`` from
        ``batch["teacher_embeddings"]`` [C*B, D_T], split into columns and gathered like the model's embeddings.
        """
        if self.semantic_source == "model":
            dtype = torch.promote_types(anchors.dtype, torch.float32)  # bf16 cosines blur the gates (+- 0.004)
            return self._gather_no_grad(anchors.detach()).to(dtype) @ candidates.detach().to(dtype).T
        teacher = self.teacher_columns(batch, rows=anchors.shape[0])
        dtype = torch.promote_types(teacher["anchor"].dtype, torch.float32)

        def gathered(role: str) -> torch.Tensor:
            return self._gather_no_grad(F.normalize(teacher[role].detach().to(dtype), dim=-1))

        return gathered("anchor") @ torch.cat([gathered(role) for role in candidate_roles]).T

    @staticmethod
    def teacher_columns(batch: dict, rows: int) -> dict[str, torch.Tensor]:
        """``batch["teacher_embeddings"]`` [C*B, D_T] split into ``{column: [B, D_T]}``; a clear error without it."""
        column_names = tuple(batch["column_names"])
        if "teacher_embeddings" not in batch:
            raise ValueError(
                "DebCSE(semantic_source='teacher') takes the semantic similarity from a frozen teacher, but the batch "
                "has no 'teacher_embeddings' [C*B, D]. Train with ContrastiveTrainer (it adds a frozen copy of the "
                "initial model, or teacher=... / teacher_name_or_path), put the teacher's embeddings of the merged "
                "batch in batch['teacher_embeddings'] yourself, or set semantic_source='model' (the current model: "
                "the feedback variant the spec warns against)."
            )
        teacher = batch["teacher_embeddings"]
        if teacher.shape[0] != len(column_names) * rows:
            raise ValueError(
                f"batch['teacher_embeddings'] has {teacher.shape[0]} rows; the merged batch has "
                f"{len(column_names)} columns x {rows} rows = {len(column_names) * rows}."
            )
        return split_columns(teacher, column_names)

    @torch.no_grad()
    def pair_features(self, batch: dict, candidate_roles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Surface similarity ``u`` and bin index [N, M] of every (global anchor, global candidate) pair."""
        anchor_ids, anchor_mask = self._gather_tokens(batch, "anchor")
        tokens = [self._gather_tokens(batch, role) for role in candidate_roles]
        ids = torch.cat([anchor_ids, *(t[0] for t in tokens)])
        mask = torch.cat([anchor_mask, *(t[1] for t in tokens)])
        sets, lengths = token_sets(ids, mask, self.exclude_common_tokens)
        anchors = anchor_ids.shape[0]
        surface = surface_similarity(sets[:anchors], sets[anchors:], self.surface)
        length_diff = length_difference(lengths[:anchors], lengths[anchors:])
        return surface, pair_bins(surface, length_diff, self.surface_bins, self.length_bins)

    @torch.no_grad()
    def excluded_pairs(self, batch: dict, candidate_roles: list[str], labels: torch.Tensor) -> torch.Tensor:
        """Bool [N, M]: candidates repeating a global anchor's or its positive's text (never the label)."""
        if not self.mask_false_negatives:
            return torch.zeros(len(labels), len(labels) * len(candidate_roles), dtype=torch.bool, device=labels.device)
        by_role = dict(zip(tuple(batch["column_names"]), batch["input_hashes"].to(labels.device)))
        candidate_hashes = torch.cat([self._gather_no_grad(by_role[role]) for role in candidate_roles])
        anchors, positives = self._gather_no_grad(by_role["anchor"]), self._gather_no_grad(by_role["positive"])
        return false_negative_mask(anchors, positives, candidate_hashes, labels)

    @torch.no_grad()
    def pair_weights(
        self, semantic: torch.Tensor, surface: torch.Tensor, bins: torch.Tensor, excluded: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised positive and negative IPW weights ``(pi+, pi-)`` [N, M] of all global anchors.

        semantic: ``v`` [N, M]; surface: ``u`` [N, M]; bins [N, M]; excluded: bool [N, M]. Candidate ``i`` is
        anchor ``i``'s own positive.
        """
        own = torch.eye(*semantic.shape, dtype=torch.bool, device=semantic.device)
        others = ~excluded & ~own
        num_bins = self.surface_bins * self.length_bins

        positive_pool = own | top_neighbors(semantic, others, self.num_neighbors)
        gate = (semantic - self.positive_threshold).clamp(min=0)
        positive = normalize_rows(ipw_weights(positive_pool, bins, gate, num_bins, self.epsilon))
        positive = torch.where(positive.sum(dim=1, keepdim=True) > 0, positive, own.to(positive.dtype))

        if not self.hard_negatives:
            return positive, torch.zeros_like(positive)
        if self.negative_pool == "lexical":
            negative_pool = top_neighbors(surface, others, self.num_neighbors)
        else:
            negative_pool = others
        gate = (self.negative_threshold - semantic).clamp(min=0)
        negative = normalize_rows(ipw_weights(negative_pool, bins, gate, num_bins, self.epsilon))
        return positive, negative

    def _draw(self, positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.sampling_seed * 1_000_003 + self.calls)
        return sample_rows(positive, generator), sample_rows(negative, generator)

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local DebCSE loss; ``batch`` holds ``input_ids``/``attention_mask`` [C*B, L] and ``input_hashes`` [C, B]."""
        column_names = tuple(batch["column_names"])
        self.check_columns(column_names)
        candidate_roles = ["positive", *negative_columns(column_names)]
        anchors = F.normalize(embeddings["anchor"], dim=-1)
        candidates = torch.cat([self._gather(F.normalize(embeddings[role], dim=-1)) for role in candidate_roles])
        local = anchors.shape[0]
        offset = self._local_offset(local)
        rows = slice(offset, offset + local)

        semantic = self.semantic_similarity(anchors, candidates, batch, candidate_roles)
        labels = torch.arange(semantic.shape[0], device=anchors.device)
        surface, bins = self.pair_features(batch, candidate_roles)
        excluded = self.excluded_pairs(batch, candidate_roles, labels)
        positive, negative = self.pair_weights(semantic, surface.to(semantic.dtype), bins, excluded)
        if self.mode == "sample":
            positive, negative = self._draw(positive, negative)
        self.calls += 1

        scores = anchors @ candidates.T / self.temperature
        scores = scores.float() if scores.element_size() < 4 else scores
        per_anchor = debcse_loss(scores, positive[rows], negative[rows], excluded[rows])
        if self.simcse_weight:
            per_anchor = per_anchor + self.simcse_weight * in_batch_nll(scores, excluded[rows], labels[rows])
        logs = self._logs(scores, excluded[rows], labels[rows], positive[rows], negative[rows], surface[rows])
        return ObjectiveOutput(loss=per_anchor.mean(), logs=logs)

    @staticmethod
    def _logs(
        scores: torch.Tensor,
        excluded: torch.Tensor,
        labels: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        surface: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        own = positive.gather(1, labels[:, None]).squeeze(1)
        has_negative = (negative.sum(dim=1) > 0).float()
        negative_surface = (negative * surface).sum() / has_negative.sum().clamp(min=1)  # no host sync
        logs = {
            "accuracy": (scores.masked_fill(excluded, float("-inf")).argmax(dim=1) == labels).float().mean(),
            "mined_positive_share": (1 - own).mean(),
            "hard_negative_rate": has_negative.mean(),
            "positive_surface": (positive * surface).sum(dim=1).mean(),
            "hard_negative_surface": negative_surface,
        }
        return {key: value.detach().float() for key, value in logs.items()}

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "num_neighbors": self.num_neighbors,
            "positive_threshold": self.positive_threshold,
            "negative_threshold": self.negative_threshold,
            "surface": self.surface,
            "surface_bins": self.surface_bins,
            "length_bins": self.length_bins,
            "epsilon": self.epsilon,
            "negative_pool": self.negative_pool,
            "hard_negatives": self.hard_negatives,
            "mode": self.mode,
            "simcse_weight": self.simcse_weight,
            "exclude_common_tokens": self.exclude_common_tokens,
            "mask_false_negatives": self.mask_false_negatives,
            "gather_across_devices": self.gather_across_devices,
            "sampling_seed": self.sampling_seed,
            "semantic_source": self.semantic_source,
        }


def in_batch_nll(scores: torch.Tensor, excluded: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-anchor InfoNCE [B] with the own positive: ``log Z_i - s_{i, label_i}`` (the SimCSE term)."""
    log_z = scores.masked_fill(excluded, torch.finfo(scores.dtype).min).logsumexp(dim=1)
    return log_z - scores.gather(1, labels[:, None]).squeeze(1)


def check_options(
    temperature: float,
    num_neighbors: int,
    surface: str,
    surface_bins: int,
    length_bins: int,
    epsilon: float,
    negative_pool: str,
    mode: str,
) -> None:
    """Refuse DebCSE options that cannot define weights (ValueError naming the option)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if num_neighbors < 0:
        raise ValueError(f"num_neighbors must be >= 0, got {num_neighbors}.")
    if surface_bins < 1 or length_bins < 1:
        raise ValueError(f"surface_bins and length_bins must be >= 1, got {surface_bins} and {length_bins}.")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0 (it bounds the weights), got {epsilon}.")
    check_choice("surface", surface, SURFACE_MEASURES)
    check_choice("negative_pool", negative_pool, NEGATIVE_POOLS)
    check_choice("mode", mode, MODES)


def check_choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    """ValueError naming ``option`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{option} must be one of {allowed}, got {value!r}.")
