"""Run the retrieval evaluators on a toy collection with a tiny encoder and return everything they produced.

Launched by ``tests/evaluation/test_retrieval.py`` as
``torchrun --nproc_per_node 2 -m tests.evaluation.retrieval_worker TOKENIZER_DIR OUT_DIR`` (gloo): every rank saves
``rank<r>.pt``. Called in-process (no process group) for the single-process reference.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from hf_contrastive.evaluation import RerankingEvaluator, RetrievalEvaluator

from ..conftest import SENTENCES, make_tiny_encoder

# 13 documents and 5 judged queries (odd counts: the two ranks get shards of different sizes); q5 has no
# relevant document and is skipped.
CORPUS = {f"d{i}": {"title": f"doc {i}", "text": text} for i, text in enumerate(SENTENCES + ["the cat and the dog"])}
QUERIES = {
    "q1": "a cat on a mat",
    "q2": "music played by a band",
    "q3": "weather on the coast",
    "q4": "food cooked by the chef",
    "q5": "the library",
    "q6": "sport final",
}
QRELS = {
    "q1": {"d0": 2, "d12": 1},
    "q2": {"d5": 1, "d11": 1},
    "q3": {"d2": 1, "d7": 2, "d10": 0},
    "q4": {"d3": 1},
    "q5": {"d6": 0},
    "q6": {"d8": 1},
}
RANKING_ROWS = [
    {"query": QUERIES[qid], "documents": [document["text"] for document in CORPUS.values()][:9], "labels": labels}
    for qid, labels in (("q1", [2, 0, 0, 0, 0, 0, 0, 0, 1]), ("q3", [0, 0, 1, 0, 0, 0, 0, 2, 0]))
]


def word_overlap(queries: list[str], documents: list[str]) -> list[float]:
    """A stand-in cross-scorer: shared words, with a small length tie-break."""
    return [len(set(q.split()) & set(d.split())) + 1e-3 * len(d) for q, d in zip(queries, documents)]


def evaluate_toy_collection(tokenizer_dir: str) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = make_tiny_encoder(len(tokenizer), seed=0)
    encoded = []

    def encode(texts: list[str]) -> torch.Tensor:
        encoded.extend(texts)
        return model.encode(texts, tokenizer, batch_size=4)

    metrics = ("ndcg@3", "mrr@5", "recall@5", "map@5")
    evaluator = RetrievalEvaluator(QUERIES, CORPUS, QRELS, top_k=5, metrics=metrics, batch_size=3, name="toy")
    reranker = RerankingEvaluator(RANKING_ROWS, metrics=metrics, batch_size=4)
    return {
        "metrics": evaluator(encode),
        "run": evaluator.run(encode),
        "reranking": reranker(encode),
        "pair_scoring": reranker.score_pairs(word_overlap),
        "encoded": encoded,
    }


if __name__ == "__main__":
    dist.init_process_group("gloo")
    results = evaluate_toy_collection(sys.argv[1])
    torch.save(results, Path(sys.argv[2]) / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
