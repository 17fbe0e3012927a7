"""Contrastive search: pick, among the top-k next tokens, the one that balances confidence and novelty.

Contrastive search (Su et al., NeurIPS 2022, arXiv:2202.06417; Su & Collier, TMLR 2023, arXiv:2210.14140) scores
each of the ``k`` most probable next tokens ``v`` of a context ``x_<t`` by

.. math::

    \\text{score}(v) = (1 - \\alpha)\\, p_\\theta(v \\mid x_{<t})
        - \\alpha \\max_{j < t} \\cos\\big(h_v, h_{x_j}\\big)

and appends the argmax. ``p`` is the full-vocabulary softmax (of the processed logits; raw unless logits processors
are given), not renormalised over the top-k; ``h`` are last-layer hidden states (the input of the LM head); the max
runs over every real previous token, prompt included, padding excluded. ``alpha = 0`` or ``k = 1`` is greedy search.

Use it as a function, or through ``model.generate``::

    from hf_contrastive.generation import contrastive_search, contrastive_search_decoding, custom_generate_path

    ids = contrastive_search(model, input_ids, attention_mask, top_k=5, penalty_alpha=0.6, max_new_tokens=128)
    ids = model.generate(**inputs, custom_generate=contrastive_search_decoding, penalty_alpha=0.6, top_k=5)
    ids = model.generate(**inputs, custom_generate=custom_generate_path(), trust_remote_code=True,
                         penalty_alpha=0.6, top_k=5)  # the Hub-style folder (custom_generate/generate.py)

**How a step runs** (one forward for the ``k`` candidates, ``B`` prompts, context length ``L``):

- The KV cache keeps **one row per prompt** ([B, heads, L, d]); it is never copied ``k`` times. The ``k``
  candidates of a prompt go in as ``k`` extra *positions* of its row ([B, k] tokens, all at the same position
  id) with a 4D attention mask in which each candidate sees the real context tokens and itself only, so each gets
  exactly the hidden state of a forward of its own. The context keys and values are read once per prompt, not
  once per candidate.
- A forward pre-hook on the LM head receives the candidates' last-layer hidden states [B, k, D], computes the
  degeneration penalty against the (unit-normalised) context states [B, D, L] with one batched matmul, picks the
  winner and hands only its row to the head: the vocabulary projection runs for ``B`` rows, not ``B * k``, and
  model-specific logit post-processing (soft-capping, scaling) still applies. Only the last layer's hidden states
  are kept; ``output_hidden_states`` is never requested.
- The winner's keys and values are moved to position ``L`` of each layer and the ``k - 1`` others are cropped
  (``O(B * heads * d)`` per layer). The cache layers write into buffers allocated once for the whole generation,
  so no step copies the cache (``DynamicCache`` concatenates, copying every layer's cache at every step).
- Nothing is read back to the CPU during a step unless stopping needs it: with only a length limit the loop never
  synchronises; an end-of-sequence or other stopping criterion costs one ``any()`` per step, a streamer one copy
  of the new tokens.

Requirements: a decoder-only model whose LM head is its ``get_output_embeddings()`` module, ``eager`` or ``sdpa``
attention (custom 4D masks), and a full-attention ``DynamicCache`` (sliding-window and linear-attention layers are
refused). Prompts are left-padded (``tokenizer.padding_side = "left"``); positions follow the attention mask as in
``generate``, so a padded prompt decodes like the same prompt alone.

Memory: the cache of greedy search at its final length plus ``k`` positions, allocated up front, where the peer
implementation (transformers <= 4.55) holds and copies a ``k``-fold cache every step; the context states take
``O(B * L * D)`` and the penalty ``O(B * k * L)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation import (
    EosTokenCriteria,
    GenerateDecoderOnlyOutput,
    LogitsProcessorList,
    MaxLengthCriteria,
    StoppingCriteriaList,
)

from .._compat import cache_forward_argument

SUPPORTED_ATTENTION = ("eager", "sdpa")
# generate() prepares these for every decoding loop; contrastive search derives its own (positions, cache, mask).
GENERATE_MODEL_KWARGS = frozenset(
    {"attention_mask", "position_ids", "use_cache", "logits_to_keep", "cache", "past_key_values"}
)


@dataclass
class ContrastiveSearchOutput:
    """Sequences plus what every step scored (``return_dict=True``); ``T`` steps, ``k`` candidates.

    Attributes:
        sequences: [B, S + T] prompt and continuation (pad after a row stopped).
        candidate_ids: [B, T, k] the top-k tokens of each step, most probable first.
        candidate_probs: [B, T, k] their full-vocabulary probabilities ``p(v | x_<t)``.
        degeneration_penalty: [B, T, k] ``max_j cos(h_v, h_j)`` over the real context tokens.
        candidate_scores: [B, T, k] ``(1 - alpha) * p - alpha * penalty`` (-inf for a candidate whose processed
            logit is -inf); the chosen token is the argmax.
    """

    sequences: torch.LongTensor
    candidate_ids: torch.LongTensor
    candidate_probs: torch.Tensor
    degeneration_penalty: torch.Tensor
    candidate_scores: torch.Tensor


def custom_generate_path() -> str:
    """The folder to pass as ``model.generate(custom_generate=..., trust_remote_code=True)``.

    It holds ``custom_generate/generate.py`` (the layout ``generate`` expects of a Hub repository), which runs
    :func:`contrastive_search_decoding`. Passing the function itself as ``custom_generate`` needs no
    ``trust_remote_code``.
    """
    return str(Path(__file__).resolve().parent)


def degeneration_penalty(
    candidate_hidden: torch.Tensor, context_hidden: torch.Tensor, context_valid: torch.Tensor
) -> torch.Tensor:
    """``max_j cos(h_v, h_j)`` over the real context tokens: [B, k].

    Args:
        candidate_hidden: [B, k, D] unit-normalised hidden states of the candidates.
        context_hidden: [B, D, L] unit-normalised hidden states of the context, feature-major (one matmul).
        context_valid: [B, L] True on real tokens; padding is set to -1 before the max, which a real cosine
            (>= -1) never loses to.
    """
    cosine = torch.bmm(candidate_hidden, context_hidden)  # [B, k, L]
    return cosine.masked_fill(~context_valid[:, None, :], -1.0).amax(dim=-1)


def contrastive_scores(candidate_probs: torch.Tensor, penalty: torch.Tensor, penalty_alpha: float) -> torch.Tensor:
    """``(1 - alpha) * p(v) - alpha * penalty``, same shape as the inputs ([B, k])."""
    return (1.0 - penalty_alpha) * candidate_probs - penalty_alpha * penalty


def check_decoding_arguments(top_k: int, penalty_alpha: float) -> None:
    """Raise a ValueError naming the argument when ``top_k`` or ``penalty_alpha`` is out of range."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (the number of candidates per step), got {top_k!r}.")
    if penalty_alpha is None or not 0.0 <= float(penalty_alpha) <= 1.0:
        raise ValueError(f"penalty_alpha must be in [0, 1] (0 = greedy search), got {penalty_alpha!r}.")


def check_model(model) -> None:
    """Refuse, with the reason, a model contrastive search cannot score: no LM head, encoder-decoder, no 4D masks."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"Contrastive search here supports decoder-only causal LMs; got {type(model).__name__}"
            f"{' (encoder-decoder)' if config is not None else ' (no config)'}."
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(
            f"Contrastive search needs the last-layer hidden states the LM head reads, but {type(model).__name__} has "
            "no output embeddings (get_output_embeddings() is None): load the model with AutoModelForCausalLM."
        )
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"Contrastive search scores the k candidates as extra positions under a custom 4D attention mask, which "
            f"{attention!r} attention does not take: call model.set_attn_implementation('sdpa') (or 'eager')."
        )


def _check_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids must be [batch, prompt_length] with a non-empty prompt, got {tuple(input_ids.shape)}."
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}."
        )
    if not bool(attention_mask[:, -1].all()):
        raise ValueError(
            "The prompts are right-padded (attention_mask[:, -1] has zeros): decoder-only generation needs left "
            "padding, set tokenizer.padding_side = 'left'."
        )


class _PreallocatedLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values live in a buffer allocated once, not re-concatenated.

    ``DynamicLayer.update`` concatenates, which copies the whole cache of the layer at every step (greedy search
    pays that too); here a step writes only its new positions, and ``keys`` / ``values`` are views [B, heads, L, d]
    of a [B, heads, capacity, d] buffer. ``crop`` just shortens the views. A buffer that fills up doubles (one
    copy), so a loop without a length limit still works.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._allocate(key_states, max(self.capacity, key_states.shape[-2]))
        self._value_buffer = self._allocate(value_states, self._key_buffer.shape[-2])

    @staticmethod
    def _allocate(like: torch.Tensor, capacity: int) -> torch.Tensor:
        return like.new_empty((*like.shape[:-2], capacity, like.shape[-1]))

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self._key_buffer.shape[-2])
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = self._allocate(old, capacity)
            new[..., : self.length, :] = old[..., : self.length, :]
            setattr(self, name, new)

    def _set_views(self) -> None:
        self.keys = self._key_buffer[..., : self.length, :]
        self.values = self._value_buffer[..., : self.length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._grow(end)
        self._key_buffer[..., self.length : end, :] = key_states
        self._value_buffer[..., self.length : end, :] = value_states
        self.length = end
        self._set_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes the negative number of positions to drop, got {tokens_to_remove}.")
        self.length = max(self.length + tokens_to_remove, 0)
        if self.is_initialized:
            self._set_views()


def _empty_cache(model, cache, capacity: int) -> DynamicCache:
    """An empty full-attention cache of :class:`_PreallocatedLayer` (``capacity`` positions each).

    ``cache`` (what ``generate`` prepared, or None) must be an empty ``DynamicCache`` of full-attention layers: its
    layers are swapped for preallocated ones; sliding-window, linear-attention and static caches are refused.
    """
    if cache is None:
        cache = DynamicCache(config=model.config)
    if not isinstance(cache, DynamicCache) or cache.get_seq_length() > 0:
        raise ValueError(
            f"Contrastive search needs an empty DynamicCache, got {type(cache).__name__}"
            f"{' with content' if isinstance(cache, DynamicCache) else ''}: leave cache / cache_implementation unset."
        )
    unsupported = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if unsupported:
        raise ValueError(
            f"Contrastive search supports full-attention cache layers (DynamicLayer) only; this model's cache has "
            f"{unsupported} (sliding-window or linear-attention layers)."
        )
    cache.layers = [_PreallocatedLayer(capacity) for _ in cache.layers]
    if cache.layer_class_to_replicate is not None:  # a cache built without a config adds its layers lazily
        cache.layer_class_to_replicate = partial(_PreallocatedLayer, capacity)
    return cache


class _LMHeadInput:
    """A forward pre-hook on the LM head that hands its input (the last-layer hidden states) to a reducer.

    ``forward(reduce, **inputs)`` runs the model once; the head then projects whatever ``reduce(hidden)`` returns,
    so the logits are those of the rows the reducer keeps. A model that never calls its output embeddings module
    gets a clear error instead of silently wrong scores.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.head = model.get_output_embeddings()
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.handle = None

    def __enter__(self) -> _LMHeadInput:
        self.handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.remove()

    def _hook(self, module, args):
        if self.reduce is None:  # a second call of the head in one forward: leave it alone
            return None
        reduced = self.reduce(args[0])
        self.reduce = None
        return (reduced, *args[1:])

    def forward(self, reduce: Callable[[torch.Tensor], torch.Tensor], **inputs):
        self.reduce = reduce
        outputs = self.model(**inputs, use_cache=True, return_dict=True)
        if self.reduce is not None:
            self.reduce = None
            raise ValueError(
                f"{type(self.model).__name__}'s forward never called its output embeddings module, so contrastive "
                "search cannot read the hidden states its logits come from."
            )
        return outputs


class _Context:
    """Unit-normalised last-layer states of every token so far, feature-major [B, D, capacity], and their validity."""

    def __init__(self, hidden: torch.Tensor, valid: torch.Tensor, capacity: int) -> None:
        batch, length, dim = hidden.shape
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        self.states = hidden.new_zeros((batch, dim, capacity), dtype=dtype)
        self.states[:, :, :length] = F.normalize(hidden.to(dtype), dim=-1).transpose(1, 2)
        self.valid = valid.new_zeros((batch, capacity), dtype=torch.bool)
        self.valid[:, :length] = valid.bool()
        self.length = length

    def append(self, normalized: torch.Tensor) -> None:
        """Add one real token per row ([B, D], unit norm), doubling the buffers when full."""
        if self.length == self.states.shape[2]:
            self.states = torch.cat([self.states, torch.zeros_like(self.states)], dim=2)
            self.valid = torch.cat([self.valid, torch.zeros_like(self.valid)], dim=1)
        self.states[:, :, self.length] = normalized
        self.valid[:, self.length] = True
        self.length += 1

    def view(self, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(candidates, states [B, D, L], valid [B, L])``: the arguments of :func:`degeneration_penalty` so far."""
        return candidates, self.states[:, :, : self.length], self.valid[:, : self.length]

    def candidate_mask(self, top_k: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive [B, 1, k, L + k] mask: candidate ``i`` sees the real context tokens and itself, nothing else."""
        batch = self.valid.shape[0]
        context = self.valid[:, None, None, : self.length].expand(batch, 1, top_k, self.length)
        itself = torch.eye(top_k, dtype=torch.bool, device=self.valid.device).expand(batch, 1, top_k, top_k)
        allowed = torch.cat([context, itself], dim=-1)
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )


def _next_token_logits(outputs) -> torch.Tensor:
    """[B, V] logits of the last position, in float32 at least (float64 models stay float64)."""
    logits = outputs.logits[:, -1]
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _keep_chosen_candidate(cache: DynamicCache, context_length: int, chosen: torch.Tensor, top_k: int) -> None:
    """Move the winner's keys/values (position ``L + chosen``) to position ``L`` and crop the ``k - 1`` others."""
    rows = torch.arange(chosen.shape[0], device=chosen.device)
    for layer in cache.layers:
        for states in (layer.keys, layer.values):
            states[:, :, context_length] = states[rows, :, context_length + chosen.to(states.device)]
        layer.crop(-(top_k - 1))


class _StepRecord:
    """What the caller asked to keep of each step (on the device until the end; nothing by default).

    ``candidates``: the top-k ids, probabilities, penalties and scores ([B, k] each); ``processed`` / ``raw``: the
    next-token logits after / before the logits processors ([B, V] each, as ``generate``'s scores / logits).
    """

    def __init__(self, candidates: bool = False, processed: bool = False, raw: bool = False) -> None:
        self.keep = {"candidates": candidates, "processed": processed, "raw": raw}
        self.steps: dict[str, list[torch.Tensor]] = {}

    def add(self, group: str, **tensors: torch.Tensor) -> None:
        if self.keep[group]:
            for name, tensor in tensors.items():
                self.steps.setdefault(name, []).append(tensor)

    def stacked(self, name: str) -> torch.Tensor:
        """[B, T, ...]: the step tensors of ``name`` stacked along a new step dimension."""
        return torch.stack(self.steps[name], dim=1)


class _CandidateScorer:
    """Reducer of a candidate forward: scores the k candidates from the hidden states the LM head reads, then hands
    the head only the winner's row, so the vocabulary projection runs for B rows instead of B * k."""

    def __init__(
        self, context: _Context, top_logits: torch.Tensor, top_probs: torch.Tensor, penalty_alpha: float
    ) -> None:
        self.context, self.top_logits, self.top_probs, self.penalty_alpha = (
            context,
            top_logits,
            top_probs,
            penalty_alpha,
        )

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, k, D] -> the chosen candidates' states [B, 1, D]; keeps penalty, scores and the choice."""
        normalized = F.normalize(hidden.to(self.context.states.dtype), dim=-1)
        self.penalty = degeneration_penalty(*self.context.view(normalized))
        scores = contrastive_scores(self.top_probs.to(self.penalty.dtype), self.penalty, self.penalty_alpha)
        # A candidate the logits processors forbade (-inf) must not win on novelty alone.
        self.scores = scores.masked_fill(torch.isneginf(self.top_logits), float("-inf"))
        self.chosen = self.scores.argmax(dim=-1)
        rows = torch.arange(len(self.chosen), device=self.chosen.device)
        self.chosen_state = normalized[rows, self.chosen]
        return hidden[rows, self.chosen].unsqueeze(1)


def _stopping_plan(stopping_criteria: StoppingCriteriaList, streamer, pad_token_id: int | None) -> tuple:
    """``(max_length, needs_poll, stops_rows)``; refuses a loop that could never stop or pad a stopped row."""
    max_length = stopping_criteria.max_length
    needs_poll = streamer is not None or any(not isinstance(c, MaxLengthCriteria) for c in stopping_criteria)
    if max_length is None and not needs_poll:
        raise ValueError("No stopping criterion: pass max_new_tokens (or max_length / stopping_criteria).")
    stops_rows = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    if stops_rows and pad_token_id is None:
        raise ValueError("An end-of-sequence criterion needs pad_token_id to fill the rows that have stopped.")
    return max_length, needs_poll, stops_rows


def _decode(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    top_k: int,
    penalty_alpha: float,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    pad_token_id: int | None,
    streamer=None,
    cache: DynamicCache | None = None,
    record: _StepRecord | None = None,
) -> torch.LongTensor:
    """The decoding loop shared by :func:`contrastive_search` and :func:`contrastive_search_decoding`."""
    check_decoding_arguments(top_k, penalty_alpha)
    check_model(model)
    _check_prompt(input_ids, attention_mask)
    max_length, needs_poll, stops_rows = _stopping_plan(stopping_criteria, streamer, pad_token_id)
    batch, prompt_length = input_ids.shape
    capacity = (max_length or prompt_length + 256) + top_k
    cache = _empty_cache(model, cache, capacity)
    cache_kwarg = {cache_forward_argument(model): cache}
    record = record or _StepRecord()
    rows = torch.arange(batch, device=input_ids.device)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # padding at 0, as generate does
    next_position = positions[:, -1] + 1
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)

    with _LMHeadInput(model) as head_input:
        prompt_states: list[torch.Tensor] = []

        def keep_prompt_states(hidden: torch.Tensor) -> torch.Tensor:
            """Every prompt position's state for the penalty; only the last one goes through the LM head."""
            prompt_states.append(hidden)
            return hidden[:, -1:]

        outputs = head_input.forward(
            keep_prompt_states,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            **cache_kwarg,
        )
        context = _Context(prompt_states[0], attention_mask, capacity=max_length or prompt_length + 256)
        logits = _next_token_logits(outputs)
        if top_k > logits.shape[-1]:
            raise ValueError(f"top_k={top_k} exceeds the vocabulary size {logits.shape[-1]}.")
        while True:
            processed = logits_processor(input_ids, logits)
            top_logits, top_ids = processed.topk(top_k, dim=-1)  # [B, k]
            top_probs = processed.softmax(dim=-1).gather(1, top_ids)
            scorer = _CandidateScorer(context, top_logits, top_probs, penalty_alpha)
            context_length = cache.get_seq_length()
            outputs = head_input.forward(
                scorer,
                input_ids=top_ids,
                attention_mask=context.candidate_mask(top_k, model.dtype),
                position_ids=next_position[:, None].expand(batch, top_k),
                **cache_kwarg,
            )
            _keep_chosen_candidate(cache, context_length, scorer.chosen, top_k)
            context.append(scorer.chosen_state)
            next_position = next_position + 1
            next_tokens = top_ids[rows, scorer.chosen]
            if stops_rows:
                next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
            record.add("candidates", ids=top_ids, probs=top_probs, penalty=scorer.penalty, scores=scorer.scores)
            record.add("processed", processed=processed)
            record.add("raw", raw=logits)
            logits = _next_token_logits(outputs)
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            unfinished = unfinished & ~stopping_criteria(input_ids, None)
            # Polling unfinished.any() is the one host-device synchronisation; a pure length limit needs none.
            if not bool(unfinished.any()) if needs_poll else input_ids.shape[1] >= max_length:
                break
    if streamer is not None:
        streamer.end()
    return input_ids


@torch.no_grad()
def contrastive_search(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    top_k: int = 5,
    penalty_alpha: float = 0.6,
    max_new_tokens: int = 64,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    logits_processor: LogitsProcessorList | None = None,
    streamer=None,
    return_dict: bool = False,
) -> torch.LongTensor | ContrastiveSearchOutput:
    """Continue left-padded prompts with contrastive search; returns [B, S + T] ids (or the scored steps).

    Args:
        model: a decoder-only ``AutoModelForCausalLM`` (PEFT-wrapped works), eval mode recommended.
        input_ids: [B, S] prompts, left-padded; attention_mask: [B, S] (default: all ones).
        top_k: candidates per step ``k`` >= 1 (the paper: 5 for open-ended text, 3 for code).
        penalty_alpha: degeneration penalty ``alpha`` in [0, 1] (0.6 in the paper; 0 = greedy).
        max_new_tokens: steps at most (every row gets exactly this many when nothing else stops it).
        eos_token_id: stop a row at this token (or any of these); its later positions get ``pad_token_id``.
        pad_token_id: default ``model.generation_config.pad_token_id``, else the first EOS id.
        stopping_criteria / logits_processor: ``transformers`` lists, added to the length and EOS criteria /
            applied to the next-token logits before the top-k and the softmax (none: raw logits, as in the paper).
        streamer: a ``transformers`` streamer (``TextStreamer``...): gets the prompt, then each step's tokens.
        return_dict: return a :class:`ContrastiveSearchOutput` with every step's candidates and scores.
    """
    check_decoding_arguments(top_k, penalty_alpha)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    criteria = StoppingCriteriaList([MaxLengthCriteria(input_ids.shape[1] + max_new_tokens)])
    if eos_token_id is not None:
        criteria.append(EosTokenCriteria(eos_token_id))
        if pad_token_id is None:
            generation_config = getattr(model, "generation_config", None)
            pad_token_id = getattr(generation_config, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = eos_token_id if isinstance(eos_token_id, int) else eos_token_id[0]
    criteria.extend(stopping_criteria or [])
    if streamer is not None:
        streamer.put(input_ids.cpu())
    record = _StepRecord(candidates=return_dict)
    sequences = _decode(
        model,
        input_ids,
        attention_mask,
        top_k,
        penalty_alpha,
        logits_processor or LogitsProcessorList(),
        criteria,
        pad_token_id,
        streamer,
        record=record,
    )
    if not return_dict:
        return sequences
    return ContrastiveSearchOutput(
        sequences=sequences,
        candidate_ids=record.stacked("ids"),
        candidate_probs=record.stacked("probs"),
        degeneration_penalty=record.stacked("penalty"),
        candidate_scores=record.stacked("scores"),
    )


def contrastive_search_decoding(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config,
    synced_gpus: bool = False,
    streamer=None,
    **model_kwargs,
) -> GenerateDecoderOnlyOutput | torch.LongTensor:
    """The decoding loop for ``model.generate(custom_generate=contrastive_search_decoding, penalty_alpha=, top_k=)``.

    ``generate`` prepares the inputs, the logits processors and the stopping criteria (``max_new_tokens``, EOS,
    stop strings, ...) and calls this with the signature of its own loops. ``penalty_alpha`` (required) and ``top_k``
    come from the generation config (``top_k`` defaults to 50 there: set it). ``return_dict_in_generate`` with
    ``output_scores`` / ``output_logits`` returns the processed / raw next-token logits of each step.
    """
    if synced_gpus:
        raise ValueError("Contrastive search does not support synced_gpus (DeepSpeed ZeRO-3 / FSDP generation).")
    unexpected = sorted(
        key for key, value in model_kwargs.items() if value is not None and key not in GENERATE_MODEL_KWARGS
    )
    if unexpected:
        raise ValueError(f"Contrastive search takes text prompts only; got the model inputs {unexpected}.")
    attention_mask = model_kwargs.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    returns_dict = generation_config.return_dict_in_generate
    record = _StepRecord(
        processed=returns_dict and generation_config.output_scores,
        raw=returns_dict and generation_config.output_logits,
    )
    sequences = _decode(
        model,
        input_ids,
        attention_mask,
        generation_config.top_k,
        generation_config.penalty_alpha,
        logits_processor,
        stopping_criteria,
        None if generation_config._pad_token_tensor is None else int(generation_config._pad_token_tensor),
        streamer,
        cache=model_kwargs.get("cache", model_kwargs.get("past_key_values")),
        record=record,
    )
    if not returns_dict:
        return sequences
    return GenerateDecoderOnlyOutput(
        sequences=sequences,
        scores=tuple(record.steps.get("processed", [])) or None,
        logits=tuple(record.steps.get("raw", [])) or None,
    )
