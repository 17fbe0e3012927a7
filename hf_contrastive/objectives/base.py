"""The objective contract: a pure-torch loss over named embedding columns.

An objective never imports a Trainer. It receives the embeddings of every text column of the local batch
(``{"anchor": [B, D], "positive": [B, D], "negative_1": [B, D], ...}``) plus the collated batch (for
``input_hashes`` and labels), gathers what it needs across ranks through :mod:`hf_contrastive.distributed`, and
returns the *local* loss with a few scalar logs. Because it only sees an embedding matrix, the same objective runs
uncached or under :class:`hf_contrastive.cache.GradientCache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def split_columns(embeddings: torch.Tensor, column_names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Split merged [C*B, D] embeddings (column-major, as the collator lays them out) into ``{column: [B, D]}``."""
    return dict(zip(column_names, embeddings.chunk(len(column_names), dim=0)))


@dataclass
class ObjectiveOutput:
    """What an objective returns: a scalar loss (local mean) and detached scalar logs."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class ContrastiveObjective(nn.Module):
    """Base class: subclasses set ``name``, ``paper``, ``citation`` and implement ``forward``.

    Class attributes feed the model card: ``name`` (a tag), ``paper`` (arXiv id or URL), ``citation`` (BibTeX).
    ``required_columns`` are the roles the objective reads; ``optional_column_prefix`` names repeated roles
    (``negative_1..k``). ``needs_teacher_embeddings``: the trainer adds a frozen teacher's embeddings of the merged
    batch as ``batch["teacher_embeddings"]`` [C*B, D_teacher] (an instance may set it from its options).
    """

    name: str = "contrastive"
    paper: str | None = None
    citation: str | None = None
    required_columns: tuple[str, ...] = ("anchor", "positive")
    optional_column_prefix: str | None = None
    needs_teacher_embeddings: bool = False

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Candidates an anchor is scored against besides its positive (before false-negative masking).

        Default: every positive and hard negative of the gathered batch but its own positive (in-batch objectives).
        """
        return gathered_rows * (1 + negatives_per_row) - 1

    def get_config_dict(self) -> dict:
        """Hyperparameters that define the objective; shown in the model card."""
        return {}

    def check_columns(self, column_names: tuple[str, ...]) -> None:
        """Raise a ValueError naming the missing role when the batch lacks a required column."""
        missing = [c for c in self.required_columns if c not in column_names]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the columns {list(self.required_columns)} "
                f"but the batch has {list(column_names)}: missing {missing}."
            )
