"""Turn rows of text columns into one padded, column-major batch for a single merged forward pass.

Column layouts (the same contracts as sentence-transformers):

======================================  =============================================================
dataset columns                         columns the objective sees (``batch["column_names"]``)
======================================  =============================================================
``text``                                ``anchor``, ``positive`` (the same text twice: dropout views)
``anchor, positive``                    ``anchor, positive``
``anchor, positive, negative``          ``anchor, positive, negative``
``anchor, positive, negative_1..k``     ``anchor, positive, negative_1, ..., negative_k``
======================================  =============================================================
"""

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

LABEL_COLUMNS = ("score", "label")
_NEGATIVE_PATTERN = re.compile(r"negative_(\d+)")


def text_hash(text: str) -> int:
    """Hash a text to a signed 64-bit integer that is identical in every process (unlike ``hash()``).

    Used to find duplicated texts in a batch (false negatives): equal texts have equal hashes; two different texts
    collide with probability ~2^-64 per pair.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def infer_text_columns(column_names: Sequence[str]) -> list[str]:
    """Pick the ordered text columns of a dataset: ``["text"]`` or ``["anchor", "positive", negatives...]``.

    Negatives come after ``positive``: a single ``negative`` column first, then ``negative_1..k`` in numeric order.
    The pair layout wins when a dataset has both ``anchor``/``positive`` and ``text``.
    """
    names = set(column_names)
    if {"anchor", "positive"} <= names:
        numbered = sorted((n for n in names if _NEGATIVE_PATTERN.fullmatch(n)), key=lambda n: int(n.split("_")[1]))
        single = ["negative"] if "negative" in names else []
        return ["anchor", "positive", *single, *numbered]
    if "text" in names:
        return ["text"]
    raise ValueError(
        f"Cannot infer the text columns from the dataset columns {sorted(names)}. Expected either a single 'text' "
        "column (unsupervised views) or 'anchor' and 'positive' (optionally 'negative' or 'negative_1'..'negative_k'). "
        "Rename your columns, e.g. dataset.rename_columns({'sentence1': 'anchor', 'sentence2': 'positive'})."
    )


def _view_names(views: int) -> tuple[str, ...]:
    """Name the views of a single-column dataset: ``anchor, positive, positive_2, ...``."""
    return ("anchor", "positive", *(f"positive_{i}" for i in range(2, views)))


def _checked_text(row: Mapping[str, Any], column: str, index: int) -> str:
    """Return ``row[column]``, or raise a ValueError naming the column and row if it is not a non-blank string."""
    if column not in row:
        raise ValueError(f"Row {index} has no column {column!r}; it has {sorted(row)}.")
    text = row[column]
    if not isinstance(text, str):
        raise ValueError(f"Column {column!r}, row {index}: expected a string, got {type(text).__name__} ({text!r}).")
    if not text.strip():
        raise ValueError(f"Column {column!r}, row {index}: the text is empty or whitespace-only ({text!r}).")
    return text


def _label_tensor(rows: Sequence[Mapping[str, Any]], column: str) -> torch.Tensor:
    """Stack a numeric ``score``/``label`` column as a float tensor [B], naming the row of a bad value."""
    values = []
    for index, row in enumerate(rows):
        value = row.get(column)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"Column {column!r}, row {index}: expected a number, got {value!r}. The collator passes "
                f"{column!r} to the objective as a float tensor; remove or rename the column if it is not a score."
            )
        values.append(float(value))
    return torch.tensor(values, dtype=torch.float32)


class ContrastiveCollator:
    """Tokenize all text columns of a batch in one call, column-major, for one merged forward pass.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast or slow).
        text_columns: the dataset columns to encode, in the order the objective expects (see
            :func:`infer_text_columns`). A single column is repeated as ``single_column_views`` views.
        max_length: texts are truncated to this many tokens (special tokens included).
        single_column_views: number of copies of a single text column (SimCSE uses 2: dropout makes the views).

    ``__call__(rows)`` returns, for B rows and C columns:

    - ``input_ids``, ``attention_mask``: LongTensor [C*B, L], padded to the longest text; rows ``c*B .. c*B+B-1``
      hold column ``c``.
    - ``column_names``: tuple of C role names (``("anchor", "positive", "negative_1")``).
    - ``input_hashes``: LongTensor [C, B], :func:`text_hash` of each cell's raw text (masks false negatives).
    - ``score`` / ``label``: FloatTensor [B], when the rows carry that numeric column.
    """

    def __init__(
        self,
        tokenizer: Any,
        text_columns: Sequence[str],
        max_length: int = 128,
        single_column_views: int = 2,
    ) -> None:
        if not text_columns:
            raise ValueError("text_columns is empty: pass the dataset columns to encode, e.g. ['anchor', 'positive'].")
        if len(set(text_columns)) != len(text_columns):
            raise ValueError(f"text_columns has duplicates: {list(text_columns)}.")
        if single_column_views < 2:
            raise ValueError(
                f"single_column_views must be >= 2 (got {single_column_views}): one view has no positive."
            )
        self.tokenizer = tokenizer
        self.text_columns = tuple(text_columns)
        self.max_length = max_length
        self.single_column_views = single_column_views
        single = len(self.text_columns) == 1
        self.column_names = _view_names(single_column_views) if single else self.text_columns

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        columns = [[_checked_text(row, c, i) for i, row in enumerate(rows)] for c in self.text_columns]
        encoded = self.tokenizer(
            [text for column in columns for text in column],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        hashes = torch.tensor([[text_hash(t) for t in column] for column in columns], dtype=torch.long)
        copies = len(self.column_names) // len(self.text_columns)
        batch = {
            "input_ids": encoded["input_ids"].long().repeat(copies, 1),
            "attention_mask": encoded["attention_mask"].long().repeat(copies, 1),
            "column_names": self.column_names,
            "input_hashes": hashes.repeat(copies, 1),
        }
        for column in LABEL_COLUMNS:
            if rows and column in rows[0] and column not in self.text_columns:
                batch[column] = _label_tensor(rows, column)
        return batch
