"""Load a contrastive dataset from local files or the Hub, and check its text columns before training."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: light users and the GPU machine may lack datasets
    import datasets

# extension -> (datasets packaged builder, extra builder kwargs); ".txt" is read here (one text per line).
_BUILDERS = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
}
SUPPORTED_EXTENSIONS = (*_BUILDERS, ".txt")


def _looks_like_path(name: str) -> bool:
    """Tell a local path from a Hub id (``owner/name``): absolute, relative prefix, deeper nesting or a file suffix."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or name.lower().endswith(SUPPORTED_EXTENSIONS)
    )


def _read_lines(files: Sequence[Path]) -> datasets.Dataset:
    """Read text files into a ``text`` column, one row per non-blank line (line breaks stripped)."""
    import datasets

    lines = []
    for file in files:
        with open(file, encoding="utf-8") as handle:
            lines.extend(line.rstrip("\r\n") for line in handle if line.strip())
    return datasets.Dataset.from_dict({"text": lines})


def _split_files(directory: Path, split: str) -> list[Path]:
    """List the supported files of ``directory`` for ``split``: files named ``<split>*`` if any, else all of them."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"No {'/'.join(SUPPORTED_EXTENSIONS)} files in directory {str(directory)!r}.")
    named = [p for p in files if p.name.lower().startswith(split.lower())]
    return named or files


def _load_files(files: Sequence[Path], **kwargs: Any) -> datasets.Dataset:
    """Load local files that share one supported extension into a single ``datasets.Dataset``."""
    import datasets

    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) != 1:
        raise ValueError(f"Files of different formats cannot be loaded together: {[str(p) for p in files]}.")
    (suffix,) = suffixes
    if suffix == ".txt":
        return _read_lines(files)
    if suffix not in _BUILDERS:
        raise ValueError(f"Unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}.")
    builder, defaults = _BUILDERS[suffix]
    return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", **{**defaults, **kwargs})


def _local_files(path: Path, split: str, data_files: str | Sequence[str] | None) -> list[Path]:
    """Resolve the files to read for a local file or directory (``data_files`` are relative to a directory)."""
    if path.is_file():
        return [path]
    if data_files is None:
        return _split_files(path, split)
    names = [data_files] if isinstance(data_files, str) else list(data_files)
    files = [path / name for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"data_files not found: {missing}.")
    return files


def _apply_text_column_hint(dataset: datasets.Dataset, hint: str) -> datasets.Dataset:
    """Rename column ``hint`` to ``text`` (the unsupervised single-column layout)."""
    if hint not in dataset.column_names:
        raise ValueError(f"text_column_hint {hint!r} is not a column; the dataset has {dataset.column_names}.")
    if hint == "text":
        return dataset
    if "text" in dataset.column_names:
        raise ValueError(f"Cannot rename {hint!r} to 'text': the dataset already has a 'text' column.")
    return dataset.rename_column(hint, "text")


def load_contrastive_dataset(
    name_or_path: str,
    split: str = "train",
    data_files: str | Sequence[str] | None = None,
    text_column_hint: str | None = None,
    **kwargs: Any,
) -> datasets.Dataset:
    """Load one split from a local file or directory, or a Hub dataset, as a ``datasets.Dataset``.

    Local files: ``.json``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` through the ``datasets`` builders (extra
    ``kwargs`` such as ``cache_dir`` or ``quoting`` go to ``datasets.load_dataset``), ``.txt`` as one text per
    non-blank line in column ``text``. A directory is read as its files named ``<split>*`` (or all its files when
    none is), or the ``data_files`` given relative to it. Any other name goes to ``datasets.load_dataset(name,
    split=split, data_files=data_files, **kwargs)``; names that look like paths (absolute, ``./``, nested, or
    ending in a supported extension) raise FileNotFoundError when missing instead of querying the Hub.

    Args:
        name_or_path: local file or directory, or a Hub dataset id (``owner/name``).
        split: the split to return.
        data_files: files to read, for a directory or a Hub dataset.
        text_column_hint: a column to rename to ``text``, for an unsupervised corpus whose column has another name.
    """
    import datasets

    path = Path(name_or_path).expanduser()
    if path.exists():
        dataset = _load_files(_local_files(path, split, data_files), **kwargs)
    elif _looks_like_path(name_or_path):
        raise FileNotFoundError(f"No such file or directory: {name_or_path!r}.")
    else:
        dataset = datasets.load_dataset(name_or_path, split=split, data_files=data_files, **kwargs)
    return _apply_text_column_hint(dataset, text_column_hint) if text_column_hint else dataset


def validate_contrastive_columns(
    dataset: datasets.Dataset, text_columns: Sequence[str], sample_size: int = 1000
) -> None:
    """Raise ValueError unless every text column exists and its first ``sample_size`` rows hold non-blank strings.

    Checking a prefix keeps start-up fast on large datasets; the collator still checks every batch it builds.
    """
    missing = [c for c in text_columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Missing text column(s) {missing}; the dataset has columns {dataset.column_names}. "
            "Expected 'text' or 'anchor', 'positive' (and optionally 'negative_1'..'negative_k')."
        )
    sample = dataset.select(range(min(sample_size, len(dataset))))
    for column in text_columns:
        for index, text in enumerate(sample[column]):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Column {column!r}, row {index}: expected non-blank text, got {text!r}.")
