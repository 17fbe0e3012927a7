import json

import datasets
import pytest

from hf_contrastive.data import load_contrastive_dataset, validate_contrastive_columns

ROWS = [{"anchor": "a dog runs", "positive": "a hound sprints"}, {"anchor": "rain falls", "positive": "it pours"}]


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_round_trip(tmp_path, cache):
    _write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    dataset = load_contrastive_dataset(str(tmp_path / "pairs.jsonl"), cache_dir=cache)
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.to_list() == ROWS


def test_json_array_file(tmp_path, cache):
    (tmp_path / "pairs.json").write_text(json.dumps(ROWS), encoding="utf-8")
    assert load_contrastive_dataset(str(tmp_path / "pairs.json"), cache_dir=cache).to_list() == ROWS


def test_csv_tsv_and_parquet(tmp_path, cache):
    (tmp_path / "pairs.csv").write_text("anchor,positive\na dog runs,a hound sprints\nrain falls,it pours\n")
    (tmp_path / "pairs.tsv").write_text("anchor\tpositive\na dog runs\ta hound sprints\nrain falls\tit pours\n")
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "pairs.parquet"))
    for name in ("pairs.csv", "pairs.tsv", "pairs.parquet"):
        assert load_contrastive_dataset(str(tmp_path / name), cache_dir=cache).to_list() == ROWS, name


def test_txt_is_one_text_per_non_blank_line(tmp_path):
    (tmp_path / "corpus.txt").write_text("first line\n\n   \nsecond line\r\nthird\n", encoding="utf-8")
    dataset = load_contrastive_dataset(str(tmp_path / "corpus.txt"))
    assert dataset.column_names == ["text"]
    assert dataset["text"][:] == ["first line", "second line", "third"]


def test_directory_prefers_files_named_for_the_split(tmp_path, cache):
    _write_jsonl(tmp_path / "train.jsonl", ROWS)
    _write_jsonl(tmp_path / "test.jsonl", ROWS[:1])
    assert len(load_contrastive_dataset(str(tmp_path), cache_dir=cache)) == 2
    assert len(load_contrastive_dataset(str(tmp_path), split="test", cache_dir=cache)) == 1
    assert len(load_contrastive_dataset(str(tmp_path), data_files=["test.jsonl"], cache_dir=cache)) == 1


def test_directory_without_split_names_reads_all_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("three\n")
    assert load_contrastive_dataset(str(tmp_path))["text"][:] == ["one", "two", "three"]


def test_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No .*files in directory"):
        load_contrastive_dataset(str(tmp_path))
    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / "b.csv").write_text("text\ntwo\n")
    with pytest.raises(ValueError, match="different formats"):
        load_contrastive_dataset(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_files not found"):
        load_contrastive_dataset(str(tmp_path), data_files="missing.jsonl")


@pytest.mark.parametrize("name", ["missing.jsonl", "./data", "/no/such/dir", "data/sub/dir", "corpus.TXT"])
def test_missing_path_raises_file_not_found_instead_of_querying_the_hub(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub must not be queried for a path")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        load_contrastive_dataset(name)


def test_hub_ids_go_to_datasets_load_dataset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or datasets.Dataset.from_list(ROWS)
    )
    load_contrastive_dataset("sentence-transformers/all-nli", split="dev", data_files=None, revision="main")
    assert calls == [(("sentence-transformers/all-nli",), {"split": "dev", "data_files": None, "revision": "main"})]


def test_text_column_hint_renames_to_text(tmp_path, cache):
    _write_jsonl(tmp_path / "wiki.jsonl", [{"sentence": "one"}, {"sentence": "two"}])
    dataset = load_contrastive_dataset(str(tmp_path / "wiki.jsonl"), text_column_hint="sentence", cache_dir=cache)
    assert dataset.column_names == ["text"]
    with pytest.raises(ValueError, match=r"'body' is not a column; the dataset has \['sentence'\]"):
        load_contrastive_dataset(str(tmp_path / "wiki.jsonl"), text_column_hint="body", cache_dir=cache)


def test_validate_names_missing_column_and_lists_found():
    dataset = datasets.Dataset.from_list(ROWS)
    validate_contrastive_columns(dataset, ["anchor", "positive"])
    with pytest.raises(
        ValueError,
        match=r"Missing text column\(s\) \['negative_1'\]; the dataset has columns \['anchor', 'positive'\]",
    ):
        validate_contrastive_columns(dataset, ["anchor", "positive", "negative_1"])


@pytest.mark.parametrize("bad", ["", "  ", None])
def test_validate_names_the_row_of_blank_text(bad):
    dataset = datasets.Dataset.from_list([*ROWS, {"anchor": "ok", "positive": bad}])
    with pytest.raises(ValueError, match=r"Column 'positive', row 2"):
        validate_contrastive_columns(dataset, ["anchor", "positive"])


def test_validate_checks_only_the_sample():
    dataset = datasets.Dataset.from_list([*ROWS, {"anchor": "ok", "positive": ""}])
    validate_contrastive_columns(dataset, ["anchor", "positive"], sample_size=2)
