"""Smoke test of ``benchmarks/clip_loss.py``: both contenders train the same tiny CLIP and report positive numbers."""

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "clip_loss.py"


def test_both_contenders_report_positive_numbers(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_clip_loss", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        path = tmp_path / "results.jsonl"
        argv = ["--sizes", "tiny", "--batch-size", "8", "--steps", "1", "--warmup", "0", "--json", str(path)]
        results = module.main(argv)
    finally:
        del sys.modules[spec.name]
    assert [r["contender"] for r in results][1] == "ours"
    assert results[0]["contender"] in ("open_clip", "reference")
    assert all(r["images_per_s"] > 0 for r in results)
    assert [json.loads(line) for line in path.read_text().splitlines()] == results
    assert "| tiny |" in capsys.readouterr().out
