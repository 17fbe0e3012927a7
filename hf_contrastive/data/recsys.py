"""Recommendation data: user-item interactions with contiguous ids, the specs' splits, histories and BPR triples.

Two containers, one per task family, sharing :class:`IdMap` (raw id -> contiguous index, saved with a model through
``to_dict`` / ``from_dict``):

- :class:`InteractionData` (graph collaborative filtering: LightGCN, XSimGCL, DCCF): ``train`` / ``valid`` /
  ``test`` as ``[N, 2]`` int64 tensors of (user index, item index), users ``0..U-1`` and items ``0..I-1``.
  Build it from a ``datasets.Dataset`` with columns ``user_id``, ``item_id`` and optional ``timestamp``
  (:meth:`InteractionData.from_dataset`), or from given train/test files (:func:`load_selfrec_interactions`).
- :class:`SequenceData` (sequential recommendation: SASRec, CL4SRec, MCLRec): one chronological item sequence per
  user with item ids ``1..I`` (0 is padding), split leave-one-out (last item test, second-to-last validation).

Documented handling of bad input:

- duplicate (user, item) pairs in graph data are collapsed to the first occurrence (the earliest when a
  ``timestamp`` column exists), because the graph is binary; the count is in ``stats["duplicates_dropped"]``, and
  ``on_duplicate="error"`` refuses them instead. Repeats inside a sequence are real repeat purchases and are kept.
- test/validation pairs whose user or item never occurs in training are dropped (SELFRec does the same), counted in
  ``stats``; so are evaluation pairs already in training (they would be masked and could never be hit).
- unknown raw ids at inference raise ``KeyError`` naming the id (:meth:`IdMap.index`); a user without history or a
  sequence shorter than the split needs raises ``ValueError``.

Loaders for the real data in ``../shared/data``: :func:`load_movielens_100k` (RecBole atomic file),
:func:`load_selfrec_interactions` (``amazon-beauty-selfrec``, ``user:item item ...``) and
:func:`load_seqrec_sequences` (S3-Rec ``seqrec-amazon`` Beauty / Sports, ``user item item ...``).
"""

from __future__ import annotations

import csv
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch

SplitName = Literal["train", "valid", "test"]


class IdMap:
    """Map raw ids (str or int) to contiguous indices ``offset, offset + 1, ...`` and back; save it with a model.

    ``IdMap(["u7", "u2"]).index("u2") == 1``; ``offset=1`` reserves index 0 (padding in sequences).
    """

    def __init__(self, ids: Iterable[Hashable], offset: int = 0, kind: str = "id") -> None:
        self.ids = list(ids)
        self.offset = offset
        self.kind = kind
        self._index = {raw: position + offset for position, raw in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError(f"{kind} ids must be unique; got {len(self.ids) - len(self._index)} repeated ids.")

    @classmethod
    def from_first_appearance(cls, raw_ids: Iterable[Hashable], offset: int = 0, kind: str = "id") -> IdMap:
        """Number ids in order of first appearance (SELFRec's remapping)."""
        return cls(dict.fromkeys(raw_ids), offset=offset, kind=kind)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: Hashable) -> bool:
        return raw in self._index

    def index(self, raw: Hashable) -> int:
        """The contiguous index of one raw id; ``KeyError`` naming the id if it was never seen in training."""
        try:
            return self._index[raw]
        except KeyError:
            raise KeyError(f"Unknown {self.kind} id {raw!r}: it is not in the training data of this model.") from None

    def encode(self, raw_ids: Iterable[Hashable]) -> torch.Tensor:
        """Raw ids -> int64 tensor of indices (``KeyError`` on the first unknown id)."""
        return torch.tensor([self.index(raw) for raw in raw_ids], dtype=torch.long)

    def decode(self, indices: Iterable[int] | torch.Tensor) -> list[Hashable]:
        """Indices -> raw ids."""
        values = indices.tolist() if isinstance(indices, torch.Tensor) else indices
        return [self.ids[int(index) - self.offset] for index in values]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for a model config): ``{"ids": [...], "offset": int, "kind": str}``."""
        return {"ids": list(self.ids), "offset": self.offset, "kind": self.kind}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> IdMap:
        """Inverse of :meth:`to_dict`."""
        return cls(state["ids"], offset=state.get("offset", 0), kind=state.get("kind", "id"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, size={len(self)}, offset={self.offset})"


# --------------------------------------------------------------------------------------------- graph CF interactions
@dataclass
class InteractionData:
    """User-item interactions for graph CF: contiguous id maps and (user, item) index pairs per split.

    ``train``, ``valid`` and ``test`` are int64 tensors ``[N, 2]`` of (user index, item index); ``valid`` may be
    ``None`` (SELFRec and DCCF select on / report the test set). Training pairs are unique; every evaluation pair has
    a user and an item seen in training and is not itself a training pair.
    """

    user_map: IdMap
    item_map: IdMap
    train: torch.Tensor
    test: torch.Tensor
    valid: torch.Tensor | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_map)

    @property
    def num_items(self) -> int:
        return len(self.item_map)

    def split(self, name: SplitName) -> torch.Tensor:
        """The ``[N, 2]`` pairs of one split; ``ValueError`` if the split is absent."""
        pairs = {"train": self.train, "valid": self.valid, "test": self.test}[name]
        if pairs is None:
            raise ValueError(f"This InteractionData has no {name!r} split.")
        return pairs

    def histories(self, name: SplitName = "train") -> list[torch.Tensor]:
        """Per user (index order), the sorted item indices it has in split ``name`` (empty tensors allowed)."""
        indptr, items = pairs_to_csr(self.split(name), self.num_users)
        return [items[indptr[u] : indptr[u + 1]] for u in range(self.num_users)]

    def to_dataset(self, name: SplitName = "train") -> datasets.Dataset:
        """One split as a ``datasets.Dataset`` with int columns ``user_id`` and ``item_id`` (contiguous indices)."""
        pairs = self.split(name)
        return datasets.Dataset.from_dict({"user_id": pairs[:, 0].tolist(), "item_id": pairs[:, 1].tolist()})

    def id_maps(self) -> dict[str, dict[str, Any]]:
        """``{"user": ..., "item": ...}`` for a model config; rebuild with :meth:`IdMap.from_dict`."""
        return {"user": self.user_map.to_dict(), "item": self.item_map.to_dict()}

    @classmethod
    def from_dataset(
        cls,
        dataset: datasets.Dataset,
        split: Literal["random", "temporal"] = "random",
        ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        on_duplicate: Literal["drop", "error"] = "drop",
    ) -> InteractionData:
        """Split one table of interactions per user into train / valid / test and remap ids.

        ``split="random"`` shuffles each user's items with ``seed`` (the XSimGCL spec's random 7:1:2 split, made
        per user so that every user keeps training items); ``"temporal"`` orders each user's items by
        ``timestamp`` (oldest for training). A user with ``n`` interactions gets ``round(n * valid)`` validation
        and ``round(n * test)`` test items, but always at least one training item. ``ratios[1] == 0`` gives no
        validation split. Ids are numbered by first appearance in the (deduplicated) training pairs.
        """
        _check_ratios(ratios)
        users, items, timestamps = _interaction_columns(dataset, need_timestamp=split == "temporal")
        users, items, timestamps, dropped = _deduplicate(users, items, timestamps, on_duplicate)
        order_key = timestamps if split == "temporal" else np.random.default_rng(seed).random(len(users))
        part = _per_user_parts(users, order_key, ratios)
        train = [(users[i], items[i]) for i in np.flatnonzero(part == 0)]
        valid = [(users[i], items[i]) for i in np.flatnonzero(part == 1)] if ratios[1] > 0 else None
        test = [(users[i], items[i]) for i in np.flatnonzero(part == 2)]
        data = cls.from_pairs(train, test, valid)
        data.stats["duplicates_dropped"] = dropped
        return data

    @classmethod
    def from_pairs(
        cls,
        train: Sequence[tuple[Hashable, Hashable]],
        test: Sequence[tuple[Hashable, Hashable]],
        valid: Sequence[tuple[Hashable, Hashable]] | None = None,
    ) -> InteractionData:
        """Remap given raw-id splits (ids numbered by first appearance in ``train``), dropping unusable pairs.

        Duplicate training pairs are collapsed; evaluation pairs with a user or item unseen in training, or that
        repeat a training pair, are dropped and counted in ``stats``.
        """
        if len(train) == 0:
            raise ValueError("The training split is empty: graph CF needs at least one (user_id, item_id) pair.")
        user_map = IdMap.from_first_appearance((u for u, _ in train), kind="user")
        item_map = IdMap.from_first_appearance((i for _, i in train), kind="item")
        train_pairs = _unique_pairs_in_order(_encode_pairs(train, user_map, item_map))
        stats = {"train_duplicates_dropped": len(train) - len(train_pairs)}
        splits = {}
        for name, pairs in (("test", test), ("valid", valid)):
            if pairs is not None:
                splits[name], stats[f"{name}_unseen_dropped"], stats[f"{name}_in_train_dropped"] = _evaluation_pairs(
                    pairs, user_map, item_map, train_pairs
                )
        return cls(user_map, item_map, train_pairs, splits["test"], splits.get("valid"), stats)


def pairs_to_csr(pairs: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, 2]`` (row, column) pairs -> CSR ``(indptr [num_rows + 1], columns [N])``, columns sorted per row."""
    order = torch.argsort(pairs[:, 0] * (int(pairs[:, 1].max()) + 1 if len(pairs) else 1) + pairs[:, 1])
    sorted_pairs = pairs[order]
    counts = torch.bincount(sorted_pairs[:, 0], minlength=num_rows)
    indptr = torch.zeros(num_rows + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, dim=0)
    return indptr, sorted_pairs[:, 1].contiguous()


def _check_ratios(ratios: Sequence[float]) -> None:
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ValueError(f"ratios must be (train, valid, test) >= 0 summing to 1 with train > 0, got {ratios}.")


def _interaction_columns(
    dataset: datasets.Dataset, need_timestamp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    missing = [name for name in ("user_id", "item_id") if name not in dataset.column_names]
    if need_timestamp and "timestamp" not in dataset.column_names:
        missing.append("timestamp")
    if missing:
        raise ValueError(
            f"Interactions need columns {missing} (expected user_id, item_id and, for temporal splits or "
            f"ordering, timestamp); got {dataset.column_names}."
        )
    if len(dataset) == 0:
        raise ValueError("The interaction dataset is empty.")
    timestamps = np.asarray(dataset["timestamp"], dtype=np.float64) if "timestamp" in dataset.column_names else None
    return np.asarray(dataset["user_id"], dtype=object), np.asarray(dataset["item_id"], dtype=object), timestamps


def _deduplicate(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None, on_duplicate: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Keep the first (or, with timestamps, the earliest) occurrence of each (user, item) pair."""
    if on_duplicate not in ("drop", "error"):
        raise ValueError(f"on_duplicate must be 'drop' or 'error', got {on_duplicate!r}.")
    order = np.argsort(timestamps, kind="stable") if timestamps is not None else np.arange(len(users))
    seen: dict[tuple[Hashable, Hashable], int] = {}
    for row in order:
        seen.setdefault((users[row], items[row]), row)
    kept = np.sort(np.fromiter(seen.values(), dtype=np.int64, count=len(seen)))
    dropped = len(users) - len(kept)
    if dropped and on_duplicate == "error":
        raise ValueError(f"{dropped} duplicate (user_id, item_id) interactions; use on_duplicate='drop' to keep one.")
    return users[kept], items[kept], None if timestamps is None else timestamps[kept], dropped


def _per_user_parts(users: np.ndarray, order_key: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """0 / 1 / 2 (train / valid / test) per interaction; the last ``test`` share of each user's order is test."""
    _, user_codes = np.unique(users.astype(str), return_inverse=True)
    order = np.lexsort((order_key, user_codes))
    counts = np.bincount(user_codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[user_codes[order]]
    count = counts[user_codes]
    num_test = np.minimum(np.rint(count * ratios[2]), count - 1)
    num_valid = np.minimum(np.rint(count * ratios[1]), count - 1 - num_test)
    part = np.zeros(len(users), dtype=np.int64)
    part[rank >= count - num_test - num_valid] = 1
    part[rank >= count - num_test] = 2
    return part


def _encode_pairs(pairs: Sequence[tuple[Hashable, Hashable]], user_map: IdMap, item_map: IdMap) -> torch.Tensor:
    return torch.tensor([(user_map.index(u), item_map.index(i)) for u, i in pairs], dtype=torch.long).view(-1, 2)


def _unique_pairs_in_order(pairs: torch.Tensor) -> torch.Tensor:
    keys = pairs[:, 0] * (int(pairs[:, 1].max()) + 1) + pairs[:, 1]
    _, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(keys), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(keys)), reduce="amin"
    )
    return pairs[torch.sort(first).values]


def _evaluation_pairs(
    pairs: Sequence[tuple[Hashable, Hashable]], user_map: IdMap, item_map: IdMap, train: torch.Tensor
) -> tuple[torch.Tensor, int, int]:
    known = [(u, i) for u, i in pairs if u in user_map and i in item_map]
    encoded = _unique_pairs_in_order(_encode_pairs(known, user_map, item_map)) if known else torch.empty(0, 2).long()
    width = max(len(item_map), 1)
    in_train = torch.isin(encoded[:, 0] * width + encoded[:, 1], train[:, 0] * width + train[:, 1])
    return encoded[~in_train], len(pairs) - len(known), int(in_train.sum())


# ------------------------------------------------------------------------------------------------------ BPR triples
class TripleSampler:
    """Draw (user, positive, negative) triples for BPR, negatives uniform over items not in the user's training set.

    ``mode="interaction"`` (XSimGCL / LightGCN in SELFRec): every training pair once per epoch in a random order.
    ``mode="user"`` (DCCF): ``num_triples`` users uniform with replacement, a positive uniform from the user's
    items. Negatives are redrawn until none is a training item of its user (rejection sampling, vectorised).
    ``sample(generator)`` returns ``{"user_id", "item_id", "neg_item_id"}`` int64 tensors of one epoch.
    """

    def __init__(
        self,
        train: torch.Tensor,
        num_users: int,
        num_items: int,
        mode: Literal["interaction", "user"] = "interaction",
        num_triples: int | None = None,
    ) -> None:
        if mode not in ("interaction", "user"):
            raise ValueError(f"mode must be 'interaction' or 'user', got {mode!r}.")
        if len(train) == 0:
            raise ValueError("No training interactions to sample triples from.")
        self.train, self.num_users, self.num_items, self.mode = train, num_users, num_items, mode
        self.num_triples = num_triples if num_triples is not None else len(train)
        self.indptr, self.columns = pairs_to_csr(train, num_users)
        degrees = self.indptr[1:] - self.indptr[:-1]
        if bool((degrees >= num_items).any()):
            user = int(torch.nonzero(degrees >= num_items)[0])
            raise ValueError(f"User index {user} has interacted with every item: no negative item exists.")
        self.active_users = torch.nonzero(degrees > 0).flatten()
        self._keys = train[:, 0] * num_items + train[:, 1]
        self._keys = torch.unique(self._keys)  # sorted, for searchsorted membership

    @classmethod
    def from_data(cls, data: InteractionData, **kwargs: Any) -> TripleSampler:
        return cls(data.train, data.num_users, data.num_items, **kwargs)

    def __len__(self) -> int:
        return self.num_triples

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One epoch of triples (shapes ``[num_triples]``)."""
        users, positives = self._positives(generator)
        negatives = torch.randint(self.num_items, users.shape, generator=generator)
        rejected = self.is_training_pair(users, negatives)
        while bool(rejected.any()):
            negatives[rejected] = torch.randint(self.num_items, (int(rejected.sum()),), generator=generator)
            rejected = self.is_training_pair(users, negatives)
        return {"user_id": users, "item_id": positives, "neg_item_id": negatives}

    def is_training_pair(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor: is each (user, item) a training interaction."""
        keys = users * self.num_items + items
        position = torch.searchsorted(self._keys, keys).clamp(max=len(self._keys) - 1)
        return self._keys[position] == keys

    def _positives(self, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "interaction":
            pairs = self.train[torch.randperm(len(self.train), generator=generator)[: self.num_triples]]
            return pairs[:, 0].clone(), pairs[:, 1].clone()
        pick = torch.randint(len(self.active_users), (self.num_triples,), generator=generator)
        users = self.active_users[pick]
        start, degree = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        offsets = (torch.rand(self.num_triples, generator=generator) * degree).long().clamp(max=degree - 1)
        return users, self.columns[start + offsets]


# -------------------------------------------------------------------------------------------- sequential (SASRec)
@dataclass
class SequenceData:
    """Chronological item sequences per user with item ids ``1..I`` (0 = padding), split leave-one-out.

    ``sequences[u]`` is user ``u``'s full history (int list). Leave-one-out (S3-Rec / RecBole): the last item is
    the test target, the second-to-last the validation target, the rest is training (every user needs >= 3 items).
    """

    user_map: IdMap
    item_map: IdMap
    sequences: list[list[int]]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_map)

    @property
    def num_items(self) -> int:
        """Number of real items; the score vocabulary has ``num_items + 1`` entries (index 0 is padding)."""
        return len(self.item_map)

    def __post_init__(self) -> None:
        short = [self.user_map.ids[u] for u, sequence in enumerate(self.sequences) if len(sequence) < 3]
        if short:
            raise ValueError(
                f"{len(short)} users have fewer than 3 items (e.g. user_id {short[0]!r}); leave-one-out needs a "
                "training item, a validation target and a test target per user. Filter them first."
            )

    def id_maps(self) -> dict[str, dict[str, Any]]:
        """``{"user": ..., "item": ...}`` for a model config (the item map has ``offset == 1``)."""
        return {"user": self.user_map.to_dict(), "item": self.item_map.to_dict()}

    def head(self, num_users: int) -> SequenceData:
        """The first ``num_users`` users with the same item vocabulary (a smaller run of the same ranking task)."""
        user_map = IdMap(self.user_map.ids[:num_users], kind="user")
        return SequenceData(user_map, self.item_map, self.sequences[:num_users], dict(self.stats))

    def evaluation_split(self, name: Literal["valid", "test"]) -> tuple[list[list[int]], list[int]]:
        """``(histories, targets)``: for ``"test"`` all but the last item -> last; ``"valid"`` one step earlier."""
        cut = {"valid": 2, "test": 1}[name]
        return [sequence[:-cut] for sequence in self.sequences], [sequence[-cut] for sequence in self.sequences]

    def training_instances(self, max_len: int = 50) -> datasets.Dataset:
        """Every prefix of every training part (RecBole's augmentation): rows ``user_id``, ``item_seq``, ``target``.

        For a training part ``[i1, ..., im]`` the rows are ``[i1] -> i2``, ..., ``[i1..i(m-1)] -> im``, each
        ``item_seq`` cut to its last ``max_len`` items (no padding here; the collator pads).
        """
        user_ids, item_seqs, targets = [], [], []
        for user, sequence in enumerate(self.sequences):
            training_part = sequence[:-2]
            for end in range(1, len(training_part)):
                user_ids.append(user)
                item_seqs.append(training_part[max(0, end - max_len) : end])
                targets.append(training_part[end])
        return datasets.Dataset.from_dict({"user_id": user_ids, "item_seq": item_seqs, "target": targets})

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset, min_length: int = 3) -> SequenceData:
        """Group interactions (``user_id``, ``item_id``, ``timestamp``) into per-user sequences ordered by time.

        Ties in ``timestamp`` keep the table order. Users with fewer than ``min_length`` (>= 3) items are dropped
        and counted in ``stats["short_users_dropped"]``; items are numbered ``1..I`` by first appearance.
        """
        users, items, timestamps = _interaction_columns(dataset, need_timestamp=True)
        histories: dict[Hashable, list[Hashable]] = {}
        for row in np.argsort(timestamps, kind="stable"):
            histories.setdefault(users[row], []).append(items[row])
        return cls.from_raw_sequences(histories, min_length)

    @classmethod
    def from_raw_sequences(
        cls, histories: dict[Hashable, list[Hashable]], min_length: int = 3, sort_items: bool = False
    ) -> SequenceData:
        """Build from ``{raw user id: chronological raw item ids}``; short users dropped as in :meth:`from_dataset`.

        Items are numbered ``1..I`` by first appearance, or in sorted raw-id order with ``sort_items=True``.
        """
        if min_length < 3:
            raise ValueError(f"min_length must be >= 3 for leave-one-out, got {min_length}.")
        kept = {user: items for user, items in histories.items() if len(items) >= min_length}
        if not kept:
            raise ValueError(f"No user has at least {min_length} interactions.")
        user_map = IdMap(kept, kind="user")
        raw_items = dict.fromkeys(item for items in kept.values() for item in items)
        item_map = IdMap(sorted(raw_items) if sort_items else raw_items, offset=1, kind="item")
        sequences = [[item_map.index(item) for item in items] for items in kept.values()]
        return cls(user_map, item_map, sequences, {"short_users_dropped": len(histories) - len(kept)})


# ---------------------------------------------------------------------------------------------------------- loaders
def load_movielens_100k(path: str | Path, min_rating: float | None = None) -> datasets.Dataset:
    """Read RecBole's ``ml-100k.inter`` (a file or its folder) into ``user_id``, ``item_id``, ``rating``, ``timestamp``.

    Every rating counts as an interaction (implicit feedback) unless ``min_rating`` keeps only ratings >= it.
    Feed the result to :meth:`InteractionData.from_dataset`.
    """
    path = Path(path)
    inter = path / "ml-100k.inter" if path.is_dir() else path
    with inter.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = [name.split(":")[0] for name in next(reader)]
        rows = list(reader)
    columns = {name: [row[position] for row in rows] for position, name in enumerate(header)}
    table = {
        "user_id": columns["user_id"],
        "item_id": columns["item_id"],
        "rating": [float(value) for value in columns["rating"]],
        "timestamp": [float(value) for value in columns["timestamp"]],
    }
    dataset = datasets.Dataset.from_dict(table)
    if min_rating is not None:
        dataset = dataset.filter(lambda rating: rating >= min_rating, input_columns="rating")
    return dataset


def load_selfrec_interactions(path: str | Path) -> InteractionData:
    """SELFRec's ``amazon-beauty`` folder (``train.txt`` / ``test.txt``, lines ``user:item item ...``) as graph CF.

    Training pairs are every item of the training sequences; test pairs are ``user:last_item``. Ids are numbered
    by first appearance in ``train.txt``; test pairs with an item unseen in training are dropped (52 on Beauty).
    """
    path = Path(path)
    return InteractionData.from_pairs(_read_colon_pairs(path / "train.txt"), _read_colon_pairs(path / "test.txt"))


def load_seqrec_sequences(path: str | Path, min_length: int = 3) -> SequenceData:
    """An S3-Rec file (``seqrec-amazon/Beauty.txt``: ``user item item ...`` per line, chronological) as sequences.

    Item ids keep their numeric order (the file's ids are already ``1..I``, so index == raw id there).
    """
    histories: dict[Hashable, list[Hashable]] = {}
    with Path(path).open() as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{line_number}: expected 'user item item ...', got {line.strip()!r}.")
            histories[int(fields[0])] = [int(item) for item in fields[1:]]
    return SequenceData.from_raw_sequences(histories, min_length, sort_items=True)


def _read_colon_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            user, sep, items = line.strip().partition(":")
            if not sep:
                raise ValueError(f"{path}:{line_number}: expected 'user:item item ...', got {line.strip()!r}.")
            pairs.extend((user, item) for item in items.split())
    return pairs
