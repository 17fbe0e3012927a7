"""Soft prompts for a frozen CLIP text tower: encode ``[SOS] ctx_before [class tokens] ctx_after [EOS]``.

CoOp-style prompt learners (MoCoOp, DenseCLIP) replace the words of a hand-written prompt by learnable vectors in
the token-embedding space and run the frozen text transformer on them. This module is the one place that does it:

1. :func:`class_token_ids` tokenizes the class names once (ids without special tokens).
2. :func:`build_prompt_layout` lays out ``[SOS] ctx_before [class tokens] ctx_after [EOS] [PAD...]`` for every
   class: which positions take context vectors and where the EOS sits (class names differ in length, so the
   ``ctx_after`` slots and the EOS move per class).
3. :func:`encode_prompts` splices the context tensors into the token embeddings, adds position embeddings, runs
   the encoder with the causal mask, pools at the EOS position and applies ``final_layer_norm`` and
   ``text_projection``: the same computation as ``CLIPModel.get_text_features`` on token ids, so with contexts
   equal to the token embeddings of real words the result equals :func:`hf_contrastive.models.clip.text_embeddings`
   of those words (tested to 1e-6).

The CLIP model is an argument, never stored, so a prompt learner that keeps a reference to it outside its module
tree saves only its own vectors. Gradients flow through the frozen tower into the contexts.

Our offline WordPiece tokenizers use ``[CLS]`` as SOS and ``[SEP]`` as EOS (``small_clip_config`` sets the text
tower's ``eos_token_id`` to ``[SEP]``); OpenAI CLIP tokenizers use ``<|startoftext|>`` / ``<|endoftext|>``.
:func:`prompt_special_ids` reads whichever the tokenizer has. Padding after the EOS is never attended by the EOS
(causal mask), so no padding mask is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_causal_mask

from .clip import unwrap_clip


@dataclass(frozen=True)
class PromptSpecialIds:
    """Token ids of the prompt frame: start (SOS), end (EOS, where the text tower pools) and padding."""

    sos: int
    eos: int
    pad: int


def prompt_special_ids(tokenizer: PreTrainedTokenizerBase) -> PromptSpecialIds:
    """SOS / EOS / PAD ids of a CLIP tokenizer (``bos``/``eos``) or a BERT-style one (``[CLS]``/``[SEP]``)."""
    sos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sos is None or eos is None:
        raise ValueError("The tokenizer needs a start token ([CLS] or bos) and an end token ([SEP] or eos).")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return PromptSpecialIds(sos=sos, eos=eos, pad=pad)


def class_token_ids(tokenizer: PreTrainedTokenizerBase, class_names: list[str]) -> list[list[int]]:
    """Token ids (no special tokens) of each class name; a name that tokenizes to nothing is an error."""
    token_ids = [tokenizer(name, add_special_tokens=False)["input_ids"] for name in class_names]
    empty = [name for name, ids in zip(class_names, token_ids) if not ids]
    if empty:
        raise ValueError(f"Class names {empty!r} tokenize to no tokens; give each class a non-empty name.")
    return token_ids


def template_context_words(template: str) -> tuple[str, str]:
    """The words before and after ``{}`` in a hand-written template, periods removed (CoOp's context init).

    ``"a photo of the digit {}."`` -> ``("a photo of the digit", "")``.
    """
    if template.count("{}") != 1:
        raise ValueError(f"A prompt template needs exactly one '{{}}' for the class name, got {template!r}.")
    before, after = template.replace(".", "").split("{}")
    return before.strip(), after.strip()


def word_embeddings(clip_model: CLIPModel, tokenizer: PreTrainedTokenizerBase, words: str) -> torch.Tensor:
    """Token embeddings [n, H] of ``words`` (no special tokens): the hard-prompt initialisation of a context."""
    ids = tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
    token_embedding = unwrap_clip(clip_model).text_model.embeddings.token_embedding
    ids = torch.tensor(ids, dtype=torch.long, device=token_embedding.weight.device)
    return token_embedding(ids).detach().clone()


@dataclass(frozen=True)
class PromptLayout:
    """Positions of ``[SOS] ctx_before [class tokens] ctx_after [EOS] [PAD...]`` for C classes, length L.

    ``input_ids`` [C, L] holds the class tokens and the frame (context slots hold the pad id and are overwritten);
    ``before_slot`` / ``after_slot`` [C, L] give the index of the context vector at each position, -1 elsewhere;
    ``eos_positions`` [C] is where the text tower pools.
    """

    input_ids: torch.Tensor
    before_slot: torch.Tensor
    after_slot: torch.Tensor
    eos_positions: torch.Tensor
    n_before: int
    n_after: int

    @property
    def num_classes(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PromptLayout:
        """The layout with its index tensors on ``device`` (no copy when already there)."""
        return PromptLayout(
            input_ids=self.input_ids.to(device),
            before_slot=self.before_slot.to(device),
            after_slot=self.after_slot.to(device),
            eos_positions=self.eos_positions.to(device),
            n_before=self.n_before,
            n_after=self.n_after,
        )


def build_prompt_layout(
    class_ids: list[list[int]],
    n_before: int,
    n_after: int,
    special_ids: PromptSpecialIds,
    max_length: int,
    class_names: list[str] | None = None,
) -> PromptLayout:
    """Lay out ``[SOS] ctx_before(n_before) [class tokens] ctx_after(n_after) [EOS]`` per class, padded to the longest.

    ``max_length`` is the text tower's ``max_position_embeddings``; a prompt that does not fit is an error naming the
    class (``class_names`` only label the message).
    """
    if n_before < 0 or n_after < 0:
        raise ValueError(f"Context lengths must be >= 0, got n_before={n_before}, n_after={n_after}.")
    names = class_names if class_names is not None else [str(index) for index in range(len(class_ids))]
    lengths = [2 + n_before + len(ids) + n_after for ids in class_ids]
    too_long = [(name, length) for name, length in zip(names, lengths) if length > max_length]
    if too_long:
        raise ValueError(
            f"Prompts for classes {too_long} (name, tokens with {n_before}+{n_after} context vectors and SOS/EOS) "
            f"exceed the text tower's {max_length} positions; shorten the class names or the context."
        )
    width = max(lengths)
    input_ids = torch.full((len(class_ids), width), special_ids.pad, dtype=torch.long)
    before_slot = torch.full((len(class_ids), width), -1, dtype=torch.long)
    after_slot = torch.full((len(class_ids), width), -1, dtype=torch.long)
    for row, ids in enumerate(class_ids):
        class_start = 1 + n_before
        after_start = class_start + len(ids)
        input_ids[row, 0] = special_ids.sos
        input_ids[row, class_start:after_start] = torch.tensor(ids, dtype=torch.long)
        input_ids[row, after_start + n_after] = special_ids.eos
        before_slot[row, 1:class_start] = torch.arange(n_before)
        after_slot[row, after_start : after_start + n_after] = torch.arange(n_after)
    eos_positions = torch.tensor([length - 1 for length in lengths], dtype=torch.long)
    return PromptLayout(input_ids, before_slot, after_slot, eos_positions, n_before, n_after)


def _per_class_context(context: torch.Tensor, num_classes: int, length: int) -> torch.Tensor:
    """A context as [*lead, C, n, H]: a 2-D [n, H] context is shared by all classes; a class axis of 1 broadcasts."""
    if context.dim() == 2:
        context = context.unsqueeze(0)
    if context.shape[-2] != length or context.shape[-3] not in (1, num_classes):
        raise ValueError(
            f"Context of shape {tuple(context.shape)} does not match the layout: expected [..., {num_classes} or 1, "
            f"{length}, hidden]."
        )
    return context.expand(*context.shape[:-3], num_classes, *context.shape[-2:])


def _splice(tokens: torch.Tensor, context: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Put ``context[..., c, slot[c, p], :]`` at every position p with ``slot >= 0`` of ``tokens`` [*lead, C, L, H]."""
    if context.shape[-2] == 0:
        return tokens
    index = slot.clamp(min=0).unsqueeze(-1).expand(*tokens.shape[:-3], *slot.shape, tokens.shape[-1])
    gathered = torch.gather(context.to(tokens.dtype), -2, index)
    return torch.where((slot >= 0).unsqueeze(-1), gathered, tokens)


def encode_prompts(
    clip_model: CLIPModel,
    layout: PromptLayout,
    ctx_before: torch.Tensor,
    ctx_after: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected, unnormalised text features [*lead, C, D] of soft prompts through CLIP's text tower.

    ``ctx_before`` / ``ctx_after``: [n, H] (shared by all classes) or [*lead, C or 1, n, H] (per class and/or per
    leading axis, e.g. one context per expert: [E, 1, n, H] -> features [E, C, D]). n must equal the layout's
    ``n_before`` / ``n_after``; ``ctx_after=None`` means no context after the class name.

    Computation (H = text hidden size, L = layout length)::

        x[c, p] = ctx_before[c, i]  where p = 1 + i,  ctx_after[c, j] after the class tokens,  tok_emb(id) elsewhere
        h = TextEncoder(x + pos_emb[:L], causal mask)               # [*lead, C, L, H]
        out[c] = text_projection(final_layer_norm(h[c, eos_c]))     # [*lead, C, D]
    """
    text_model = unwrap_clip(clip_model).text_model
    device = text_model.embeddings.token_embedding.weight.device
    layout = layout.to(device)
    hidden = text_model.config.hidden_size
    if ctx_after is None:
        ctx_after = ctx_before.new_zeros(0, hidden)
    before = _per_class_context(ctx_before, layout.num_classes, layout.n_before)
    after = _per_class_context(ctx_after, layout.num_classes, layout.n_after)
    lead = torch.broadcast_shapes(before.shape[:-3], after.shape[:-3])
    tokens = text_model.embeddings.token_embedding(layout.input_ids).expand(*lead, *layout.input_ids.shape, hidden)
    tokens = _splice(tokens, before.expand(*lead, *before.shape[-3:]), layout.before_slot)
    tokens = _splice(tokens, after.expand(*lead, *after.shape[-3:]), layout.after_slot)
    flat = tokens.reshape(-1, *tokens.shape[-2:])
    states = text_model.embeddings(inputs_embeds=flat)
    mask = create_causal_mask(config=text_model.config, inputs_embeds=states, attention_mask=None, cache=None)
    states = text_model.encoder(inputs_embeds=states, attention_mask=mask, is_causal=True).last_hidden_state
    states = states.reshape(*lead, layout.num_classes, *states.shape[-2:])
    eos_index = layout.eos_positions.view(layout.num_classes, 1, 1).expand(*lead, layout.num_classes, 1, hidden)
    pooled = text_model.final_layer_norm(torch.gather(states, -2, eos_index).squeeze(-2))
    return unwrap_clip(clip_model).text_projection(pooled)
