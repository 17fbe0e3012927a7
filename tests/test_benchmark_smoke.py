"""Smoke tests of ``benchmarks/embeddings.py``: every contender runs, reports positive numbers, on the same model."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "embeddings.py"
SMALLEST = [
    "--batch-size", "4", "--cached-batch-size", "4", "--mini-batch-size", "2", "--token-budget", "48",
    "--forward-token-budget", "48", "--min-len", "4", "--max-len", "12", "--steps", "1", "--warmup", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench_module():
    spec = importlib.util.spec_from_file_location("benchmark_embeddings", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def bench(bench_module, tmp_path):
    """The smallest benchmark setting, run in this process (no fork)."""
    args = bench_module.parse_args([*SMALLEST, "--isolation", "none"])
    tokenizer = bench_module.build_tokenizer(args.seed)
    bench = bench_module.Bench(args, tmp_path / "checkpoint", tokenizer, bench_module.make_batches(args, tokenizer))
    bench_module.build_checkpoint(bench)
    return bench


def test_every_contender_reports_positive_numbers(bench_module, tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    results = bench_module.main([*SMALLEST, "--json", str(path)])
    output = capsys.readouterr().out

    assert sorted(r["contender"] for r in results) == sorted(bench_module.CONTENDERS)
    for result in results:
        assert result["pairs_per_s"] > 0 and result["real_tokens_per_s"] > 0, result
        assert result["peak_memory_bytes"] > 0 and result["memory_method"] == "cpu_peak_rss_in_forked_child"
        assert result["forward_tokens_per_real_token"] >= 1.0
        assert result["embedding_max_abs_diff"] < 1e-4
        assert result["contender"] in output
    by_name = {r["contender"]: r for r in results}
    assert by_name["ours_packed"]["forward_tokens_per_real_token"] == 1.0  # no padding at all
    # 8 rows of 4..12 tokens under a 48-token budget: several length-sorted chunks, less padding than one forward.
    assert by_name["ours_uncached"]["forward_token_budget"] == 48
    assert by_name["ours_padded"]["forward_token_budget"] == 0
    padded, chunked = (by_name[name]["forward_tokens_per_real_token"] for name in ("ours_padded", "ours_uncached"))
    assert 1.0 <= chunked < padded
    assert by_name["ours_cached"]["cache_token_budget"] == 48 and by_name["ours_packed"]["unpad_inputs"]
    assert by_name["st_mnrl"]["vs_st_mnrl"] == 1.0
    assert "same model check" in output and "tokenization EXCLUDED" in output
    assert [json.loads(line)["contender"] for line in path.read_text().splitlines()] == [
        r["contender"] for r in results
    ]


def test_same_model_check_passes_on_shared_weights_and_fails_otherwise(bench_module, bench, monkeypatch):
    rows = bench.batches[4][0]
    assert bench_module.check_same_model(bench, rows) < 1e-5

    load_ours = bench_module.load_ours

    def perturbed(bench):
        model = load_ours(bench)
        weight = model.backbone.embeddings.word_embeddings.weight
        with torch.no_grad():  # noise, not a constant shift: the embedding LayerNorm would remove that
            weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
        return model

    monkeypatch.setattr(bench_module, "load_ours", perturbed)
    with pytest.raises(RuntimeError, match="not the same weights"):
        bench_module.check_same_model(bench, rows)


def test_budgets_default_to_the_library_and_are_printed(bench_module):
    args = bench_module.parse_args(["--contenders", "ours_uncached,ours_cached"])
    assert args.forward_token_budget is None and args.token_budget is None  # left to the trainer

    text = bench_module.budget_text(args)

    assert "ours_uncached forward chunks 1024 tokens (library default on cpu)" in text
    assert "ours_cached mini-batches 1024 tokens (library default on cpu)" in text
    assert "forward chunks 2048 tokens (--forward-token-budget)" in bench_module.budget_text(
        bench_module.parse_args(["--forward-token-budget", "2048"])
    )
