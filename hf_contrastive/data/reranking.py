"""Reranker data: prompt rendering, row checks, the group-to-pair converter and the collator.

Row layouts (``instruction`` is optional in both; the prompt's default instruction fills it in):

=============  ======================================================  =========================================
layout         columns                                                  used by
=============  ======================================================  =========================================
group rows     ``query: str, positive: str, negatives: list[str]``      every loss (contrastive / URL need >= 1
                                                                        negative per query)
pair rows      ``query: str, document: str, label: 0 | 1``              SFT losses
=============  ======================================================  =========================================

:func:`groups_to_pairs` turns group rows into pair rows (the positive with label 1, each negative with label 0), so
SFT and CL can be compared on identical data (spec pitfall). :func:`to_trl_sft_dataset` writes the same pairs for
``trl``'s ``SFTTrainer``.

Prompts: ``prompt_template.format(instruction=..., query=..., document=...) + prompt_suffix`` (a masked LM's suffix is
its mask token). When a prompt is longer than ``max_length`` tokens, tokens are dropped from the end of the *document*
only: cutting the end of the prompt, as plain truncation does, would remove the position the answer is read at.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import datasets

GROUP_COLUMNS = ("query", "positive", "negatives")
PAIR_COLUMNS = ("query", "document", "label")
PROMPT_FIELDS = ("instruction", "query", "document")
DEFAULT_INSTRUCTION = "Given a search query, judge whether the document is relevant to it."
DEFAULT_PROMPT_TEMPLATE = (
    "Judge whether the document meets the requirements of the query and the instruction. "
    'The answer can only be "yes" or "no".\n'
    "Instruction: {instruction}\nQuery: {query}\nDocument: {document}\nAnswer:\n"
)
_DOCUMENT_MARK = "\x00hf_contrastive_document\x00"  # stands for the document while the template is split


def check_prompt_template(template: str) -> None:
    """Raise a ValueError unless ``template`` uses only {instruction} {query} {document}, with one {document}."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as error:
        raise ValueError(f"prompt_template is not a valid format string ({error}): {template!r}.") from error
    names = [name for name, _, _ in fields if name is not None]
    unknown = sorted({name for name in names if name not in PROMPT_FIELDS})
    if unknown:
        raise ValueError(
            f"prompt_template has unknown field(s) {unknown}; it may use {{instruction}}, {{query}} and {{document}} "
            "(write a literal brace as {{ or }})."
        )
    if names.count("document") != 1 or "query" not in names:
        raise ValueError(
            f"prompt_template must contain {{document}} exactly once and {{query}} at least once: {template!r}."
        )
    if any((spec or conversion) for name, spec, conversion in fields if name is not None):
        raise ValueError(f"prompt_template fields take no format spec or conversion: {template!r}.")


def render_prompt_parts(template: str, instruction: str, query: str) -> tuple[str, str]:
    """The rendered prompt before and after its document: ``prompt = head + document + tail``."""
    rendered = template.format(instruction=instruction, query=query, document=_DOCUMENT_MARK)
    head, tail = rendered.split(_DOCUMENT_MARK)
    return head, tail


def render_prompt(template: str, query: str, document: str, instruction: str, suffix: str = "") -> str:
    """The prompt text of one (query, document) pair: the template filled in, then ``suffix``."""
    head, tail = render_prompt_parts(template, instruction, query)
    return head + document + tail + suffix


def answer_token_id(tokenizer, token: str) -> int:
    """The id of answer string ``token``; a ValueError says what it tokenised to unless it is one known token.

    The string is tokenised as it would follow the prompt (no special tokens); "yes", " yes" and "Yes" are different
    tokens in most vocabularies, so pick the exact string the model should emit.
    """
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"The answer token {token!r} must be a single token of the tokenizer's vocabulary, but it tokenises to "
            f"{pieces} (ids {ids}). Pick a string that is one token (e.g. with or without a leading space, as the "
            "vocabulary has it) or use a tokenizer that has it."
        )
    return ids[0]


def _check_text(row: Mapping[str, Any], column: str, index: int) -> None:
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Column {column!r}, row {index}: expected non-blank text, got {value!r}.")


def row_layout(column_names: Sequence[str]) -> str:
    """``"groups"`` or ``"pairs"`` from the column names; a ValueError names the missing columns otherwise."""
    names = set(column_names)
    if set(GROUP_COLUMNS) <= names:
        return "groups"
    if set(PAIR_COLUMNS) <= names:
        return "pairs"
    closest = GROUP_COLUMNS if "positive" in names or "negatives" in names else PAIR_COLUMNS
    missing = [c for c in closest if c not in names]
    raise ValueError(
        f"Reranker rows need the group columns {list(GROUP_COLUMNS)} or the pair columns {list(PAIR_COLUMNS)}; "
        f"the rows have {sorted(names)}: missing {missing}."
    )


def check_row(row: Mapping[str, Any], layout: str, index: int, require_negatives: bool = False) -> None:
    """Raise a ValueError naming the column and row when a group or pair row is malformed."""
    _check_text(row, "query", index)
    if row.get("instruction") is not None and not isinstance(row["instruction"], str):
        raise ValueError(f"Column 'instruction', row {index}: expected text or None, got {row['instruction']!r}.")
    if layout == "pairs":
        _check_text(row, "document", index)
        label = row["label"]
        if isinstance(label, bool) or label not in (0, 1):
            raise ValueError(f"Column 'label', row {index}: expected 0 or 1, got {label!r}.")
        return
    _check_text(row, "positive", index)
    negatives = row["negatives"]
    if not isinstance(negatives, list | tuple):
        raise ValueError(f"Column 'negatives', row {index}: expected a list of texts, got {type(negatives).__name__}.")
    if require_negatives and not negatives:
        raise ValueError(
            f"Column 'negatives', row {index}: the list is empty, but a contrastive loss needs at least one "
            "negative per query. Drop such rows or train with loss='sft'."
        )
    for position, negative in enumerate(negatives):
        if not isinstance(negative, str) or not negative.strip():
            raise ValueError(
                f"Column 'negatives', row {index}, item {position}: expected non-blank text, got {negative!r}."
            )


def validate_reranker_dataset(dataset, require_negatives: bool = False, sample_size: int = 1000) -> str:
    """Check the columns and the first ``sample_size`` rows of a reranker dataset; return its layout.

    The collator still checks every batch it builds; checking a prefix keeps start-up fast on large datasets.
    """
    columns = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    if len(dataset) == 0:
        raise ValueError("The reranker dataset is empty.")
    layout = row_layout(columns)
    if require_negatives and layout == "pairs":
        raise ValueError(
            "A contrastive loss needs group rows (query, positive, negatives), but the dataset has pair rows "
            "(query, document, label); train pair rows with loss='sft' or 'sft_full_vocab'."
        )
    for index in range(min(sample_size, len(dataset))):
        check_row(dataset[index], layout, index, require_negatives)
    return layout


def _groups_to_pairs_columns(batch: Mapping[str, list]) -> dict[str, list]:
    pairs: dict[str, list] = {"query": [], "document": [], "label": []}
    has_instruction = "instruction" in batch
    if has_instruction:
        pairs["instruction"] = []
    for index, (query, positive, negatives) in enumerate(zip(batch["query"], batch["positive"], batch["negatives"])):
        documents = [positive, *negatives]
        pairs["query"] += [query] * len(documents)
        pairs["document"] += documents
        pairs["label"] += [1] + [0] * len(negatives)
        if has_instruction:
            pairs["instruction"] += [batch["instruction"][index]] * len(documents)
    return pairs


def groups_to_pairs(groups):
    """Pair rows from group rows: for each query its positive (label 1), then each negative (label 0), in order.

    Accepts a ``datasets.Dataset`` (returns one) or a list of dicts (returns a list); ``instruction`` is carried over.
    SFT on these pairs and CL on the groups then see exactly the same (query, document) pairs.
    """
    layout = row_layout(getattr(groups, "column_names", None) or list(groups[0]))
    if layout != "groups":
        raise ValueError("groups_to_pairs expects group rows (query, positive, negatives); these are pair rows.")
    if hasattr(groups, "map"):
        return groups.map(_groups_to_pairs_columns, batched=True, remove_columns=groups.column_names)
    names = dict.fromkeys(name for row in groups for name in row)  # every row's columns, in order of appearance
    columns = {name: [row.get(name) for row in groups] for name in names}
    pairs = _groups_to_pairs_columns(columns)
    return [dict(zip(pairs, values)) for values in zip(*pairs.values())]


def groups_from_ranking_rows(rows, num_negatives: int) -> list[dict[str, Any]]:
    """Group rows from ranking rows (``query, documents, labels``, e.g. mined by ``build_candidate_sets``).

    One group per relevant (label > 0) candidate: ``{query, positive, negatives}`` with the first ``num_negatives``
    non-relevant (label 0) candidates of the list as negatives -- the hardest, in a list ranked by a first-stage
    retriever. Queries without a relevant or a non-relevant candidate give no group. Accepts a ``datasets.Dataset``
    or a list of dicts.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}.")
    groups = []
    for row in rows:
        negatives = [doc for doc, label in zip(row["documents"], row["labels"]) if label <= 0][:num_negatives]
        if not negatives:
            continue
        groups += [
            {"query": row["query"], "positive": doc, "negatives": negatives}
            for doc, label in zip(row["documents"], row["labels"])
            if label > 0
        ]
    return groups


def encode_prompts(
    tokenizer, heads: Sequence[str], documents: Sequence[str], tails: Sequence[str], max_length: int
) -> list[list[int]]:
    """Token ids of ``head + document + tail`` for each pair, at most ``max_length`` tokens each.

    The full prompt is tokenised as one text (as ``trl`` and inference would). A prompt over ``max_length`` loses
    tokens from the end of its document (found through the fast tokenizer's character offsets); the template's end,
    where the answer is read, is kept. A ValueError names the row when even an empty document would not fit.
    """
    prompts = [head + document + tail for head, document, tail in zip(heads, documents, tails)]
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for index, ids in enumerate(encoded):
        overflow = len(ids) - max_length
        if overflow > 0:
            encoded[index] = _drop_document_tokens(
                tokenizer, prompts[index], len(heads[index]), documents[index], overflow, index, max_length
            )
    return encoded


def _drop_document_tokens(
    tokenizer, prompt: str, start: int, document: str, overflow: int, index: int, max_length: int
) -> list[int]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Row {index}: the prompt is {overflow} tokens over max_length={max_length}, and shortening its document "
            "needs a fast tokenizer (character offsets). Raise max_length or load a fast tokenizer."
        )
    encoding = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    end = start + len(document)
    document_tokens = [i for i, (s, e) in enumerate(encoding["offset_mapping"]) if start <= s and e <= end and e > s]
    if len(document_tokens) <= overflow:
        raise ValueError(
            f"Row {index}: the prompt without its document takes about {len(encoding['input_ids']) - len(document_tokens)} "
            f"tokens, more than max_length={max_length} allows. Raise max_length or shorten the instruction, query "
            "or prompt_template."
        )
    dropped = set(document_tokens[-overflow:])
    return [token for i, token in enumerate(encoding["input_ids"]) if i not in dropped]


class RerankerCollator:
    """Render, tokenise and pad reranker rows (group or pair rows) into one batch of answer-position inputs.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast, to shorten over-long documents); its ``padding_side`` is used
            (the model finds the answer position through the attention mask, so either side works).
        prompt_template: see :func:`check_prompt_template`.
        instruction: used when a row has no ``instruction``.
        max_length: tokens per prompt (documents are shortened, see :func:`encode_prompts`).
        prompt_suffix: text after the template (a masked LM's mask token).
        max_negatives: keep at most the first k negatives of each group (None: all).

    ``__call__(rows)`` returns, for N (query, document) sequences:

    - ``input_ids``, ``attention_mask``: LongTensor [N, L]. Group rows are flattened row-major: group b holds
      sequences ``offset_b .. offset_b + G_b - 1``, its positive first.
    - ``labels``: FloatTensor [N], 1 for relevant pairs (a group's positive), 0 otherwise.
    - ``group_mask``: BoolTensor [B, G] (group rows only), G = 1 + the most negatives in the batch; False marks the
      padding of groups with fewer negatives (they are not forwarded).
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        instruction: str = DEFAULT_INSTRUCTION,
        max_length: int = 512,
        prompt_suffix: str = "",
        max_negatives: int | None = None,
    ) -> None:
        check_prompt_template(prompt_template)
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if max_negatives is not None and max_negatives < 0:
            raise ValueError(f"max_negatives must be >= 0 or None, got {max_negatives}.")
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos_token).")
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.instruction = instruction
        self.max_length = max_length
        self.prompt_suffix = prompt_suffix
        self.max_negatives = max_negatives

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("RerankerCollator got an empty batch.")
        layout = row_layout(list(rows[0]))
        for index, row in enumerate(rows):
            check_row(row, layout, index)
        if layout == "pairs":
            queries = [row["query"] for row in rows]
            documents = [row["document"] for row in rows]
            instructions = [row.get("instruction") for row in rows]
            labels = [float(row["label"]) for row in rows]
            return {**self.encode(queries, documents, instructions), "labels": torch.tensor(labels)}
        return self._collate_groups(rows)

    def _collate_groups(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        groups = [[row["positive"], *list(row["negatives"])[: self.max_negatives]] for row in rows]
        sizes = [len(group) for group in groups]
        queries = [row["query"] for row, size in zip(rows, sizes) for _ in range(size)]
        instructions = [row.get("instruction") for row, size in zip(rows, sizes) for _ in range(size)]
        documents = [document for group in groups for document in group]
        labels = [1.0 if position == 0 else 0.0 for size in sizes for position in range(size)]
        group_mask = torch.arange(max(sizes))[None, :] < torch.tensor(sizes)[:, None]
        features = self.encode(queries, documents, instructions)
        return {**features, "labels": torch.tensor(labels), "group_mask": group_mask}

    def prompt_ids(
        self, queries: Sequence[str], documents: Sequence[str], instructions: Sequence[str | None] | None = None
    ) -> list[list[int]]:
        """Token ids of the prompts of (query, document) pairs, unpadded (see :func:`encode_prompts`)."""
        instructions = instructions or [None] * len(queries)
        parts = [
            render_prompt_parts(self.prompt_template, instruction or self.instruction, query)
            for instruction, query in zip(instructions, queries)
        ]
        heads = [head for head, _ in parts]
        tails = [tail + self.prompt_suffix for _, tail in parts]
        return encode_prompts(self.tokenizer, heads, documents, tails, self.max_length)

    def encode(
        self, queries: Sequence[str], documents: Sequence[str], instructions: Sequence[str | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """Padded ``input_ids`` / ``attention_mask`` [N, L] of the prompts of (query, document) pairs."""
        ids = self.prompt_ids(queries, documents, instructions)
        padded = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}


def to_trl_sft_dataset(
    rows,
    yes_token: str = "yes",
    no_token: str = "no",
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    instruction: str = DEFAULT_INSTRUCTION,
    tokenizer: Any = None,
    max_length: int = 512,
) -> datasets.Dataset:
    """Pair (or group) rows as a ``trl`` ``SFTTrainer`` dataset, for users who train with ``trl`` directly.

    - Without ``tokenizer``: prompt-completion rows ``{"prompt": rendered prompt, "completion": yes_token |
      no_token}``. ``trl`` appends the EOS token to a non-conversational completion, so its loss then averages the
      answer token *and* EOS, and its ``max_length`` truncation keeps the start of the prompt (the answer position
      can be cut off).
    - With ``tokenizer``: pre-tokenised rows ``{"input_ids", "completion_mask"}`` built exactly as
      :class:`RerankerCollator` builds them (documents shortened to fit ``max_length``) plus the one answer token.
      With ``completion_only_loss=True`` ``trl`` then trains the one-token completion: its loss equals
      ``RerankerTrainer``'s ``loss="sft_full_vocab"`` (tested).

    Causal LMs only (``trl`` trains next-token prediction).
    """
    import datasets

    column_names = getattr(rows, "column_names", None) or list(rows[0])
    pairs = groups_to_pairs(rows) if row_layout(column_names) == "groups" else rows
    pairs = [pairs[i] for i in range(len(pairs))]
    for index, row in enumerate(pairs):
        check_row(row, "pairs", index)
    answers = [yes_token if row["label"] == 1 else no_token for row in pairs]
    if tokenizer is None:
        prompts = [
            render_prompt(prompt_template, row["query"], row["document"], row.get("instruction") or instruction)
            for row in pairs
        ]
        return datasets.Dataset.from_dict({"prompt": prompts, "completion": answers})
    collator = RerankerCollator(tokenizer, prompt_template, instruction, max_length)
    prompt_ids = collator.prompt_ids(
        [row["query"] for row in pairs], [row["document"] for row in pairs], [row.get("instruction") for row in pairs]
    )
    answer_ids = {answer: answer_token_id(tokenizer, answer) for answer in (yes_token, no_token)}
    input_ids = [prompt + [answer_ids[answer]] for prompt, answer in zip(prompt_ids, answers)]
    completion_mask = [[0] * len(prompt) + [1] for prompt in prompt_ids]
    return datasets.Dataset.from_dict({"input_ids": input_ids, "completion_mask": completion_mask})
