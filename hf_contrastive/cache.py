"""The one gradient-cache engine (GradCache, Gao et al. 2021) shared by every objective on an embedding matrix.

A step with a batch of N texts and an objective ``loss_fn(E)`` over the full embedding matrix ``E`` [N, D]:

1. plan mini-batches: rows sorted by real length (longest first) and packed greedily under a *token budget*
   (``rows * longest_row <= token_budget``), each trimmed to its own longest row, so padding shrinks and memory is
   bounded by the budget, not by N;
2. embed every mini-batch without a graph, recording the RNG state before each (dropout replay);
3. compute the loss on the full (gathered, if the objective gathers) matrix of cached embeddings, a leaf tensor,
   and back-propagate into it: ``G = dL/dE`` [N, D]; the objective's own parameters get their gradient here;
4. re-embed every mini-batch with its recorded RNG state and push ``G`` through with
   ``backward(sum(E_mb * G_mb))``; under DDP all but the last re-embedding run in ``no_sync``.

Gradients equal those of one graph over the same mini-batches with the same dropout masks (tested to 1e-5).
Peak activation memory is that of one mini-batch; the extra cost is one no-grad forward (~4/3 of an uncached step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

Features = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MiniBatch:
    """Rows of the merged batch embedded together, and the number of token positions they keep."""

    rows: torch.Tensor
    length: int


def plan_mini_batches(lengths: list[int], token_budget: int, sort_by_length: bool = True) -> list[MiniBatch]:
    """Split rows into mini-batches with ``len(rows) * max(lengths[rows]) <= token_budget`` (at least one row each).

    ``lengths``: real (unpadded) token count of every row. Rows are taken longest first when ``sort_by_length``.
    """
    if token_budget <= 0:
        raise ValueError(f"cache_token_budget must be a positive number of tokens, got {token_budget}.")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    plan, current, longest = [], [], 0
    for row in order:
        candidate_longest = max(longest, lengths[row])
        if current and (len(current) + 1) * candidate_longest > token_budget:
            plan.append(MiniBatch(torch.tensor(current), longest))
            current, candidate_longest = [], lengths[row]
        current.append(row)
        longest = candidate_longest
    if current:
        plan.append(MiniBatch(torch.tensor(current), longest))
    return plan


def select_rows(features: Features, mini_batch: MiniBatch, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """The mini-batch's rows of every [N, L] feature, trimmed to ``mini_batch.length`` positions."""
    rows = mini_batch.rows.to(next(iter(features.values())).device)
    keep = slice(0, mini_batch.length) if padding_side == "right" else slice(-mini_batch.length, None)
    return {name: value[rows][:, keep] for name, value in features.items()}


def embed_by_plan(
    embed: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    features: Features,
    plan: list[MiniBatch],
    padding_side: str = "right",
    before_each: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Embed every mini-batch of ``plan`` (each trimmed to its longest row); return [N, D] in batch order.

    Differentiable when called with grad enabled: the length-sorted forward of the uncached step uses it as is.
    ``before_each`` runs before every mini-batch (the cache records RNG states there).
    """
    chunks = []
    for mini_batch in plan:
        if before_each is not None:
            before_each()
        chunks.append(embed(select_rows(features, mini_batch, padding_side)))
    embeddings = torch.cat(chunks)
    order = torch.cat([mini_batch.rows for mini_batch in plan]).to(embeddings.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return embeddings[inverse]


class RandomState:
    """The CPU and device RNG states at one moment, replayable so re-embedding sees the same dropout masks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self):
        devices = [self.device] if self.cuda_state is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self.cpu_state)
            if self.cuda_state is not None:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            yield


class GradientCache:
    """Run a contrastive step in token-budgeted mini-batches with exact gradients (see the module docstring).

    Args:
        token_budget: maximum ``rows * padded_length`` per mini-batch (e.g. 16384 = 128 rows of 128 tokens).
        sort_by_length: group rows of similar length to cut padding (the embeddings are put back in order).
        padding_side: ``"right"`` or ``"left"``; where the tokenizer put the padding (trimming keeps the rest).
    """

    def __init__(self, token_budget: int = 16384, sort_by_length: bool = True, padding_side: str = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        self.token_budget = token_budget
        self.sort_by_length = sort_by_length
        self.padding_side = padding_side

    def plan(self, attention_mask: torch.Tensor) -> list[MiniBatch]:
        lengths = attention_mask.sum(dim=1).tolist()
        return plan_mini_batches(lengths, self.token_budget, self.sort_by_length)

    def step(
        self,
        embed: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        features: Features,
        loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
        loss_scale: float = 1.0,
        backward: Callable[[torch.Tensor], None] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """One cached forward/backward; returns the detached (unscaled) loss and the objective's logs.

        Args:
            embed: maps a feature dict of ``n`` rows to embeddings [n, D] (the model call, under autocast).
            features: the merged batch, every value [N, L] (``attention_mask`` required).
            loss_fn: maps the full embedding matrix [N, D] (rows in batch order) to ``(loss, logs)``.
            loss_scale: multiplies the loss before back-propagation (``1 / gradient_accumulation_steps``).
            backward: back-propagates a surrogate scalar (``accelerator.backward`` for loss scaling); default
                ``Tensor.backward``.
            no_sync: context factory that suspends DDP gradient sync; used for all but the last re-embedding.
        """
        plan = self.plan(features["attention_mask"])
        cached, states = self._embed_without_graph(embed, features, plan)
        cached.requires_grad_(True)
        loss, logs = loss_fn(cached)
        (loss * loss_scale).backward()
        self._backward_through_model(embed, features, plan, states, cached.grad, backward, no_sync)
        return loss.detach(), logs

    def _embed_without_graph(
        self, embed: Callable, features: Features, plan: list[MiniBatch]
    ) -> tuple[torch.Tensor, list[RandomState]]:
        device = features["attention_mask"].device
        states: list[RandomState] = []
        with torch.no_grad():
            cached = embed_by_plan(
                embed, features, plan, self.padding_side, lambda: states.append(RandomState(device))
            )
        return cached.float(), states

    def _backward_through_model(
        self,
        embed: Callable,
        features: Features,
        plan: list[MiniBatch],
        states: list[RandomState],
        grads: torch.Tensor,
        backward: Callable[[torch.Tensor], None] | None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None,
    ) -> None:
        backward = backward or torch.Tensor.backward
        for index, (mini_batch, state) in enumerate(zip(plan, states)):
            last = index == len(plan) - 1
            sync_context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
            with sync_context, state.replay():
                embeddings = embed(select_rows(features, mini_batch, self.padding_side))
                mini_grads = grads[mini_batch.rows.to(grads.device)].to(embeddings.dtype)
                backward((embeddings * mini_grads).sum())
