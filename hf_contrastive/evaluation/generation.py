"""Offline quality proxies for generated text and a language model's representation space (no MAUVE, no network).

    metrics = evaluate_continuations(prefixes, continuations, scorer=judge_model, scorer_tokenizer=judge_tokenizer)
    # {"rep-2": 3.1, "rep-3": 1.2, "rep-4": 0.6, "diversity": 95.2, "length": 41.3, "coherence": -3.9}
    isotropy(model, tokenizer, texts)  # 1 - mean cosine between the token representations of a text

Definitions follow the official contrastive-search evaluation (papers/simctg-contrastive-search.md, section 5):

- **rep-n** = 100 x (1 - |unique n-grams| / |n-grams|), pooled over the whole corpus, on whitespace tokens. Every
  n-gram of a text counts (the official ``eval_text`` loop skips each text's last n-gram; we do not reproduce that
  off-by-one, so "a b a b" has rep-2 = 100 x (1 - 2/3)).
- **diversity** = 100 x prod_{n=2..4} (1 - rep-n / 100).
- **coherence** = mean over texts of the mean log-probability of the continuation's tokens under a *second* model
  (the judge; OPT-2.7B in the paper), given the prefix with the judge's BOS token prepended.
- **isotropy** = 1 - sum_x sum_{i != j} cos(h_i, h_j) / sum_x |x|(|x| - 1): a token-pair-weighted average of the
  off-diagonal cosines of each text's last-layer hidden states (not a mean of per-text means). Identical states give
  0, orthogonal ones 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def ngram_repetition(texts: Sequence[str], n: int) -> float:
    """rep-n in percent: 100 x (1 - unique / total) over the n-grams of all ``texts`` (whitespace tokens).

    Texts shorter than ``n`` words contribute nothing; no n-gram at all gives 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.split()
        counts.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(counts.values())
    return 100.0 * (1.0 - len(counts) / total) if total else 0.0


def diversity(texts: Sequence[str]) -> float:
    """100 x prod_{n=2..4} (1 - rep-n / 100): 100 for text without any repeated bigram, 0 for one repeated word."""
    product = 1.0
    for n in (2, 3, 4):
        product *= 1.0 - ngram_repetition(texts, n) / 100.0
    return 100.0 * product


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def continuation_log_probs(
    model,
    tokenizer,
    prefixes: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    prepend_bos: bool = True,
) -> list[torch.Tensor]:
    """Per-token ``log p(c_t | prefix, c_<t)`` of each continuation under ``model``: one [T_i] tensor per text.

    Prefix and continuation are tokenised separately (no special tokens) and concatenated, so the boundary is
    exactly where the continuation starts; the tokenizer's BOS goes first when ``prepend_bos`` and it has one.
    Without BOS and prefix, the first continuation token has no context and is not scored. Sequences longer than
    ``max_length`` (at most the model's ``max_position_embeddings``) lose their continuation's tail.
    """
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations.")
    max_length = min(max_length, getattr(model.config, "max_position_embeddings", None) or max_length)
    bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = []
    for prefix, continuation in zip(prefixes, continuations):
        context = bos + encode(prefix)
        rows.append((context, encode(continuation)[: max(max_length - len(context), 0)]))
    device = _device(model)
    results: list[torch.Tensor] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(context) + len(target) for context, target in chunk)
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (context, target) in enumerate(chunk):
            ids = context + target
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision: float32 log-softmax
        log_probs = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None].to(device)).squeeze(-1)
        for row, (context, target) in enumerate(chunk):
            first = max(len(context), 1)  # the prediction of token i sits at position i - 1
            results.append(log_probs[row, first - 1 : len(context) + len(target) - 1].cpu())
    return results


def coherence(model, tokenizer, prefixes: Sequence[str], continuations: Sequence[str], **kwargs) -> float:
    """Mean over texts of the mean token log-probability of each continuation given its prefix (higher = better).

    ``model`` / ``tokenizer`` are the judge, not the generator. Continuations without any scored token are skipped.
    """
    per_text = [
        values.mean().item()
        for values in continuation_log_probs(model, tokenizer, prefixes, continuations, **kwargs)
        if len(values)
    ]
    if not per_text:
        raise ValueError("No continuation has a token to score: every continuation is empty.")
    return sum(per_text) / len(per_text)


def perplexity(model, tokenizer, texts: Sequence[str], **kwargs) -> float:
    """``exp`` of the token-weighted mean negative log-likelihood of ``texts`` (BOS-conditioned when available)."""
    values = torch.cat(continuation_log_probs(model, tokenizer, [""] * len(texts), texts, **kwargs))
    if values.numel() == 0:
        raise ValueError("No token to score in texts.")
    return float(torch.exp(-values.mean()))


def self_similarity_terms(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: the sum of off-diagonal cosines between its real tokens, and the number of such ordered pairs.

    hidden_states: [B, L, H]; attention_mask: [B, L] (1 on real tokens). Returns two [B] tensors (float64).
    """
    valid = attention_mask.bool()
    normalized = F.normalize(hidden_states.double(), dim=-1) * valid[..., None]
    summed = normalized.sum(dim=1)  # [B, H]; sum_ij cos_ij = |sum_i h_i|^2 for unit h_i
    lengths = valid.sum(dim=1).double()
    return (summed * summed).sum(dim=-1) - lengths, lengths * (lengths - 1)


def isotropy_from_terms(cosine_sums: torch.Tensor, pair_counts: torch.Tensor) -> float:
    """``1 - sum(cosine_sums) / sum(pair_counts)`` (see :func:`self_similarity_terms`)."""
    pairs = float(pair_counts.sum())
    if pairs == 0:
        raise ValueError("Isotropy needs texts with at least two tokens.")
    return 1.0 - float(cosine_sums.sum()) / pairs


@torch.no_grad()
def isotropy(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 16) -> float:
    """Isotropy of ``model``'s last-layer token representations over ``texts`` (module docstring; 2-decimal in papers).

    Texts shorter than 2 characters are dropped (as in the official script); each is truncated to ``max_length``
    tokens, with the tokenizer's own special tokens (none for GPT-2).
    """
    kept = [text for text in texts if len(text) >= 2]
    device = _device(model)
    sums, pairs = [], []
    for start in range(0, len(kept), batch_size):
        batch = tokenizer(
            kept[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        outputs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        terms = self_similarity_terms(outputs.hidden_states[-1], batch["attention_mask"])
        sums.append(terms[0])
        pairs.append(terms[1])
    if not sums:
        raise ValueError("Isotropy needs at least one text of 2 or more characters.")
    return isotropy_from_terms(torch.cat(sums), torch.cat(pairs))


def evaluate_continuations(
    prefixes: Sequence[str],
    continuations: Sequence[str],
    scorer=None,
    scorer_tokenizer=None,
    **coherence_kwargs,
) -> dict[str, float]:
    """rep-2/3/4, diversity, mean length (words) of ``continuations``, plus coherence when a judge is given."""
    metrics = {f"rep-{n}": ngram_repetition(continuations, n) for n in (2, 3, 4)}
    metrics["diversity"] = diversity(continuations)
    metrics["length"] = sum(len(text.split()) for text in continuations) / max(len(continuations), 1)
    if scorer is not None:
        if scorer_tokenizer is None:
            raise ValueError("scorer_tokenizer is required with scorer (the judge's own tokenizer).")
        metrics["coherence"] = coherence(scorer, scorer_tokenizer, prefixes, continuations, **coherence_kwargs)
    return metrics
