"""The SimCSE / DebCSE / WhitenedCSE comparison table is built from the runs' own all_results.json."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "compare_sentence_objectives.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_sentence_objectives", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root: Path, name: str, before: float, after: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    key = "sts-dev_spearman_cosine"
    (folder / "all_results.json").write_text(json.dumps({f"before_{key}": before, f"eval_{key}": after}))


def test_table_averages_seeds_and_marks_missing_runs(tmp_path):
    compare = load_script()
    write_run(tmp_path, "simcse-unsup-s1", 0.80, 0.85)
    write_run(tmp_path, "simcse-unsup-s2", 0.80, 0.87)
    write_run(tmp_path, "debcse-s1", 0.80, 0.90)
    rows = compare.table(tmp_path, [1, 2]).splitlines()
    assert rows[2] == "| SimCSE | 2 | 0.8000 | 0.8600 | 1: 0.8500, 2: 0.8700 |"
    assert rows[3] == "| DebCSE | 1 | 0.8000 | 0.9000 | 1: 0.9000 |"
    assert rows[4] == "| WhitenedCSE | - | - | not run | - |"
