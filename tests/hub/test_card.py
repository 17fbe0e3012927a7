"""The model card: metadata the Hub reads, sections a practitioner reads, and a usage snippet that runs."""

import contextlib
import dataclasses
import io
import re

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import TrainingArguments

from hf_contrastive.hub import (
    HF_CONTRASTIVE_CITATION,
    CardEvalResult,
    ContrastiveCardData,
    build_model_card,
    dataset_statistics,
    framework_versions,
    split_non_default_args,
)
from tests import conftest

BIBTEX = "@inproceedings{gao2021simcse,\n  title = {SimCSE},\n  year = {2021}\n}"
FACTS = {
    "world_size": 2,
    "per_device_batch": 64,
    "global_batch": 128,
    "effective_negatives_per_anchor": 127,
    "temperature": 0.05,
    "gradient_cache": True,
    "cache_token_budget": 4096,
    "sampler": "no_duplicates",
}


@dataclasses.dataclass
class _SubclassedArgs(TrainingArguments):
    temperature: float = 0.05
    learning_rate: float = 1e-4  # the subclass's own default


def full_card_data(tmp_path) -> ContrastiveCardData:
    return ContrastiveCardData(
        objective="info_nce",
        paper="https://arxiv.org/abs/2104.08821v4",
        repo_id="me/simcse-tiny",
        base_model="prajjwal1/bert-tiny",
        datasets=["sentence-transformers/stsb", str(tmp_path)],
        license="apache-2.0",
        language="en",
        tags=["simcse", "hf_contrastive"],
        objective_config={"temperature": 0.05, "symmetric": False},
        model_details={"embedding_dim": 128, "pooling": "mean"},
        dataset_stats={
            "rows": 5749,
            "columns": ["anchor", "positive"],
            "sampled_rows": 1000,
            "length_unit": "tokens",
            "lengths": {"anchor": {"min": 3, "mean": 12.5, "max": 40}},
        },
        contrastive_facts=FACTS,
        training_args=TrainingArguments(
            output_dir=str(tmp_path / "out"), learning_rate=3e-5, warmup_steps=10, hub_token="hf_secret"
        ),
        eval_results=[
            CardEvalResult(
                "STS Benchmark",
                "sentence-transformers/stsb",
                "spearman_cosine",
                0.8123,
                before=0.6101,
                dataset_split="validation",
                metric_name="Spearman (cosine)",
            ),
            CardEvalResult(
                "STS Benchmark",
                "sentence-transformers/stsb",
                "pearson_cosine",
                0.8001,
                before=0.5507,
                dataset_split="validation",
            ),
            CardEvalResult("SICK-R", "mteb/sickr-sts", "spearman_cosine", 0.7312, dataset_split="test"),
        ],
        training_summary={"final train loss": 0.412, "steps": 500},
        citations=[BIBTEX],
    )


def split_card(text: str) -> tuple[dict, str]:
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_front_matter_parses_and_carries_the_hub_fields(tmp_path):
    metadata, _ = split_card(str(build_model_card(full_card_data(tmp_path))))
    assert metadata["library_name"] == "hf_contrastive"
    assert metadata["pipeline_tag"] == "sentence-similarity"
    assert metadata["license"] == "apache-2.0" and metadata["language"] == "en"
    assert metadata["base_model"] == "prajjwal1/bert-tiny"
    assert metadata["datasets"] == ["sentence-transformers/stsb"]  # the local folder is not a Hub dataset
    assert metadata["tags"] == [
        "hf_contrastive",
        "contrastive-learning",
        "sentence-similarity",
        "info_nce",
        "arxiv:2104.08821",
        "simcse",
    ]


def test_model_index_carries_the_evaluation_values(tmp_path):
    metadata, _ = split_card(str(build_model_card(full_card_data(tmp_path))))
    (index,) = metadata["model-index"]
    assert index["name"] == "simcse-tiny"
    stsb, sick = index["results"]
    assert stsb["dataset"] == {"name": "STS Benchmark", "type": "sentence-transformers/stsb", "split": "validation"}
    assert stsb["task"]["type"] == "semantic-similarity"
    assert [(m["type"], m["value"]) for m in stsb["metrics"]] == [
        ("spearman_cosine", 0.8123),
        ("pearson_cosine", 0.8001),
    ]
    assert [(m["type"], m["value"]) for m in sick["metrics"]] == [("spearman_cosine", 0.7312)]
    # and huggingface_hub reads it back
    reread = ModelCard(str(build_model_card(full_card_data(tmp_path)))).data.eval_results
    assert [r.metric_value for r in reread] == [0.8123, 0.8001, 0.7312]


def test_evaluation_table_shows_before_after_and_change(tmp_path):
    _, body = split_card(str(build_model_card(full_card_data(tmp_path))))
    assert "| Dataset | Split | Metric | Before | After | Change |" in body
    assert "| STS Benchmark | validation | Spearman (cosine) | 0.6101 | 0.8123 | +0.2022 |" in body
    assert "| SICK-R | test | spearman_cosine |  | 0.7312 |  |" in body


def test_non_default_hyperparameters_come_before_the_collapsed_defaults(tmp_path):
    _, body = split_card(str(build_model_card(full_card_data(tmp_path))))
    changed = body.index("- `learning_rate`: 3e-05")
    assert body.index("- `warmup_steps`: 10") < body.index("<details>")
    assert (
        changed < body.index("<details><summary>") < body.index("- `num_train_epochs`: 3.0") < body.index("</details>")
    )
    assert "hf_secret" not in body and "<HUB_TOKEN>" not in body and "output_dir" not in body


def test_split_non_default_args_compares_with_the_same_class_defaults(tmp_path):
    non_default, default = split_non_default_args(
        TrainingArguments(output_dir=str(tmp_path), learning_rate=3e-5, hub_token="hf_secret", run_name="r1")
    )
    assert non_default == {"learning_rate": 3e-5}
    assert default["num_train_epochs"] == 3.0 and "output_dir" not in default and "hub_token" not in default

    non_default, default = split_non_default_args(_SubclassedArgs(output_dir=str(tmp_path), temperature=0.1))
    assert non_default == {"temperature": 0.1}
    assert default["learning_rate"] == 1e-4


def test_usage_snippet_names_the_repo_and_runs_on_a_saved_encoder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "model"
    conftest.make_tiny_encoder(len(tiny_tokenizer)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    card = build_model_card(ContrastiveCardData(objective="info_nce", repo_id=str(folder)))
    assert 'from_pretrained("me/simcse-tiny")' in str(build_model_card(full_card_data(tmp_path)))

    (snippet,) = re.findall(r"```python\n(.*?)```", str(card), flags=re.DOTALL)
    assert f'AutoModel.from_pretrained("{folder}")' in snippet
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(snippet, {})
    assert output.getvalue().startswith("torch.Size([3, 32]) tensor([")


def test_contrastive_facts_training_data_and_log_sections(tmp_path):
    _, body = split_card(str(build_model_card(full_card_data(tmp_path))))
    assert "| Global batch (rows per step, all processes) | 128 |" in body
    assert "| Effective negatives per anchor | 127 |" in body
    assert "| Gradient cache | on |" in body and "| Cache token budget (tokens per mini-batch) | 4096 |" in body
    assert "- Rows: 5,749" in body and "| `anchor` | 3 | 12.5 | 40 |" in body
    assert "| final train loss | 0.412 |" in body
    assert '"temperature": 0.05' in body  # the objective's config
    assert "[arXiv:2104.08821](https://arxiv.org/abs/2104.08821)" in body


def test_citations_list_the_objective_then_the_library(tmp_path):
    _, body = split_card(str(build_model_card(full_card_data(tmp_path))))
    citation = body[body.index("## Citation") :]
    assert citation.index(BIBTEX) < citation.index(HF_CONTRASTIVE_CITATION)


def test_framework_versions_are_listed(tmp_path):
    versions = framework_versions()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"python", "hf_contrastive", "transformers", "huggingface_hub"} <= set(versions)
    _, body = split_card(str(build_model_card(full_card_data(tmp_path))))
    assert f"- transformers: {versions['transformers']}" in body


def test_rendering_is_deterministic(tmp_path):
    assert str(build_model_card(full_card_data(tmp_path))) == str(build_model_card(full_card_data(tmp_path)))


def test_minimal_card_omits_empty_sections():
    metadata, body = split_card(str(build_model_card(ContrastiveCardData(objective="info_nce"))))
    assert "model-index" not in metadata and "base_model" not in metadata
    for heading in ("## Evaluation", "## Training details", "### Hyperparameters", "### Training log"):
        assert heading not in body
    assert "## Usage" in body and "## Citation" in body


def test_dataset_statistics_counts_words_or_tokens(tiny_tokenizer):
    rows = [
        {"anchor": "the cat sat", "positive": "a cat is sitting on the mat", "score": 1.0},
        {"anchor": "rain falls", "positive": "it rains", "score": 0.5},
        {"anchor": "stocks rose after the report", "positive": "markets went up", "score": 0.9},
    ]
    stats = dataset_statistics(rows)
    assert stats["rows"] == 3 and stats["columns"] == ["anchor", "positive", "score"]
    assert stats["length_unit"] == "words"
    assert stats["lengths"] == {
        "anchor": {"min": 2, "mean": round(10 / 3, 2), "max": 5},
        "positive": {"min": 2, "mean": round(12 / 3, 2), "max": 7},
    }
    tokens = dataset_statistics(rows, text_columns=["anchor"], tokenizer=tiny_tokenizer, max_rows=2)
    expected = [len(tiny_tokenizer(row["anchor"])["input_ids"]) for row in rows[:2]]
    assert tokens["sampled_rows"] == 2 and tokens["length_unit"] == "tokens"
    assert tokens["lengths"]["anchor"] == {"min": min(expected), "mean": sum(expected) / 2, "max": max(expected)}


def test_dataset_statistics_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match="empty"):
        dataset_statistics([])
