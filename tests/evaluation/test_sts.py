import math
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from hf_contrastive.evaluation import METRICS_DIR, STSEvaluator, compute_sts_metrics, load_metric

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
STSB_DEV = DATA / "stsb" / "sts-dev.csv"
SICK_TRIAL = DATA / "sick" / "SICK_trial.txt"
needs_data = pytest.mark.skipif(not STSB_DEV.exists() or not SICK_TRIAL.exists(), reason="../shared/data not present")

PREDICTIONS = [0.1, 0.4, 0.9, 0.3, 0.75]
REFERENCES = [1.0, 2.0, 5.0, 2.5, 4.0]


def test_compute_sts_metrics_uses_cosine_not_dot_product():
    # cosines 1, 0, 1/sqrt(2), -1 (lengths differ so a dot product would rank the pairs differently)
    emb1 = np.array([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    emb2 = np.array([[0.1, 0.0], [0.0, 9.0], [2.0, 2.0], [-1.0, 0.0]])
    scores = [5.0, 1.0, 3.0, 0.0]
    metrics = compute_sts_metrics(emb1, emb2, scores)
    cosine = [1.0, 0.0, 1 / math.sqrt(2), -1.0]
    assert metrics["spearman_cosine"] == pytest.approx(1.0)
    assert metrics["pearson_cosine"] == pytest.approx(pearsonr(cosine, scores).statistic)
    reversed_metrics = compute_sts_metrics(emb1, emb2, scores[::-1])
    assert reversed_metrics["spearman_cosine"] == pytest.approx(spearmanr(cosine, scores[::-1]).statistic)


def test_compute_sts_metrics_constant_similarity_gives_nan():
    emb = np.ones((3, 4))
    metrics = compute_sts_metrics(emb, emb, [1.0, 2.0, 3.0])
    assert math.isnan(metrics["spearman_cosine"]) and math.isnan(metrics["pearson_cosine"])


def test_evaluator_encodes_each_unique_sentence_once_in_batches():
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0], "d": [1.0, -0.2], "e": [-1.0, 0.3]}
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([vectors[t] for t in texts])

    s1, s2, scores = ["a", "a", "b", "c", "d"], ["b", "c", "c", "e", "a"], [0.0, 3.5, 3.0, 1.0, 4.0]
    result = STSEvaluator(s1, s2, scores, name="toy", batch_size=2)(encode)

    encoded = [t for call in calls for t in call]
    assert sorted(encoded) == ["a", "b", "c", "d", "e"]
    assert [len(call) for call in calls] == [2, 2, 1]
    expected = compute_sts_metrics(np.array([vectors[t] for t in s1]), np.array([vectors[t] for t in s2]), scores)
    assert result == pytest.approx(
        {"toy_spearman_cosine": expected["spearman_cosine"], "toy_pearson_cosine": expected["pearson_cosine"]}
    )


@pytest.mark.parametrize(
    ("s1", "s2", "scores", "message"),
    [
        (["a", "b"], ["c"], [1.0, 2.0], "sentences2 has 1"),
        (["a", "b"], ["c", "d"], [1.0], "2 sentence pairs but 1 scores"),
        (["a"], ["b"], [1.0], "at least 2 pairs"),
        (["a", "b", "c"], ["d", "e", "f"], [2.0, 2.0, 2.0], "gold scores are equal"),
    ],
)
def test_evaluator_rejects_bad_inputs(s1, s2, scores, message):
    with pytest.raises(ValueError, match=message):
        STSEvaluator(s1, s2, scores)


def test_evaluator_rejects_wrongly_shaped_embeddings():
    evaluator = STSEvaluator(["a", "b"], ["c", "d"], [1.0, 2.0])
    with pytest.raises(ValueError, match="expected \\[N, D\\]"):
        evaluator(lambda texts: torch.zeros(len(texts) + 1, 3))


@needs_data
def test_from_sts_benchmark_reads_stsb_dev():
    evaluator = STSEvaluator.from_sts_benchmark(STSB_DEV)
    assert evaluator.name == "sts-dev"
    assert len(evaluator.scores) == 1500
    # line 1
    assert evaluator.sentences1[0] == "A man with a hard hat is dancing."
    assert evaluator.sentences2[0] == "A man wearing a hard hat is dancing."
    assert evaluator.scores[0] == 5.0
    # line 268: quotes are text, not CSV quoting
    assert evaluator.sentences2[267] == 'a woman is standing by a pillar where "u2" is written.'
    assert evaluator.scores[267] == 4.2
    # line 1500 has 9 columns (two trailing source columns)
    assert evaluator.sentences1[1499] == "New video shows US police officers beating mentally-ill man"
    assert evaluator.sentences2[1499] == "New York police officer critically wounded in hatchet attack"
    assert evaluator.scores[1499] == 0.0
    assert min(evaluator.scores) == 0.0 and max(evaluator.scores) == 5.0


@needs_data
def test_from_sts_benchmark_reads_sick_and_truncates():
    evaluator = STSEvaluator.from_sts_benchmark(SICK_TRIAL, name="sick", max_pairs=10)
    assert evaluator.name == "sick"
    assert len(evaluator.scores) == 10
    assert evaluator.sentences1[0] == "The young boys are playing outdoors and the man is smiling nearby"
    assert evaluator.sentences2[0] == "There is no boy playing outdoors and there is no man smiling"
    assert evaluator.scores[:2] == [3.6, 3.4]
    assert len(STSEvaluator.from_sts_benchmark(SICK_TRIAL).scores) == 500


def test_from_sts_benchmark_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("g\tf\t2012\t0001\t4.0\tA\tB\ng\tf\t2012\t0002\tfour\tC\tD\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv:2: score 'four'"):
        STSEvaluator.from_sts_benchmark(path)


def test_load_metric_matches_scipy():
    result = load_metric("sts_spearman").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result["spearman"] == pytest.approx(spearmanr(PREDICTIONS, REFERENCES).statistic)
    assert result["pearson"] == pytest.approx(pearsonr(PREDICTIONS, REFERENCES).statistic)
    # hand check: ranks of PREDICTIONS are 1,3,5,2,4 and of REFERENCES 1,2,5,3,4 -> d^2 = 0+1+0+1+0 = 2,
    # rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert result["spearman"] == pytest.approx(0.9)


def test_metric_module_loads_by_path_with_evaluate():
    metric = evaluate.load(str(METRICS_DIR / "sts_spearman"))
    metric.add_batch(predictions=PREDICTIONS[:2], references=REFERENCES[:2])
    metric.add_batch(predictions=PREDICTIONS[2:], references=REFERENCES[2:])
    assert metric.compute()["spearman"] == pytest.approx(0.9)


def test_load_metric_unknown_name_lists_available():
    with pytest.raises(ValueError, match="sts_spearman"):
        load_metric("accuracy")


def test_memoized_encoder_encodes_each_text_once_and_keeps_the_order():
    from hf_contrastive.evaluation.sts import MemoizedEncoder

    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(text), 1.0] for text in texts])

    memoized = MemoizedEncoder(encode)
    np.testing.assert_array_equal(memoized(["ab", "c", "ab"]), [[2, 1], [1, 1], [2, 1]])
    np.testing.assert_array_equal(memoized(["c", "dddd"]), [[1, 1], [4, 1]])
    assert calls == [["ab", "c"], ["dddd"]]
