"""Smoke test of ``benchmarks/superedit_step.py``: both contenders train the tiny pipeline and report positive numbers."""

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "superedit_step.py"


def test_both_contenders_report_positive_numbers(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_superedit_step", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        path = tmp_path / "results.jsonl"
        argv = ["--batch-size", "2", "--steps", "1", "--warmup", "0", "--isolation", "none", "--json", str(path)]
        results = module.main(argv)
    finally:
        del sys.modules[spec.name]
    assert [r["contender"] for r in results] == ["instruct_pix2pix", "superedit"]
    assert all(r["samples_per_s"] > 0 for r in results)
    assert [json.loads(line) for line in path.read_text().splitlines()] == results
    assert "| tiny | 2 |" in capsys.readouterr().out
