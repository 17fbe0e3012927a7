"""CLOSE data: frozen-CLIP embeddings cached with ``datasets.map``, and the captioning collator.

CLOSE reads a frozen CLIP's embedding of each caption (training) or image (evaluation). Computing it once per row
with :func:`add_clip_embeddings` is allowed by the paper and much faster than re-encoding every epoch; the noise is
still drawn on the fly, by the model's adapter, at every step.

Column contract (rows):

- classification: ``{"text_embedding": [D] floats, "label": int}`` for training, ``{"image_embedding": ..., "label"}``
  for evaluation; ``transformers.default_data_collator`` batches them (``label`` -> ``labels``).
- captioning: ``{"text_embedding": [D], "caption": str | list[str]}`` (one or several targets; the paper's single-
  caption mode trains on the input caption itself), optionally an extra text input column (a question); batched by
  :class:`CaptionCollator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase


def require_columns(dataset: Dataset, columns: Sequence[str], purpose: str) -> None:
    """Raise a ValueError naming every column of ``columns`` that ``dataset`` lacks (and what it has)."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{purpose} needs the column(s) {missing}; the dataset has {dataset.column_names}.")


def add_clip_embeddings(
    dataset: Dataset,
    embed: Callable[[list], torch.Tensor],
    source_column: str,
    embedding_column: str,
    batch_size: int = 256,
) -> Dataset:
    """Add ``embedding_column``: ``embed(values of source_column)`` [n, D] per batch of rows, via ``datasets.map``.

    ``embed`` is a frozen encoder, e.g. ``FrozenCLIP.embed_texts`` (captions -> "text_embedding") or
    ``FrozenCLIP.embed_images`` (images -> "image_embedding"). Other columns are kept.
    """
    require_columns(dataset, [source_column], f"Embedding {source_column!r} into {embedding_column!r}")

    def embed_rows(rows: dict[str, list]) -> dict[str, list]:
        return {embedding_column: embed(rows[source_column]).tolist()}

    return dataset.map(embed_rows, batched=True, batch_size=batch_size, desc=f"CLIP {source_column}")


def embedding_matrix(dataset: Dataset, column: str) -> torch.Tensor:
    """The cached embeddings of ``column`` as one float tensor [N, D]."""
    require_columns(dataset, [column], "Reading cached embeddings")
    return torch.tensor(dataset[:][column], dtype=torch.float32)


@dataclass
class CaptionCollator:
    """Batch captioning rows for :class:`~hf_contrastive.models.close.CLOSECaptioner`.

    Output: ``{embedding_column: [B, D], "labels": [T, L]}`` (pad -> -100; targets lower-cased when
    ``lowercase_targets``, as the paper does), ``"target_mapping": [T]`` when a row brings a list of targets (T rows,
    each pointing at its example), and ``"input_ids"`` / ``"attention_mask"`` [B, L_in] when ``input_column`` is set.
    ``target_column=None`` batches evaluation rows without targets.

    Targets are tokenized with the tokenizer's own special tokens; the sequence must end with the decoder's EOS (a T5
    tokenizer appends ``</s>``; a BERT-style one ``[SEP]``, which is then the decoder's ``eos_token_id``).
    """

    tokenizer: PreTrainedTokenizerBase
    embedding_column: str = "text_embedding"
    target_column: str | None = "caption"
    input_column: str | None = None
    max_length: int = 32
    lowercase_targets: bool = True

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {self.embedding_column: torch.tensor([self._value(row, self.embedding_column) for row in rows])}
        if self.target_column is not None:
            batch.update(self._targets([self._value(row, self.target_column) for row in rows]))
        if self.input_column is not None:
            texts = [self._value(row, self.input_column) for row in rows]
            tokens = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return batch

    @staticmethod
    def _value(row: dict[str, Any], column: str) -> Any:
        if column not in row:
            raise ValueError(f"CaptionCollator needs the column {column!r} in every row; a row has {sorted(row)}.")
        return row[column]

    def _targets(self, targets: list[str | list[str]]) -> dict[str, torch.Tensor]:
        texts, mapping = [], []
        for index, target in enumerate(targets):
            options = [target] if isinstance(target, str) else list(target)
            texts += [text.lower() if self.lowercase_targets else text for text in options]
            mapping += [index] * len(options)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        labels = tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, -100)
        if all(isinstance(target, str) for target in targets):
            return {"labels": labels}
        return {"labels": labels, "target_mapping": torch.tensor(mapping)}
