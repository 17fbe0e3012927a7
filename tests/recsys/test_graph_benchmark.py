"""Smoke test of ``benchmarks/graph_rec.py``: both contenders train LightGCN and XSimGCL and agree on the graph."""

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "graph_rec.py"


def test_both_contenders_report_positive_numbers_and_the_same_propagation(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_graph_rec", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        path = tmp_path / "results.jsonl"
        argv = ["--dataset", "synthetic", "--max-steps", "2", "--isolation", "none", "--json", str(path)]
        results = module.main(argv)
    finally:
        del sys.modules[spec.name]
    assert [(r["model"], r["contender"]) for r in results] == [
        ("lightgcn", "reference"),
        ("lightgcn", "ours"),
        ("xsimgcl", "reference"),
        ("xsimgcl", "ours"),
    ]
    assert all(r["epoch_s"] > 0 and r["triples_per_s"] > 0 for r in results)
    assert all(r["max_abs_diff"] <= 1e-4 for r in results)  # the clean propagations agree before training
    assert [json.loads(line) for line in path.read_text().splitlines()] == results
    assert "| xsimgcl |" in capsys.readouterr().out
