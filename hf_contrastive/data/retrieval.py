"""Retrieval data (corpus, queries, graded qrels): loaders, query splits, training pairs and re-ranking candidates.

data = load_beir("../shared/data/scifact/beir_format", split="train")
train, dev = split_queries(data, dev_fraction=0.2, seed=0)
pairs = training_pairs(train)  # {anchor, positive} rows for InfoNCE
candidates = build_candidate_sets(encode_fn, train, num_candidates=50)  # ranking rows for PG-Rank

Ids are strings; every qrels id exists in the queries and the corpus (the loaders check it, naming file and line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: light users and the GPU machine may lack datasets
    import datasets

logger = logging.getLogger(__name__)

Document = dict[str, str]  # {"title": str, "text": str}
_SMART_TAG = re.compile(r"\.([A-Z])(?:\s+(.*))?")


@dataclass
class RetrievalData:
    """A retrieval collection: ``corpus`` doc id -> {"title", "text"}, ``queries`` query id -> text and
    ``qrels`` query id -> {doc id: graded relevance} (> 0 relevant, 0 judged not relevant)."""

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


# ----------------------------------------------------------------------------------------------- BEIR
def load_beir(folder: str | Path, split: str = "train") -> RetrievalData:
    """Load a BEIR-format folder: ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl`` ({"_id",
    "text"}) and ``qrels/<split>.tsv`` (TAB-separated ``query-id corpus-id score``, after a header line).

    Queries are kept only if the split judges them (BEIR's convention), in qrels order.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"No qrels file {qrels_path}; available splits: {available}.")
    corpus = {
        doc_id: {"title": _field(record, "title", path, line, default=""), "text": _field(record, "text", path, line)}
        for doc_id, record, path, line in _jsonl_records(folder / "corpus.jsonl")
    }
    queries = {
        qid: _field(record, "text", path, line) for qid, record, path, line in _jsonl_records(folder / "queries.jsonl")
    }
    qrels: dict[str, dict[str, int]] = {}
    for line, text in _lines(qrels_path):
        columns = text.split("\t")
        if line == 1 and not columns[-1].strip().lstrip("-").isdigit():  # the header (query-id corpus-id score)
            continue
        if len(columns) != 3:
            raise ValueError(f"{qrels_path}:{line}: expected 3 TAB-separated columns (query-id, corpus-id, score).")
        qid, doc_id, score = columns
        _check_known(qid, queries, "query", qrels_path, line)
        _check_known(doc_id, corpus, "document", qrels_path, line)
        qrels.setdefault(qid, {})[doc_id] = _int(score, qrels_path, line)
    return RetrievalData(corpus, {qid: queries[qid] for qid in qrels}, qrels)


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict, Path, int]]:
    """(``_id``, record, path, line) of every non-blank line; duplicate ids are an error."""
    seen = set()
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line}: not valid JSON ({error.msg}).") from None
            record_id = _field(record, "_id", path, line)
            if record_id in seen:
                raise ValueError(f"{path}:{line}: duplicate _id {record_id!r}.")
            seen.add(record_id)
            yield record_id, record, path, line


def _field(record: Any, key: str, path: Path, line: int, default: str | None = None) -> str:
    value = record.get(key) if isinstance(record, dict) else None
    value = default if value is None else value
    if key == "_id" and isinstance(value, int):  # some BEIR conversions write numeric ids
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{path}:{line}: expected a string field {key!r}, got {value!r}.")
    return value


# ----------------------------------------------------------------------------------------------- Cranfield
def load_cranfield(folder: str | Path) -> RetrievalData:
    """Load the Cranfield collection: ``cran.all.1400``, ``cran.qry`` and ``cranqrel`` (SMART tagged text).

    - Documents: ``.I id`` then ``.T`` title, ``.A`` author, ``.B`` bibliography, ``.W`` body; a repeated tag
      appends to its field (as ir_datasets reads it). Text is the body, or the title when the body is empty
      (documents 471 and 995 have neither: their text is empty).
    - Queries: ``.I`` then ``.W``; the ``.I`` numbers skip values (001, 002, 004, ...) while cranqrel numbers the
      queries 1..225 in file order, so query id ``k`` is the k-th query of cran.qry (see SOURCE.txt).
    - cranqrel lines ``qid docid grade``: grades 1..4 are kept (4 = complete answer); ``-1`` ("no interest") and
      any other grade <= 0 becomes 0, judged not relevant.
    """
    folder = Path(folder)
    corpus = {}
    for doc_id, fields in _smart_records(folder / "cran.all.1400", allowed="TABW"):
        title, body = _joined(fields.get("T")), _joined(fields.get("W"))
        corpus[doc_id] = {"title": title, "text": body or title}
    queries = {
        str(ordinal): _joined(fields.get("W"))
        for ordinal, (_, fields) in enumerate(_smart_records(folder / "cran.qry", allowed="W"), start=1)
    }
    path = folder / "cranqrel"
    qrels: dict[str, dict[str, int]] = {}
    for line, text in _lines(path):
        columns = text.split()
        if len(columns) != 3:
            raise ValueError(f"{path}:{line}: expected 3 whitespace-separated columns (query, document, grade).")
        qid, doc_id, grade = (str(_int(value, path, line)) for value in columns)
        _check_known(qid, queries, "query (the ordinal position in cran.qry)", path, line)
        _check_known(doc_id, corpus, "document", path, line)
        qrels.setdefault(qid, {})[doc_id] = max(int(grade), 0)
    return RetrievalData(corpus, {qid: queries[qid] for qid in qrels}, qrels)


def _smart_records(path: Path, allowed: str) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """(``.I`` id, {tag: lines}) of each record of a SMART tagged file; ids are normalised (``"001"`` -> ``"1"``)."""
    record_id, fields, tag, seen = None, {}, None, set()
    for line, text in _lines(path):
        match = _SMART_TAG.fullmatch(text.rstrip())
        if match and match.group(1) == "I":
            if record_id is not None:
                yield record_id, fields
            record_id, fields, tag = str(_int(match.group(2) or "", path, line)), {}, None
            if record_id in seen:
                raise ValueError(f"{path}:{line}: duplicate record .I {record_id}.")
            seen.add(record_id)
        elif match and match.group(2) is None:
            if match.group(1) not in allowed or record_id is None:
                raise ValueError(f"{path}:{line}: unexpected tag .{match.group(1)} (expected .I, then {allowed}).")
            tag = match.group(1)
            fields.setdefault(tag, [])
        elif tag is None:
            raise ValueError(f"{path}:{line}: text outside a tagged field: {text[:40]!r}.")
        else:
            fields[tag].append(text)
    if record_id is not None:
        yield record_id, fields


def _joined(lines: list[str] | None) -> str:
    return " ".join(" ".join(lines or []).split())


# ----------------------------------------------------------------------------------------------- shared parsing
def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, line break (LF or CRLF) stripped."""
    if not path.is_file():
        raise FileNotFoundError(f"Missing file {path}.")
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            yield line, text


def _int(text: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {text!r} is not an integer.") from None


def _check_known(key: str, known: dict, kind: str, path: Path, line: int) -> None:
    if key not in known:
        raise ValueError(f"{path}:{line}: unknown {kind} id {key!r}.")


# ----------------------------------------------------------------------------------------------- derived sets
COLLECTIONS = ("scifact", "cranfield")


def load_collection(name: str, data_dir: str | Path, split: str = "train") -> RetrievalData:
    """A collection of the shared data folder by name: ``scifact`` (BEIR format, ``split``) or ``cranfield``."""
    data_dir = Path(data_dir)
    if name == "scifact":
        return load_beir(data_dir / "scifact" / "beir_format", split=split)
    if name == "cranfield":
        return load_cranfield(data_dir / "cranfield")
    raise ValueError(f"Unknown collection {name!r}; expected one of {list(COLLECTIONS)}.")


def subsample(data: RetrievalData, max_queries: int | None = None, max_corpus: int | None = None) -> RetrievalData:
    """A smaller collection for smoke runs: the first ``max_queries`` judged queries, and the documents they judge
    plus the first ``max_corpus`` others (corpus order). ``None`` keeps everything."""
    qrels = dict(list(data.qrels.items())[:max_queries]) if max_queries else dict(data.qrels)
    corpus = data.corpus
    if max_corpus:
        judged = {doc for grades in qrels.values() for doc in grades}
        others = set([doc for doc in data.corpus if doc not in judged][:max_corpus])
        corpus = {doc: text for doc, text in data.corpus.items() if doc in judged or doc in others}
    return RetrievalData(corpus, {qid: data.queries[qid] for qid in qrels}, qrels)


def split_queries(
    data: RetrievalData, dev_fraction: float = 0.2, seed: int = 0
) -> tuple[RetrievalData, RetrievalData]:
    """Split the judged queries into (train, dev) collections that share the corpus.

    Each query id gets the key ``sha256(f"{seed}:{query_id}")``; the ``round(dev_fraction * Q)`` queries with the
    smallest keys form dev. The split depends only on the ids and the seed (not on file order), and a query and
    all its judgments go to the same side.
    """
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must lie strictly between 0 and 1, got {dev_fraction}.")
    num_dev = round(dev_fraction * len(data.qrels))
    if not 0 < num_dev < len(data.qrels):
        raise ValueError(f"dev_fraction={dev_fraction} of {len(data.qrels)} judged queries leaves a side empty.")
    ranked = sorted(data.qrels, key=lambda qid: hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest())
    dev_ids = set(ranked[:num_dev])

    def subset(keep: Callable[[str], bool]) -> RetrievalData:
        qrels = {qid: grades for qid, grades in data.qrels.items() if keep(qid)}
        return RetrievalData(data.corpus, {qid: data.queries[qid] for qid in qrels}, qrels)

    return subset(lambda qid: qid not in dev_ids), subset(lambda qid: qid in dev_ids)


def training_pairs(data: RetrievalData) -> datasets.Dataset:
    """One ``{"anchor": query, "positive": document text}`` row per relevant (grade > 0) judgment, for InfoNCE.

    A query with several relevant documents gives several rows: train with the no-duplicates batch sampler so
    they never share a batch (each would be the other's false negative). Documents with empty text are left out
    (counted in a warning).
    """
    import datasets

    from ..evaluation.retrieval import document_text  # lazy: the evaluation package pulls in scipy and sklearn

    anchors, positives, empty = [], [], 0
    for qid, grades in data.qrels.items():
        for doc_id in (doc for doc, grade in grades.items() if grade > 0):
            text = document_text(data.corpus[doc_id])
            if text.strip():
                anchors.append(data.queries[qid])
                positives.append(text)
            else:
                empty += 1
    if empty:
        logger.warning("%d relevant judgment(s) point to documents with empty text and are left out.", empty)
    if not anchors:
        raise ValueError("No relevant (grade > 0) judgment with a non-empty document: no training pairs.")
    return datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})


def build_candidate_sets(
    encode_fn: Callable[[list[str]], Any],
    data: RetrievalData,
    num_candidates: int,
    include_all_relevant: bool = True,
    batch_size: int = 64,
    similarity: str = "cosine",
) -> datasets.Dataset:
    """Ranking rows ``{query, documents, labels, judged_relevance}`` from the current model's top candidates.

    For every query with a relevant judgment: the top ``num_candidates`` documents of the corpus by
    ``encode_fn`` embeddings (``RetrievalEvaluator.run``) and, with ``include_all_relevant``, every relevant
    document it missed appended after them (PG-Rank's "top-k plus gold" candidate sets). ``labels`` are the qrels grades of the documents (0 when unjudged) and
    ``judged_relevance`` all the query's judged grades (those of left-out documents too). Documents with blank
    text (two in Cranfield) are left out: a ranking row needs text to score. Logs the candidates' recall, how many
    queries lacked relevant documents and how many blank documents were left out.
    """
    import datasets

    from ..evaluation.retrieval import RetrievalEvaluator, compute_retrieval_metrics, document_text

    recall_name = f"recall@{num_candidates}"
    evaluator = RetrievalEvaluator(
        data.queries,
        data.corpus,
        data.qrels,
        top_k=num_candidates,
        metrics=(recall_name,),
        batch_size=batch_size,
        similarity=similarity,
    )
    run = evaluator.run(encode_fn)
    rows, incomplete, blank = [], 0, 0
    for qid in evaluator.query_ids:
        grades = data.qrels[qid]
        missing = [doc for doc, grade in grades.items() if grade > 0 and doc not in run[qid]]
        incomplete += bool(missing)
        candidates = list(run[qid]) + (missing if include_all_relevant else [])
        doc_ids = [doc for doc in candidates if document_text(data.corpus[doc]).strip()]
        blank += len(candidates) - len(doc_ids)
        rows.append(
            {
                "query": data.queries[qid],
                "documents": [document_text(data.corpus[doc]) for doc in doc_ids],
                "labels": [float(max(grades.get(doc, 0), 0)) for doc in doc_ids],
                "judged_relevance": [float(max(grade, 0)) for grade in grades.values()],
            }
        )
    recall = compute_retrieval_metrics(run, evaluator.qrels, (recall_name,))[recall_name]
    logger.info(
        "Candidate sets of %d queries: %s of the top %d = %.4f; %d queries lacked relevant documents (%s); "
        "%d blank documents left out.",
        len(rows),
        recall_name,
        num_candidates,
        recall,
        incomplete,
        "appended" if include_all_relevant else "not added",
        blank,
    )
    return datasets.Dataset.from_list(rows)
