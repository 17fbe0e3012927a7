"""Retrieval collections: BEIR and Cranfield loaders, query splits, training pairs and top-k-plus-gold candidates."""

import json
import logging
import random
from pathlib import Path

import pytest
import torch

from hf_contrastive.data import (
    RetrievalData,
    build_candidate_sets,
    load_beir,
    load_cranfield,
    split_queries,
    training_pairs,
)
from hf_contrastive.data.retrieval import load_collection, subsample

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "../shared/data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


# ----------------------------------------------------------------------------------------------- BEIR
def write_beir(folder: Path, corpus_lines=None, qrels_lines=None) -> Path:
    corpus = corpus_lines or [
        json.dumps({"_id": "d1", "title": "Cats", "text": "cats purr", "metadata": {}}),
        json.dumps({"_id": "d2", "text": "dogs bark"}),
        json.dumps({"_id": "d3", "title": "", "text": "birds sing"}),
    ]
    queries = [json.dumps({"_id": q, "text": f"query {q}"}) for q in ("q1", "q2", "q3")]
    qrels = qrels_lines or ["q1\td1\t1", "q1\td3\t2", "q2\td2\t0"]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n\n", encoding="utf-8")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (folder / "qrels" / "test.tsv").write_text("q3\td2\t1\n")  # no header line: the first line is data
    return folder


def test_load_beir_reads_corpus_queries_and_the_split_qrels(tmp_path):
    data = load_beir(write_beir(tmp_path))
    assert data.corpus == {
        "d1": {"title": "Cats", "text": "cats purr"},
        "d2": {"title": "", "text": "dogs bark"},
        "d3": {"title": "", "text": "birds sing"},
    }
    assert data.qrels == {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 0}}
    assert data.queries == {"q1": "query q1", "q2": "query q2"}  # q3 is judged in another split only
    test = load_beir(tmp_path, split="test")
    assert test.queries == {"q3": "query q3"} and test.qrels == {"q3": {"d2": 1}}


@pytest.mark.parametrize(
    ("corpus_lines", "qrels_lines", "message"),
    [
        (['{"_id": "d1", "text": "a"}', "{not json"], None, r"corpus.jsonl:2: not valid JSON"),
        (['{"_id": "d1", "title": "t"}'], None, r"corpus.jsonl:1: expected a string field 'text'"),
        (['{"_id": "d1", "text": "a"}', '{"_id": "d1", "text": "b"}'], None, r"corpus.jsonl:2: duplicate _id 'd1'"),
        (None, ["q1\td1\t1", "q1\tzz\t1"], r"train.tsv:3: unknown document id 'zz'"),
        (None, ["q9\td1\t1"], r"train.tsv:2: unknown query id 'q9'"),
        (None, ["q1\td1\thigh"], r"train.tsv:2: 'high' is not an integer"),
        (None, ["q1 d1 1"], r"train.tsv:2: expected 3 TAB-separated columns"),
    ],
)
def test_load_beir_names_the_file_and_line_of_bad_input(tmp_path, corpus_lines, qrels_lines, message):
    write_beir(tmp_path, corpus_lines, qrels_lines)
    with pytest.raises(ValueError, match=message):
        load_beir(tmp_path)


def test_load_beir_lists_the_available_splits(tmp_path):
    write_beir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"available splits: \['test', 'train'\]"):
        load_beir(tmp_path, split="dev")


# ----------------------------------------------------------------------------------------------- Cranfield
CRAN_DOCS = """.I 1
.T
flow past a plate .
.A
smith,j.
.B
j. ae. 1950.
.W
flow past a plate .
  the flow   is laminar .
.I 2
.T
heat in slabs .
.A
.B
.W
.I 3
.T
shock waves .
.A
doe,a.
.B
rep. 12
.W
shock waves .
.W
a second body part .
"""
# .I numbers skip values (as in cran.qry) and lines end in CRLF
CRAN_QUERIES = "\r\n".join(
    [
        ".I 001",
        ".W",
        "what is laminar flow .",
        ".I 004",
        ".W",
        "heat conduction in",
        " slabs .",
        ".I 009",
        ".W",
        "shocks .",
        "",
    ]
)
CRAN_QRELS = "2 3 -1\n2 2 4 \n1 1 1\n3 3 2\n"


def write_cranfield(folder: Path, docs=CRAN_DOCS, queries=CRAN_QUERIES, qrels=CRAN_QRELS) -> Path:
    (folder / "cran.all.1400").write_text(docs, encoding="utf-8")
    (folder / "cran.qry").write_bytes(queries.encode("utf-8"))
    (folder / "cranqrel").write_text(qrels, encoding="utf-8")
    return folder


def test_load_cranfield_maps_qrels_to_query_positions_and_grades(tmp_path):
    data = load_cranfield(write_cranfield(tmp_path))
    assert data.corpus == {
        "1": {"title": "flow past a plate .", "text": "flow past a plate . the flow is laminar ."},
        "2": {"title": "heat in slabs .", "text": "heat in slabs ."},  # empty body: the title
        "3": {"title": "shock waves .", "text": "shock waves . a second body part ."},  # repeated .W appends
    }
    # qrels query k is the k-th query of cran.qry (.I 004 is query "2"); -1 "no interest" becomes 0
    assert data.queries == {"2": "heat conduction in slabs .", "1": "what is laminar flow .", "3": "shocks ."}
    assert data.qrels == {"2": {"3": 0, "2": 4}, "1": {"1": 1}, "3": {"3": 2}}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"qrels": "1 1 1\n4 1 2\n"}, r"cranqrel:2: unknown query \(the ordinal position in cran.qry\) id '4'"),
        ({"qrels": "1 9 1\n"}, r"cranqrel:1: unknown document id '9'"),
        ({"qrels": "1 1\n"}, r"cranqrel:1: expected 3 whitespace-separated columns"),
        ({"qrels": "1 1 x\n"}, r"cranqrel:1: 'x' is not an integer"),
        ({"docs": CRAN_DOCS.replace(".B\nrep. 12", ".X\nrep. 12")}, r"cran.all.1400:22: unexpected tag .X"),
        ({"docs": "stray text\n" + CRAN_DOCS}, r"cran.all.1400:1: text outside a tagged field"),
        ({"docs": CRAN_DOCS.replace(".I 3", ".I 2")}, r"cran.all.1400:17: duplicate record .I 2"),
        ({"queries": ".I\n.W\nwhat .\n"}, r"cran.qry:1: '' is not an integer"),
    ],
)
def test_load_cranfield_names_the_file_and_line_of_bad_input(tmp_path, files, message):
    write_cranfield(tmp_path, **files)
    with pytest.raises(ValueError, match=message):
        load_cranfield(tmp_path)


# ----------------------------------------------------------------------------------------------- splits and pairs
def toy_data(num_queries: int = 50) -> RetrievalData:
    corpus = {f"d{i}": {"title": f"title {i}", "text": f"text {i}"} for i in range(num_queries)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{(i + 1) % num_queries}": 0} for i in range(num_queries)}
    return RetrievalData(corpus, {qid: f"query {qid}" for qid in qrels}, qrels)


def test_subsample_keeps_the_first_queries_their_judged_documents_and_a_few_others():
    small = subsample(toy_data(10), max_queries=3, max_corpus=2)
    assert list(small.qrels) == ["q0", "q1", "q2"] and list(small.queries) == ["q0", "q1", "q2"]
    assert sorted(small.corpus) == ["d0", "d1", "d2", "d3", "d4", "d5"]  # judged d0..d3, then the first 2 others
    assert subsample(toy_data(10)).corpus == toy_data(10).corpus


def test_load_collection_refuses_an_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown collection 'msmarco'"):
        load_collection("msmarco", tmp_path)


def test_split_queries_is_deterministic_disjoint_and_independent_of_order():
    data = toy_data()
    train, dev = split_queries(data, dev_fraction=0.2, seed=3)
    assert len(dev.qrels) == 10 and len(train.qrels) == 40
    assert set(train.qrels).isdisjoint(dev.qrels) and set(train.qrels) | set(dev.qrels) == set(data.qrels)
    assert train.corpus is data.corpus and dev.corpus is data.corpus
    assert all(dev.qrels[qid] == data.qrels[qid] and dev.queries[qid] == data.queries[qid] for qid in dev.qrels)

    order = list(data.qrels)
    random.Random(0).shuffle(order)
    shuffled = RetrievalData(data.corpus, data.queries, {qid: data.qrels[qid] for qid in order})
    assert set(split_queries(shuffled, 0.2, seed=3)[1].qrels) == set(dev.qrels)
    assert set(split_queries(data, 0.2, seed=4)[1].qrels) != set(dev.qrels)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_split_queries_refuses_an_empty_side(fraction):
    with pytest.raises(ValueError, match="dev_fraction"):
        split_queries(toy_data(), dev_fraction=fraction)


def test_training_pairs_has_one_row_per_relevant_judgment(caplog):
    corpus = {
        "d1": {"title": "Cats", "text": "cats purr"},
        "d2": {"title": "", "text": "dogs"},
        "e": {"title": "", "text": ""},
    }
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d2": 0, "d1": 1, "e": 3}, "q3": {"d1": 0}}
    data = RetrievalData(corpus, {"q1": "first", "q2": "second", "q3": "third"}, qrels)
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.data.retrieval"):
        pairs = training_pairs(data)
    assert pairs.to_dict() == {
        "anchor": ["first", "first", "second"],
        "positive": ["Cats cats purr", "dogs", "Cats cats purr"],
    }
    assert "1 relevant judgment(s) point to documents with empty text" in caplog.text


# ----------------------------------------------------------------------------------------------- candidate sets
def test_candidate_sets_hold_the_top_k_plus_every_relevant_document(caplog):
    # 2-d embeddings: each query points at one direction; the relevant documents of q1 point elsewhere
    vectors = {"query a": [1.0, 0.0], "query b": [0.0, 1.0]}
    corpus, doc_vectors = {}, [[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.1, 1.0], [0.2, 1.0], [-1.0, 0.0]]
    for i, vector in enumerate(doc_vectors):
        corpus[f"d{i}"] = {"title": "", "text": f"doc {i}"}
        vectors[f"doc {i}"] = vector
    corpus["blank"], vectors[""] = {"title": "", "text": ""}, [0.5, 0.5]
    qrels = {"q1": {"d5": 2, "d3": 1, "d0": 0}, "q2": {"d3": 1, "blank": 1}, "q3": {"d1": 0}}
    data = RetrievalData(corpus, {"q1": "query a", "q2": "query b", "q3": "query b"}, qrels)

    def encode(texts):
        return torch.tensor([vectors[text] for text in texts])

    with caplog.at_level(logging.INFO, logger="hf_contrastive.data.retrieval"):
        rows = build_candidate_sets(encode, data, num_candidates=2, batch_size=3)
    assert len(rows) == 2  # q3 has no relevant document
    # q1: top 2 by cosine are d0, d1 (d0 judged 0); d5 and d3 (relevant, missed) are appended
    assert rows[0] == {
        "query": "query a",
        "documents": ["doc 0", "doc 1", "doc 5", "doc 3"],
        "labels": [0.0, 0.0, 2.0, 1.0],
        "judged_relevance": [2.0, 1.0, 0.0],
    }
    # q2: top 2 are d3, d4; its relevant blank document cannot be a candidate but counts in judged_relevance
    assert rows[1] == {
        "query": "query b",
        "documents": ["doc 3", "doc 4"],
        "labels": [1.0, 0.0],
        "judged_relevance": [1.0, 1.0],
    }
    assert (
        "recall@2 of the top 2 = 0.2500; 2 queries lacked relevant documents (appended); 1 blank documents left out"
        in caplog.text
    )

    top_only = build_candidate_sets(encode, data, num_candidates=2, include_all_relevant=False)
    assert top_only[0]["documents"] == ["doc 0", "doc 1"] and top_only[0]["labels"] == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------- real data
@needs_data
@pytest.mark.slow
def test_real_scifact_and_cranfield_load_with_the_counts_of_their_source_files():
    scifact = load_beir(DATA / "scifact" / "beir_format", split="train")
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == len(scifact.qrels) == 809
    assert sum(len(grades) for grades in scifact.qrels.values()) == 919

    cranfield = load_cranfield(DATA / "cranfield")
    assert (len(cranfield.corpus), len(cranfield.queries)) == (1400, 225)
    grades = [grade for judged in cranfield.qrels.values() for grade in judged.values()]
    assert len(grades) == 1837
    assert {g: grades.count(g) for g in range(5)} == {0: 225, 1: 128, 2: 387, 3: 734, 4: 363}
    # SOURCE.txt spot checks of the ordinal mapping: qid 3 is .I 004, qid 225 is .I 365
    assert cranfield.queries["3"].startswith("what problems of heat conduction in composite slabs")
    assert {"5", "6"} <= {doc for doc, grade in cranfield.qrels["3"].items() if grade > 0}
    assert "mach numbers above 5" in cranfield.queries["225"]
