"""Neural PG-Rank: a Plackett-Luce ranking policy over a query's candidates, trained by policy gradient.

For one query with candidates ``d_1..d_n`` the retriever's scores, divided by the temperature, are the logits
``u_j = sim(q, d_j) / tau`` of a Plackett-Luce (PL) policy over rankings. The probability of a top-K prefix
``r = (r_1..r_K)`` (the exact marginal of the full PL ranking) is

.. math::

    \\log \\pi(r \\mid q) = \\sum_{i=1}^{K} \\Big[ u_{r_i} - \\log \\sum_{j \\notin \\{r_1..r_{i-1}\\}} e^{u_j} \\Big].

The objective maximises the expected ranking utility ``J = E_q E_{r ~ pi} [Delta(r | q)]`` (``Delta`` = nDCG@k by
default, any of :data:`~hf_contrastive.evaluation.ranking_metrics.UTILITIES`). Per query, N rankings are sampled
by Gumbel-top-K (no gradient) and scored; REINFORCE with the leave-one-out (LOO) baseline gives the surrogate loss

.. math::

    A_m = \\Delta_m - \\frac{1}{N-1} \\sum_{m' \\ne m} \\Delta_{m'} = \\frac{N}{N-1} (\\Delta_m - \\bar\\Delta),
    \\qquad L = -\\frac{1}{B} \\sum_{q=1}^{B} \\frac{1}{N} \\sum_{m=1}^{N} \\mathrm{sg}[A_{qm}] \\log \\pi(r_{qm} \\mid q)

whose gradient is an unbiased estimate of ``-grad J`` (the baseline of sample m does not depend on sample m).
Gradients reach every score in every PL denominator, hence the query and *all* candidate embeddings, not only the
sampled ones (the first step's denominator is shared by the N samples of a query and cancels, since the LOO
advantages of a query sum to 0; the later steps' denominators differ per sample). Inference ranks by the scores (the mode of the policy); no sampling.

Shapes: B queries, n = the longest candidate list of the batch (shorter lists padded and masked), N samples, K =
min(k, n) ranks, D the embedding size. ``logits`` [B, n], ``candidate_mask`` [B, n], ``rankings`` [B, N, K]
(candidate indices; -1 past the end of a list with fewer than k candidates), ``log pi`` / utilities / advantages
[B, N].

Memory: every candidate is embedded with gradient (use the trainer's ``gradient_cache`` to bound the encoder's
activation memory by a token budget with exact gradients); the loss itself holds ``O(B * N * K * n)`` floats for the
masked log-sum-exp of every prefix step.

Randomness: the Gumbel noise of a query is drawn from its own ``torch.Generator`` (on the CPU) seeded by a hash of
``(seed, step, global query index)``, over its real candidates only. So the noise does not depend on the process's
RNG state, on the padding of the batch or on how the global batch is split over ranks: 2 processes x B queries sample
exactly the rankings of 1 process x 2B queries.

Queries without a relevant candidate score 0 on every utility for every sample, so their advantages are exactly 0:
they add nothing to the gradient. They are counted (``skipped_no_relevant``) and left out of the utility logs; the
loss still divides by the local batch size B, so DDP's average over ranks equals the single-process loss.

Unverified (the paper's training details could not be read; see ``papers/pg-rank.md``): N (default 8), tau (0.05 for
cosine, 1 for dot products is the usual scale), the candidate-set size and construction; per-position credit
assignment (PL-Rank) is not used.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .. import distributed
from ..evaluation.ranking_metrics import UTILITIES, utility
from .base import ContrastiveObjective, ObjectiveOutput, ResumableRandomState, ScaledSimilarity

PG_RANK_CITATION = """@inproceedings{gao2023pgrank,
  title = {Policy-Gradient Training of Language Models for Ranking},
  author = {Gao, Ge and Chang, Jonathan D. and Cardie, Claire and Brantley, Kiant{\\'e} and Joachims, Thorsten},
  booktitle = {NeurIPS 2023 Workshop on Foundation Models for Decision Making},
  year = {2023},
  eprint = {2310.04407},
  archivePrefix = {arXiv}
}"""

# Uniform draws are clamped to [eps, 1 - eps] so that -log(-log U) stays finite.
UNIFORM_EPS = 1e-7


def query_generator(seed: int, step: int, query_index: int) -> torch.Generator:
    """A CPU generator whose stream depends only on ``(seed, step, query_index)`` (same on every process)."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, step, query_index), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def top_k_rankings(scores: torch.Tensor, k: int, candidate_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the K = min(k, n) highest scores [..., n] -> [..., K], -1 past a list's last real candidate."""
    if candidate_mask is None:
        candidate_mask = torch.ones_like(scores, dtype=torch.bool)
    top = min(k, scores.shape[-1])
    rankings = scores.masked_fill(~candidate_mask, float("-inf")).topk(top, dim=-1).indices
    real = torch.arange(top, device=scores.device) < candidate_mask.sum(dim=-1, keepdim=True)
    return rankings.masked_fill(~real, -1)


def _gumbel_noise(
    candidate_mask: torch.Tensor, num_samples: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, N, n]: query b draws [N, n_b] from ``generators[b]`` for its real candidates only."""
    noise = torch.zeros(candidate_mask.shape[0], num_samples, candidate_mask.shape[1])
    mask = candidate_mask.cpu()
    for query, generator in enumerate(generators):
        uniform = torch.rand(num_samples, int(mask[query].sum()), generator=generator)
        noise[query][:, mask[query]] = -torch.log(-torch.log(uniform.clamp(UNIFORM_EPS, 1.0 - UNIFORM_EPS)))
    return noise.to(candidate_mask.device)


@torch.no_grad()
def sample_rankings(
    logits: torch.Tensor,
    num_samples: int,
    k: int,
    generators: torch.Generator | Sequence[torch.Generator],
    candidate_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``num_samples`` top-k prefixes per query from the PL policy by Gumbel-top-K; no gradient.

    ``argsort_desc(u + g)[:K]`` with ``g ~ Gumbel(0, 1)`` i.i.d. is an exact PL sample (cost ``O(N n log n)``).

    Args:
        logits: [B, n] scaled scores ``u``.
        num_samples: N rankings per query.
        k: prefix length; K = min(k, n), and a query with fewer real candidates is padded with -1.
        generators: one generator per query (the noise of query b then depends on ``generators[b]`` alone), or
            one generator shared by all queries in order.
        candidate_mask: [B, n] bool, True for real candidates; masked ones are never sampled.

    Returns:
        [B, N, K] candidate indices (LongTensor).
    """
    if candidate_mask is None:
        candidate_mask = torch.ones_like(logits, dtype=torch.bool)
    if isinstance(generators, torch.Generator):
        generators = [generators] * logits.shape[0]
    if len(generators) != logits.shape[0]:
        raise ValueError(f"Got {len(generators)} generators for {logits.shape[0]} queries; pass one per query.")
    noise = _gumbel_noise(candidate_mask, num_samples, generators)
    perturbed = logits.detach().unsqueeze(1) + noise.to(logits.dtype)
    return top_k_rankings(perturbed, k, candidate_mask.unsqueeze(1).expand_as(perturbed))


def plackett_luce_log_prob(
    logits: torch.Tensor, rankings: torch.Tensor, candidate_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``log pi(r)`` of ranking prefixes under the PL policy of ``logits``: [B, n], [B, N, K] -> [B, N].

    Step i scores ``u_{r_i} - logsumexp(u_j, j real and not among r_1..r_{i-1})``, all steps at once: memory
    ``O(B * N * K * n)``. Steps with index -1 (a list shorter than K) add 0. Finite, with finite gradients, whatever
    the logits of masked candidates are (even -inf).
    """
    if candidate_mask is None:
        candidate_mask = torch.ones_like(logits, dtype=torch.bool)
    num_candidates = logits.shape[-1]
    real_step = rankings >= 0  # [B, N, K]
    index = rankings.clamp(min=0)
    # Masked logits never reach a denominator; zeroing them keeps the gather and its gradient finite.
    logits = logits.masked_fill(~candidate_mask, 0.0)
    chosen = F.one_hot(index, num_candidates).bool() & real_step.unsqueeze(-1)  # [B, N, K, n]
    chosen_before = (chosen.long().cumsum(dim=2) - chosen.long()).bool()
    excluded = chosen_before | ~candidate_mask[:, None, None, :]
    denominators = logits[:, None, None, :].masked_fill(excluded, float("-inf")).logsumexp(dim=-1)  # [B, N, K]
    numerators = logits.unsqueeze(1).expand(-1, rankings.shape[1], -1).gather(2, index)
    return torch.where(real_step, numerators - denominators, torch.zeros_like(denominators)).sum(dim=-1)


def ranked_relevance(relevance: torch.Tensor, rankings: torch.Tensor) -> torch.Tensor:
    """Grades in rank order: candidate relevance [B, n] and rankings [B, N, K] -> [B, N, K] (0 at index -1)."""
    gathered = relevance.unsqueeze(1).expand(-1, rankings.shape[1], -1).gather(2, rankings.clamp(min=0))
    return gathered.masked_fill(rankings < 0, 0.0)


def leave_one_out_advantages(utilities: torch.Tensor) -> torch.Tensor:
    """``A_m = Delta_m - mean_{m' != m} Delta_m'`` over the last dimension [..., N] (N >= 2)."""
    num_samples = utilities.shape[-1]
    if num_samples < 2:
        raise ValueError(f"The leave-one-out baseline needs at least 2 samples per query, got {num_samples}.")
    others = (utilities.sum(dim=-1, keepdim=True) - utilities) / (num_samples - 1)
    return utilities - others


class PlackettLuceObjective(ResumableRandomState, ScaledSimilarity, ContrastiveObjective):
    """Neural PG-Rank (arXiv:2310.04407): REINFORCE with a leave-one-out baseline on a Plackett-Luce policy.

    Args:
        utility: the ranking utility to maximise: one of ``ranking_metrics.UTILITIES`` ("ndcg", "dcg",
            "precision", "reciprocal_rank", "recall", "average_precision").
        k: the utility's cutoff and the length of the sampled prefixes (nDCG@k needs only the top k).
        num_samples: rankings sampled per query (N >= 2, for the leave-one-out baseline).
        temperature: ``tau`` in ``u = sim / tau`` (cosine similarity needs a small one: 0.05).
        learnable_temperature, max_scale: learn ``log(1 / tau)`` (clamped at ``max_scale``), as in InfoNCE.
        similarity: "cosine" or "dot".
        seed: seeds the per-query Gumbel noise together with the step and the query's global index.

    Embeddings: ``{"query": [B, D], "documents": [C, D]}`` (C = all real candidates of the local batch).
    Batch (see :class:`hf_contrastive.data.ranking.RankingCollator`): ``candidate_index`` [B, n] (row of
    ``documents``), ``candidate_mask`` [B, n] bool, ``relevance`` [B, n] float grades, ``judged_relevance`` [B, M]
    (every judged grade of the query, for IDCG), optional ``noise_step`` (int; the trainer passes its step; default
    a count of this objective's calls, saved in its state dict) and ``query_index`` [B] (default: the rank's offset
    + position, i.e. the query's position in the global batch).

    Logs: ``utility`` (mean over the sampled rankings), ``utility_deterministic`` (ranking by score),
    ``advantage_std``, ``skipped_no_relevant`` (queries of the batch without a relevant candidate).
    """

    name = "plackett_luce"
    paper = "2310.04407"
    citation = PG_RANK_CITATION
    required_columns = ("query", "documents")
    random_state = ("calls",)

    def __init__(
        self,
        utility: str = "ndcg",
        k: int = 10,
        num_samples: int = 8,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        similarity: str = "cosine",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if utility not in UTILITIES:
            raise ValueError(f"utility must be one of {list(UTILITIES)}, got {utility!r}.")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if num_samples < 2:
            raise ValueError(
                f"num_samples must be >= 2 (the leave-one-out baseline of a sample is the mean of the others), "
                f"got {num_samples}."
            )
        self.init_similarity(temperature, learnable_temperature, max_scale, similarity)
        self.utility = utility
        self.k = k
        self.num_samples = num_samples
        self.seed = seed
        self.calls = 0

    def scores(self, queries: torch.Tensor, documents: torch.Tensor, batch: dict) -> torch.Tensor:
        """Scaled scores ``u`` [B, n] of every query [B, D] against its candidates (rows of ``documents`` [C, D])."""
        candidates = self._prepare(documents)[batch["candidate_index"]]  # [B, n, D]
        return torch.einsum("bd,bnd->bn", self._prepare(queries), candidates) * self.scale()

    def _generators(self, batch: dict, num_queries: int) -> list[torch.Generator]:
        """One generator per local query from (seed, step, global query index); see the module docstring."""
        # Outside a trainer (no noise_step) successive calls must not reuse the same draws.
        step = batch.get("noise_step", self.calls)
        query_index = batch.get("query_index")
        if query_index is None:
            query_index = distributed.local_offset(num_queries) + torch.arange(num_queries)
        return [query_generator(self.seed, int(step), int(index)) for index in query_index]

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """The local surrogate loss (mean over the B local queries) and detached logs."""
        self.check_columns(tuple(embeddings))
        mask = batch["candidate_mask"]
        relevance, judged = batch["relevance"], batch["judged_relevance"]
        logits = self.scores(embeddings["query"], embeddings["documents"], batch)
        if logits.element_size() < 4:  # half-precision scores would round the Gumbel noise and the log-sum-exps
            logits = logits.float()
        generators = self._generators(batch, logits.shape[0])
        self.calls += 1

        rankings = sample_rankings(logits, self.num_samples, self.k, generators, mask)  # [B, N, K]
        utilities = utility(self.utility, ranked_relevance(relevance, rankings), judged.unsqueeze(1), self.k)
        advantages = leave_one_out_advantages(utilities)  # [B, N], no gradient: sampled without it
        log_probs = plackett_luce_log_prob(logits, rankings, mask)
        loss = -(advantages.to(log_probs.dtype) * log_probs).mean(dim=1).mean()
        return ObjectiveOutput(loss=loss, logs=self._logs(logits, mask, relevance, judged, utilities, advantages))

    @torch.no_grad()
    def _logs(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor,
        relevance: torch.Tensor,
        judged: torch.Tensor,
        utilities: torch.Tensor,
        advantages: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Utilities over the queries with a relevant candidate, advantage spread, skipped queries, temperature."""
        has_relevant = ((relevance > 0) & mask).any(dim=1)
        deterministic = top_k_rankings(logits, self.k, mask).unsqueeze(1)  # [B, 1, K]
        deterministic_utility = utility(
            self.utility, ranked_relevance(relevance, deterministic), judged.unsqueeze(1), self.k
        ).squeeze(1)
        kept = has_relevant.float()
        count = kept.sum().clamp(min=1.0)
        return {
            "utility": (utilities.mean(dim=1) * kept).sum() / count,
            "utility_deterministic": (deterministic_utility * kept).sum() / count,
            "advantage_std": (advantages.std(dim=1) * kept).sum() / count,
            "skipped_no_relevant": (~has_relevant).sum().float(),
            "temperature": torch.as_tensor(1.0 / self.scale(), dtype=torch.float32),
        }

    def get_config_dict(self) -> dict:
        return {
            "utility": self.utility,
            "k": self.k,
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "similarity": self.similarity,
            "baseline": "leave-one-out",
            "seed": self.seed,
        }
