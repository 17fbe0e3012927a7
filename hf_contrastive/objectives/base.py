"""The objective contract: a pure-torch loss over named embedding columns.

An objective never imports a Trainer. It receives the embeddings of every text column of the local batch
(``{"anchor": [B, D], "positive": [B, D], "negative_1": [B, D], ...}``) plus the collated batch (for
``input_hashes`` and labels), gathers what it needs across ranks through :mod:`hf_contrastive.distributed`, and
returns the *local* loss with a few scalar logs. Because it only sees an embedding matrix, the same objective runs
uncached or under :class:`hf_contrastive.cache.GradientCache`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed


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

    gather_across_devices: bool = True

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rows of every rank, with gradient, when ``gather_across_devices`` (see ``distributed``); else as is."""
        return distributed.gather_with_grad(tensor) if self.gather_across_devices else tensor

    def _gather_no_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rows of every rank for values without gradient (hashes, token ids, teacher embeddings)."""
        return distributed.gather_no_grad(tensor) if self.gather_across_devices else tensor

    def _local_offset(self, local_batch_size: int) -> int:
        """Index of this rank's first row in a gathered column (0 when not gathering)."""
        return distributed.local_offset(local_batch_size) if self.gather_across_devices else 0

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


class ResumableRandomState:
    """Mixin: name an objective's private random state in ``random_state`` and checkpoints carry it (exact resume).

    Objectives that must draw the same numbers on every rank cannot use the global RNG (which the Trainer
    checkpoints itself); they keep a private ``torch.Generator`` or a call counter that seeds one. This mixin puts
    those attributes into ``state_dict()`` as the module's extra state, so the trainers' ``objective.pt`` restores
    them and a run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn. Attributes
    are ints (counters) or ``torch.Generator`` objects. Mix in before ``nn.Module``:
    ``class X(ResumableRandomState, ContrastiveObjective)``.
    """

    random_state: tuple[str, ...] = ()

    def get_extra_state(self) -> dict:
        """``{attribute: int, or the generator's state ByteTensor}`` for every name in ``random_state``."""
        return {name: _random_state_of(getattr(self, name)) for name in self.random_state}

    def set_extra_state(self, state: dict) -> None:
        """Restore what ``get_extra_state`` returned (a generator state may have been loaded onto an accelerator)."""
        for name in self.random_state:
            current = getattr(self, name)
            if isinstance(current, torch.Generator):
                current.set_state(state[name].cpu())
            else:
                setattr(self, name, int(state[name]))


def _random_state_of(value: int | torch.Generator) -> int | torch.Tensor:
    return value.get_state() if isinstance(value, torch.Generator) else int(value)


class ScaledSimilarity:
    """Mixin for objectives that score ``similarity(a, b) / tau`` with a fixed or learned temperature.

    ``init_similarity`` validates and stores ``temperature``, ``learnable_temperature`` (a ``log_scale`` parameter,
    CLIP-style, initialised at ``log(1 / tau)``), ``max_scale`` (clamp on the learned ``1 / tau``) and ``similarity``
    (``"cosine"``: normalise first; ``"dot"``: raw vectors). Call it after ``nn.Module.__init__``.
    """

    def init_similarity(self, temperature: float, learnable_temperature: bool, max_scale: float, similarity: str):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}.")
        self.temperature = temperature
        self.learnable_temperature = learnable_temperature
        self.max_scale = max_scale
        self.similarity = similarity
        if learnable_temperature:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def scale(self) -> torch.Tensor | float:
        """``1 / tau``: a tensor when learned (clamped to ``max_scale``), else a float."""
        if self.learnable_temperature:
            return self.log_scale.exp().clamp(max=self.max_scale)
        return 1.0 / self.temperature

    def _prepare(self, embedding: torch.Tensor) -> torch.Tensor:
        """Normalise for cosine similarity; leave as is for the dot product."""
        return F.normalize(embedding, dim=-1) if self.similarity == "cosine" else embedding
