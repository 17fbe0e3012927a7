"""Retrieval metrics, chunked exact retrieval and the retrieval / re-ranking evaluators (also across 2 processes)."""

import logging
from math import log2

import pytest
import torch

from hf_contrastive.evaluation import (
    RerankingEvaluator,
    RetrievalEvaluator,
    compute_retrieval_metrics,
    load_metric,
    retrieve,
)

from ..trainers.distributed_check import torchrun
from ..trainers.helpers import config, dropout_free_encoder, triplet_dataset
from .retrieval_worker import CORPUS, QRELS, QUERIES, evaluate_toy_collection


# ----------------------------------------------------------------------------------------------- plain references
def reference_metrics(ranked_ids: list[str], grades: dict[str, float], k: int) -> dict[str, float]:
    """nDCG (exponential gain), RR, recall, AP and P at cutoff k, written out loop by loop."""
    relevance = [max(grades.get(doc, 0), 0) for doc in ranked_ids[:k]]
    ideal = sorted((max(g, 0) for g in grades.values()), reverse=True)[:k]
    num_relevant = sum(g > 0 for g in grades.values())
    dcg = sum((2**rel - 1) / log2(i + 2) for i, rel in enumerate(relevance))
    idcg = sum((2**rel - 1) / log2(i + 2) for i, rel in enumerate(ideal))
    hits = [i for i, rel in enumerate(relevance) if rel > 0]
    return {
        "ndcg": dcg / idcg,
        "mrr": 1 / (hits[0] + 1) if hits else 0.0,
        "recall": len(hits) / num_relevant,
        "map": sum((n + 1) / (i + 1) for n, i in enumerate(hits)) / num_relevant,
        "precision": len(hits) / k,
    }


def table_encoder(texts, dim: int = 6, seed: int = 0):
    """encode_fn over a fixed random vector per text (batch-independent, so brute force can reproduce it)."""
    generator = torch.Generator().manual_seed(seed)
    table = {text: torch.randn(dim, generator=generator) for text in texts}
    calls = []

    def encode(batch):
        calls.append(list(batch))
        return torch.stack([table[text] for text in batch])

    return encode, table, calls


# ----------------------------------------------------------------------------------------------- metrics
def test_binary_metrics_match_hand_computation():
    run = {"q1": ["d1", "d2", "d3", "d4"], "q2": ["a", "b"], "unjudged": ["d1"]}
    qrels = {"q1": {"d2": 1, "d4": 1}, "q2": {"c": 1}}
    metrics = compute_retrieval_metrics(run, qrels, ("ndcg@10", "mrr@10", "recall@100", "map@100", "precision@2"))
    ndcg_q1 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3))
    ap_q1 = (1 / 2 + 2 / 4) / 2
    # q2 retrieves nothing relevant: 0 everywhere; the unjudged query is ignored
    assert metrics == pytest.approx(
        {"ndcg@10": ndcg_q1 / 2, "mrr@10": 0.5 / 2, "recall@100": 1 / 2, "map@100": ap_q1 / 2, "precision@2": 0.25}
    )


def test_graded_metrics_use_every_judged_grade_and_either_gain():
    # v is judged -1 (not relevant) and ranked first; w (grade 2) is judged but never retrieved
    run = {"q": ["v", "x", "y", "z"]}
    qrels = {"q": {"v": -1, "x": 1, "y": 0, "z": 3, "w": 2}}
    exponential = compute_retrieval_metrics(run, qrels, ("ndcg@10", "mrr@10", "recall@100", "map@100"))
    assert exponential["ndcg@10"] == pytest.approx((1 / log2(3) + 7 / log2(5)) / (7 + 3 / log2(3) + 1 / log2(4)))
    assert exponential["mrr@10"] == pytest.approx(1 / 2)
    assert exponential["recall@100"] == pytest.approx(2 / 3)
    assert exponential["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    linear = compute_retrieval_metrics(run, qrels, ("ndcg@10",), ndcg_gain="linear")  # trec_eval's gain = grade
    assert linear["ndcg@10"] == pytest.approx((1 / log2(3) + 3 / log2(5)) / (3 + 2 / log2(3) + 1 / log2(4)))
    # the cutoff applies to the ranking and to the ideal ranking alike
    assert compute_retrieval_metrics(run, qrels, ("ndcg@2",))["ndcg@2"] == pytest.approx(
        (1 / log2(3)) / (7 + 3 / log2(3))
    )


def test_score_dicts_rank_by_score_and_keep_dict_order_on_ties():
    qrels = {"q": {"a": 1, "c": 1}}
    scored = compute_retrieval_metrics({"q": {"a": 0.1, "b": 0.9, "c": 0.9}}, qrels, ("map@10", "mrr@10"))
    assert scored == compute_retrieval_metrics({"q": ["b", "c", "a"]}, qrels, ("map@10", "mrr@10"))


def test_queries_without_relevant_documents_are_skipped_and_counted(caplog):
    run = {"q1": ["d1", "d2"], "q2": ["d3"], "q3": ["d1"]}
    only_q1 = compute_retrieval_metrics(run, {"q1": {"d2": 1}}, ("mrr@10",))
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.evaluation.retrieval"):
        metrics = compute_retrieval_metrics(run, {"q1": {"d2": 1}, "q2": {"d3": 0}, "q3": {"d1": -1}}, ("mrr@10",))
    assert metrics == only_q1 == {"mrr@10": 0.5}
    assert "2 of 3 queries in qrels have no relevant document" in caplog.text and "'q2', 'q3'" in caplog.text


def test_judged_queries_missing_from_the_run_score_zero(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.evaluation.retrieval"):
        metrics = compute_retrieval_metrics({"q1": ["d1"]}, {"q1": {"d1": 1}, "q2": {"d1": 1}}, ("mrr@10",))
    assert metrics == {"mrr@10": 0.5}
    assert "1 of 2 judged queries are missing from the run" in caplog.text


@pytest.mark.parametrize(
    ("run", "qrels", "metrics", "message"),
    [
        ({"q": ["a"]}, {"q": {"a": 1}}, ("ndcg",), "Unknown metric 'ndcg'"),
        ({"q": ["a"]}, {"q": {"a": 1}}, ("ndcg@0",), "Unknown metric 'ndcg@0'"),
        ({"q": ["a"]}, {"q": {"a": 1}}, ("hits@10",), "Unknown metric 'hits@10'"),
        ({"q": ["a"]}, {"q": {"a": 1}}, "ndcg@10", "non-empty list"),
        ({"q": ["a", "b", "a"]}, {"q": {"a": 1}}, ("mrr@10",), "Run of query 'q' lists a document more than once"),
        ({"q": ["a"]}, {"q": {"a": 0}}, ("mrr@10",), "No query in qrels has a relevant document"),
    ],
)
def test_compute_retrieval_metrics_rejects_bad_input(run, qrels, metrics, message):
    with pytest.raises(ValueError, match=message):
        compute_retrieval_metrics(run, qrels, metrics)


# ----------------------------------------------------------------------------------------------- retrieve
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("chunk_size", [1, 7, 50, 64])
def test_chunked_retrieve_equals_a_dense_stable_sort(similarity, chunk_size):
    generator = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(7, 8, generator=generator), torch.randn(50, 8, generator=generator)
    indices, scores = retrieve(queries, corpus, top_k=10, similarity=similarity, chunk_size=chunk_size)
    if similarity == "cosine":
        queries, corpus = (torch.nn.functional.normalize(x, dim=-1) for x in (queries, corpus))
    dense = queries @ corpus.T
    expected = torch.sort(dense, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(indices, expected)
    torch.testing.assert_close(scores, dense.gather(1, expected))


def test_retrieve_breaks_exact_ties_by_corpus_index_and_caps_k():
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # duplicated documents
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    indices, _ = retrieve(queries, corpus, top_k=3, similarity="dot", chunk_size=2)
    assert indices.tolist() == [[0, 2, 3], [1, 4, 0]]
    indices, scores = retrieve(queries, corpus, top_k=100, similarity="dot")
    assert indices.shape == scores.shape == (2, 5)


def test_retrieve_rejects_mismatched_embeddings():
    with pytest.raises(ValueError, match="3 dimensions, corpus 4"):
        retrieve(torch.zeros(2, 3), torch.zeros(5, 4), top_k=2)
    with pytest.raises(ValueError, match="similarity must be one of"):
        retrieve(torch.zeros(2, 3), torch.zeros(5, 3), top_k=2, similarity="l2")


# ----------------------------------------------------------------------------------------------- evaluators
def test_retrieval_evaluator_equals_brute_force():
    corpus = {**CORPUS, "plain": "a document given as a plain string"}
    texts = [f"{doc['title']} {doc['text']}" for doc in CORPUS.values()] + [corpus["plain"]]
    encode, table, calls = table_encoder(texts + list(QUERIES.values()))
    evaluator = RetrievalEvaluator(
        QUERIES, corpus, QRELS, top_k=6, metrics=("ndcg@3", "mrr@6", "recall@6", "map@6", "precision@2"), batch_size=4
    )
    metrics = evaluator(encode)

    judged = [qid for qid, grades in QRELS.items() if any(g > 0 for g in grades.values())]  # q5 has none
    doc_ids = list(corpus)
    doc_matrix = torch.nn.functional.normalize(torch.stack([table[t] for t in texts]), dim=-1)
    expected = {name: 0.0 for name in metrics}
    for qid in judged:
        similarities = doc_matrix @ torch.nn.functional.normalize(table[QUERIES[qid]], dim=0)
        ranked = [doc_ids[i] for i in torch.sort(similarities, descending=True, stable=True).indices.tolist()]
        for name in metrics:
            metric, k = name.split("@")
            expected[name] += reference_metrics(ranked, QRELS[qid], int(k))[metric] / len(judged)
    assert metrics == pytest.approx(expected)

    run = evaluator.run(encode)
    assert list(run) == judged and all(len(ranking) == 6 for ranking in run.values())
    assert all(list(r.values()) == sorted(r.values(), reverse=True) for r in run.values())
    encoded = [text for call in calls for text in call]
    assert sorted(encoded) == sorted(2 * (texts + [QUERIES[qid] for qid in judged]))  # once per call, q5 never
    assert max(len(call) for call in calls) == 4
    named = RetrievalEvaluator(QUERIES, corpus, QRELS, top_k=6, metrics=("mrr@6",), name="dev")(encode)
    assert named == {"dev_mrr@6": pytest.approx(metrics["mrr@6"])}


@pytest.mark.parametrize(
    ("queries", "corpus", "qrels", "kwargs", "message"),
    [
        (QUERIES, CORPUS, {**QRELS, "qx": {"d1": 1}, "qy": {"d1": 1}}, {}, r"2 query id\(s\) missing.*'qx', 'qy'"),
        (QUERIES, CORPUS, {"q1": {"d1": 1, "zz": 1}}, {}, r"1 document id\(s\) missing from the corpus: 'zz'"),
        (QUERIES, {}, QRELS, {}, "corpus is empty"),
        (QUERIES, CORPUS, QRELS, {"top_k": 5}, "top_k=5 is below the deepest metric cutoff 100"),
        (QUERIES, {**CORPUS, "bad": {"title": "t"}}, QRELS, {}, "document 'bad': Expected a document text"),
        (QUERIES, CORPUS, QRELS, {"similarity": "l2"}, "similarity must be one of"),
    ],
)
def test_retrieval_evaluator_rejects_bad_input(queries, corpus, qrels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetrievalEvaluator(queries, corpus, qrels, **kwargs)


def test_reranking_evaluator_by_bi_encoder_and_by_cross_scorer():
    vectors = {"q": [1.0, 0.0], "a": [0.0, 1.0], "b": [1.0, 0.1], "c": [5.0, 5.0], "n": [-1.0, -1.0]}
    rows = [
        {"query": "q", "documents": ["a", "b", "c"], "labels": [1, 0, 2], "judged_relevance": [1, 2, 3]},
        {"query": "q", "documents": ["a", "n"], "labels": [0, 0]},  # nothing relevant: skipped
        {"query": "q", "documents": ["n", "a"], "labels": [1, 0]},
    ]
    evaluator = RerankingEvaluator(rows, metrics=("ndcg@10", "mrr@10", "recall@10"), batch_size=2, name="rerank")
    by_cosine = evaluator(lambda texts: torch.tensor([vectors[t] for t in texts]))
    # cosine ranks row 0 as b (0.995), c (0.707), a (0): DCG = 0 + 3 / log2(3) + 1 / log2(4) against the ideal
    # of the judged grades 3, 2, 1; row 2 as a (0), n (-0.707): the relevant n is second
    ndcg_0 = (3 / log2(3) + 1 / log2(4)) / (7 + 3 / log2(3) + 1 / log2(4))
    ndcg_2 = (1 / log2(3)) / 1
    assert by_cosine == pytest.approx(
        {
            "rerank_ndcg@10": (ndcg_0 + ndcg_2) / 2,
            "rerank_mrr@10": (1 / 2 + 1 / 2) / 2,
            "rerank_recall@10": (2 / 3 + 1) / 2,
        }
    )

    calls = []

    def scorer(queries, documents):
        calls.append(len(documents))
        return [{"a": 3.0, "b": 2.0, "c": 1.0, "n": 0.0}[d] for d in documents]

    by_scorer = evaluator.score_pairs(scorer)
    # row 0 ranks a, b, c: DCG = 1 + 3 / log2(4); row 2 ranks a, n
    assert by_scorer["rerank_ndcg@10"] == pytest.approx(((1 + 3 / log2(4)) / (7 + 3 / log2(3) + 1 / 2) + ndcg_2) / 2)
    assert by_scorer["rerank_mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert calls == [2, 2, 1]  # 5 pairs of the two kept rows in batches of 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"query": "q", "documents": ["a"], "labels": [1]}, {"query": "q", "documents": [], "labels": []}],
            "Row 1: 'documents' must be a non-empty list",
        ),
        ([{"query": "q", "documents": ["a", "b"], "labels": [1]}], "Row 0: 'labels' must hold one grade per document"),
        ([{"query": "q", "documents": ["a"], "labels": [-1]}], "Row 0: 'labels' must hold numbers >= 0"),
        (
            [{"query": "q", "documents": ["a", "b"], "labels": [1, 1], "judged_relevance": [1, 0]}],
            r"Row 0: 'judged_relevance' does not contain the grades \[1, 1\]",
        ),
        (
            [{"query": "q", "documents": ["a"], "labels": [3], "judged_relevance": [1, 1]}],
            r"Row 0: 'judged_relevance' does not contain the grades \[3\]",
        ),
        ([{"query": None, "documents": ["a"], "labels": [1]}], "Row 0: 'query' must be a string"),
        ([], "no rows"),
    ],
)
def test_reranking_evaluator_rejects_bad_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        RerankingEvaluator(rows)


def test_score_pairs_checks_the_number_of_scores():
    evaluator = RerankingEvaluator([{"query": "q", "documents": ["a", "b"], "labels": [1, 0]}])
    with pytest.raises(ValueError, match="pair_scorer returned 1 scores for 2"):
        evaluator.score_pairs(lambda queries, documents: [0.5])


@pytest.mark.slow
def test_two_processes_return_exactly_the_single_process_results(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
    torchrun("tests.evaluation.retrieval_worker", str(tmp_path / "tokenizer"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = evaluate_toy_collection(str(tmp_path / "tokenizer"))

    for distributed in ranks:
        for key in ("metrics", "reranking", "pair_scoring"):
            assert distributed[key] == single[key], key
        assert {q: list(r) for q, r in distributed["run"].items()} == {q: list(r) for q, r in single["run"].items()}
        for qid, ranking in single["run"].items():
            assert list(distributed["run"][qid].values()) == pytest.approx(list(ranking.values()), abs=1e-6)
    # the corpus was encoded in two disjoint shards of 7 and 6 documents
    corpus_texts = {f"{doc['title']} {doc['text']}" for doc in CORPUS.values()}
    shards = [set(rank["encoded"]) & corpus_texts for rank in ranks]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == corpus_texts
    assert sorted(len(shard) for shard in shards) == [6, 7]


def test_contrastive_trainer_runs_the_retrieval_evaluator(tmp_path, tiny_tokenizer):
    from hf_contrastive.trainers import ContrastiveTrainer

    model = dropout_free_encoder(len(tiny_tokenizer))
    evaluator = RetrievalEvaluator(QUERIES, CORPUS, QRELS, top_k=5, metrics=("ndcg@3", "recall@5"), name="toy")
    args = config(tmp_path, max_steps=1, max_length=16, per_device_eval_batch_size=4)
    trainer = ContrastiveTrainer(model, args, triplet_dataset(8), processing_class=tiny_tokenizer, evaluator=evaluator)
    metrics = trainer.evaluate()
    direct = evaluator(lambda texts: model.encode(texts, tiny_tokenizer, batch_size=4, max_length=16))
    assert {key: metrics[key] for key in ("eval_toy_ndcg@3", "eval_toy_recall@5")} == {
        f"eval_{key}": value for key, value in direct.items()
    }


# ----------------------------------------------------------------------------------------------- evaluate module
def test_evaluate_module_equals_compute_retrieval_metrics():
    predictions = [["d2", "d1", "d3"], ["a", "b", "c"], ["x"]]
    references = [{"d1": 2, "d3": 1, "d9": 3}, ["c", "z"], {"x": 0}]  # the last query has no relevant document
    result = load_metric("retrieval_metrics").compute(predictions=predictions, references=references)
    run = {str(i): ranked for i, ranked in enumerate(predictions)}
    qrels = {"0": references[0], "1": {"c": 1, "z": 1}, "2": references[2]}
    assert result == pytest.approx(compute_retrieval_metrics(run, qrels))
    assert set(result) == {"ndcg@10", "mrr@10", "recall@100", "map@100"}

    metric = load_metric("retrieval_metrics")
    metric.add_batch(predictions=predictions[:1], references=references[:1])
    metric.add_batch(predictions=predictions[1:], references=references[1:])
    linear = metric.compute(metrics=["ndcg@2"], ndcg_gain="linear")
    assert linear == pytest.approx(compute_retrieval_metrics(run, qrels, ["ndcg@2"], ndcg_gain="linear"))
