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

Several columns (image, text, views; :meth:`GradientCache.step_columns`) are cached in one step: each column gets
its own plan (token budget for token features, a row budget for pixel values or vectors), the loss sees every
column's cached embeddings, and the re-embedding ends with one call holding every column's last mini-batch, so the
one synchronising backward under DDP reaches every tower (peak memory: one mini-batch per column in that call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

Features = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MiniBatch:
    """Rows of a batch embedded together, and the number of token positions they keep (None: no token axis)."""

    rows: torch.Tensor
    length: int | None


ColumnEmbeddings = dict[str, dict[str, torch.Tensor]]  # {column: {embedding name: [N, ...]}}
Round = dict[str, MiniBatch]  # the mini-batches that one embed call handles, by column


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


def plan_rows(num_rows: int, row_budget: int) -> list[MiniBatch]:
    """Split ``num_rows`` rows (images, vectors: no padding to cut) into consecutive mini-batches of ``row_budget``."""
    if row_budget <= 0:
        raise ValueError(f"cache_row_budget must be a positive number of rows, got {row_budget}.")
    return [
        MiniBatch(torch.arange(start, min(start + row_budget, num_rows)), None)
        for start in range(0, num_rows, row_budget)
    ]


def select_rows(features: Features, mini_batch: MiniBatch, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """The mini-batch's rows of every [N, L] feature, trimmed to ``mini_batch.length`` positions (if not None)."""
    rows = mini_batch.rows.to(next(iter(features.values())).device)
    if mini_batch.length is None:
        return {name: value[rows] for name, value in features.items()}
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
    return in_batch_order(chunks, plan)


def in_batch_order(chunks: list[torch.Tensor], plan: list[MiniBatch]) -> torch.Tensor:
    """Concatenate per-mini-batch outputs [n_k, ...] and put the rows back in batch order: [N, ...]."""
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


_MERGED = "merged"


class GradientCache:
    """Run a contrastive step in budgeted mini-batches with exact gradients (see the module docstring).

    Args:
        token_budget: maximum ``rows * padded_length`` per mini-batch of token features (e.g. 16384 = 128 rows of
            128 tokens).
        sort_by_length: group rows of similar length to cut padding (the embeddings are put back in order).
        padding_side: ``"right"`` or ``"left"``; where the tokenizer put the padding (trimming keeps the rest).
        row_budget: rows per mini-batch of features without ``attention_mask`` (pixel values, vectors).
    """

    def __init__(
        self, token_budget: int = 16384, sort_by_length: bool = True, padding_side: str = "right", row_budget: int = 64
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        self.token_budget = token_budget
        self.sort_by_length = sort_by_length
        self.padding_side = padding_side
        self.row_budget = row_budget

    def plan(self, attention_mask: torch.Tensor) -> list[MiniBatch]:
        lengths = attention_mask.sum(dim=1).tolist()
        return plan_mini_batches(lengths, self.token_budget, self.sort_by_length)

    def plan_column(self, features: Features) -> list[MiniBatch]:
        """Token-budget plan for token features (``attention_mask`` present), row-budget plan otherwise."""
        if "attention_mask" in features:
            return self.plan(features["attention_mask"])
        return plan_rows(len(next(iter(features.values()))), self.row_budget)

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
        return self.step_columns(
            lambda batch: {_MERGED: {_MERGED: embed(batch[_MERGED])}},
            {_MERGED: features},
            lambda embeddings: loss_fn(embeddings[_MERGED]),
            loss_scale,
            backward,
            no_sync,
        )

    def step_columns(
        self,
        embed: Callable[[dict[str, dict[str, torch.Tensor]]], ColumnEmbeddings],
        features: Mapping[str, Features],
        loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict]],
        loss_scale: float = 1.0,
        backward: Callable[[torch.Tensor], None] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """A cached step over several columns; returns the detached (unscaled) loss and the objective's logs.

        Args:
            embed: maps ``{column: features of n_c rows}`` (one or more columns) to ``{column: {name: [n_c, ...]}}``
                (every embedding a column yields, e.g. ``{"image": {"image": [n, D]}}``).
            features: ``{column: {feature: [N, ...]}}``; ``[N, L]`` token features need ``attention_mask``.
            loss_fn: maps the flat ``{name: [N, ...]}`` of every column (rows in batch order) to ``(loss, logs)``.
            loss_scale, backward, no_sync: as in :meth:`step`.
        """
        schedule = self.schedule({column: self.plan_column(values) for column, values in features.items()})
        cached, states = self._embed_without_graph(embed, features, schedule)
        flat = {name: value for outputs in cached.values() for name, value in outputs.items()}
        for value in flat.values():
            if value.is_floating_point():
                value.requires_grad_(True)
        loss, logs = loss_fn(flat)
        (loss * loss_scale).backward()
        grads = {column: {name: value.grad for name, value in outputs.items()} for column, outputs in cached.items()}
        self._backward_through_model(embed, features, schedule, states, grads, backward, no_sync)
        return loss.detach(), logs

    @staticmethod
    def schedule(plans: Mapping[str, list[MiniBatch]]) -> list[Round]:
        """One call per mini-batch of each column, then one call with every column's last mini-batch (see top)."""
        rounds: list[Round] = [{column: mini_batch} for column, plan in plans.items() for mini_batch in plan[:-1]]
        rounds.append({column: plan[-1] for column, plan in plans.items()})
        return rounds

    def _features_of(self, features: Mapping[str, Features], round_: Round) -> dict[str, dict[str, torch.Tensor]]:
        return {
            column: select_rows(features[column], mini_batch, self.padding_side)
            for column, mini_batch in round_.items()
        }

    def _embed_without_graph(
        self, embed: Callable, features: Mapping[str, Features], schedule: list[Round]
    ) -> tuple[ColumnEmbeddings, list[RandomState]]:
        device = next(iter(next(iter(features.values())).values())).device
        states: list[RandomState] = []
        chunks: dict[str, dict[str, list[torch.Tensor]]] = {column: {} for column in features}
        with torch.no_grad():
            for round_ in schedule:
                states.append(RandomState(device))
                for column, outputs in embed(self._features_of(features, round_)).items():
                    for name, value in outputs.items():
                        chunks[column].setdefault(name, []).append(value)
        plans = {column: [round_[column] for round_ in schedule if column in round_] for column in features}
        cached = {
            column: {name: _as_leaf(in_batch_order(parts, plans[column])) for name, parts in outputs.items()}
            for column, outputs in chunks.items()
        }
        return cached, states

    def _backward_through_model(
        self,
        embed: Callable,
        features: Mapping[str, Features],
        schedule: list[Round],
        states: list[RandomState],
        grads: dict[str, dict[str, torch.Tensor | None]],
        backward: Callable[[torch.Tensor], None] | None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None,
    ) -> None:
        backward = backward or torch.Tensor.backward
        for index, (round_, state) in enumerate(zip(schedule, states)):
            last = index == len(schedule) - 1
            sync_context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
            with sync_context, state.replay():
                outputs = embed(self._features_of(features, round_))
                terms = [
                    (value * grads[column][name][round_[column].rows.to(value.device)].to(value.dtype)).sum()
                    for column, column_outputs in outputs.items()
                    for name, value in column_outputs.items()
                    if grads[column].get(name) is not None
                ]
                if terms:
                    backward(sum(terms))


def _as_leaf(value: torch.Tensor) -> torch.Tensor:
    """A cached embedding as a float32 leaf (the loss runs in full precision; integer outputs stay as they are)."""
    return value.float() if value.is_floating_point() else value
