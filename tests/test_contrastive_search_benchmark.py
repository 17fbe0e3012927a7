"""Smoke test of ``benchmarks/contrastive_search.py``: greedy and ours decode the same tiny model and report speeds."""

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "contrastive_search.py"


def test_benchmark_reports_positive_speeds_and_ratios_without_the_peer(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_contrastive_search", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        path = tmp_path / "results.jsonl"
        results = module.main(
            ["--sizes", "tiny", "--batch-sizes", "1", "2", "--new-tokens", "6", "--repeats", "1",
             "--min-prompt", "4", "--max-prompt", "8", "--threads", "1", "--peer-python", "none", "--json", str(path)]
        )  # fmt: skip
    finally:
        del sys.modules[spec.name]
    assert [row["batch_size"] for row in results] == [1, 2]
    for row in results:
        assert row["greedy_tokens_per_s"] > 0 and row["ours_tokens_per_s"] > 0
        assert row["ours_vs_greedy"] == row["ours_tokens_per_s"] / row["greedy_tokens_per_s"]
        assert row["ours_vs_floor"] == row["ours_tokens_per_s"] / row["floor_tokens_per_s"] > 0
    assert [json.loads(line) for line in path.read_text().splitlines()] == results
    assert "| tiny | 1 |" in capsys.readouterr().out
