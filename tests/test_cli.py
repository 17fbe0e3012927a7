"""The `hf-contrastive` CLI: accelerate commands per shipped config, config name errors, evaluate/card/configs."""

import shlex
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from hf_contrastive.cli import (
    ACCELERATE_CONFIGS_DIR,
    RECIPE_MODULE,
    available_accelerate_configs,
    launch_command,
    main,
)

from .conftest import make_tiny_encoder

QUICKSTART = str(Path(__file__).parents[1] / "recipes" / "configs" / "quickstart.yaml")
SHIPPED = ["cpu_ddp", "deepspeed_zero2", "fsdp", "multi_gpu", "single_gpu"]


def dry_run(capsys, *argv: str) -> list[str]:
    assert main(["train", *argv, "--dry_run"]) == 0
    return shlex.split(capsys.readouterr().out)


def test_shipped_configs_are_listed_and_valid_accelerate_files():
    assert available_accelerate_configs() == SHIPPED
    for name in SHIPPED:
        config = ClusterConfig.from_yaml_file(ACCELERATE_CONFIGS_DIR / f"{name}.yaml")
        assert config.num_machines == 1 and config.mixed_precision == "no"


def test_cpu_ddp_starts_two_processes_with_the_multi_gpu_launcher():
    # `use_cpu: true` (= accelerate launch --cpu) would start a single process: the recipe sets use_cpu itself.
    values = yaml.safe_load((ACCELERATE_CONFIGS_DIR / "cpu_ddp.yaml").read_text())
    assert (values["distributed_type"], values["num_processes"], values["use_cpu"]) == ("MULTI_GPU", 2, False)


@pytest.mark.parametrize("name", SHIPPED)
def test_dry_run_prints_accelerate_launch_with_the_named_config(capsys, name):
    command = dry_run(capsys, QUICKSTART, "--accelerate_config", name, "--max_steps", "3", "--seed", "7")
    launch = command.index("launch")
    assert command[launch:] == [
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIGS_DIR / f"{name}.yaml"),
        "-m",
        RECIPE_MODULE,
        QUICKSTART,
        "--max_steps",
        "3",
        "--seed",
        "7",
    ]
    assert command[launch - 1].endswith("accelerate") or command[launch - 1] == "accelerate.commands.accelerate_cli"


def test_num_processes_is_passed_to_accelerate(capsys):
    command = dry_run(capsys, QUICKSTART, "--accelerate_config", "fsdp", "--num_processes", "4")
    assert command[command.index("--config_file") + 2 : command.index("-m")] == ["--num_processes", "4"]


def test_num_processes_alone_uses_the_multi_gpu_config():
    command = launch_command(QUICKSTART, num_processes=2)
    assert command[command.index("--config_file") + 1] == str(ACCELERATE_CONFIGS_DIR / "multi_gpu.yaml")


def test_without_accelerate_config_train_runs_the_recipe_module(capsys):
    command = dry_run(capsys, QUICKSTART, "--learning_rate", "1e-4")
    assert command[1:] == ["-m", RECIPE_MODULE, QUICKSTART, "--learning_rate", "1e-4"]
    assert "launch" not in command


def test_accelerate_config_path_is_used_as_is(capsys, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("distributed_type: MULTI_GPU\nnum_processes: 3\n")
    command = dry_run(capsys, QUICKSTART, "--accelerate_config", str(path))
    assert command[command.index("--config_file") + 1] == str(path)


def test_unknown_accelerate_config_name_is_rejected_with_the_available_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", QUICKSTART, "--accelerate_config", "zero9", "--dry_run"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Unknown accelerate config 'zero9'" in error
    assert all(name in error for name in SHIPPED)


def test_other_commands_reject_unknown_flags():
    with pytest.raises(SystemExit):
        main(["configs", "--max_steps", "3"])


def test_configs_command_lists_every_shipped_config(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED


def test_card_prints_the_saved_readme(capsys, tmp_path):
    (tmp_path / "README.md").write_text("---\nlibrary_name: hf_contrastive\n---\n# my model\n")
    assert main(["card", str(tmp_path)]) == 0
    assert "# my model" in capsys.readouterr().out


def test_card_without_readme_fails_with_a_hint(capsys, tmp_path):
    assert main(["card", str(tmp_path)]) == 1
    assert "No model card" in capsys.readouterr().err


def test_evaluate_prints_the_sts_correlations_of_a_saved_model(capsys, tmp_path):
    from hf_contrastive.data import make_sts_dataset
    from hf_contrastive.evaluation import STSEvaluator
    from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
    from hf_contrastive.scripts.train_embeddings import SYNTHETIC_STS_SEED

    sentences1, sentences2, scores = make_sts_dataset(60, seed=SYNTHETIC_STS_SEED)
    tokenizer = train_wordpiece_tokenizer(sentences1 + sentences2, vocab_size=300, model_max_length=48)
    model = make_tiny_encoder(len(tokenizer)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = STSEvaluator(sentences1, sentences2, scores, name="sts_synthetic")(
        lambda texts: model.encode(texts, tokenizer)
    )

    assert main(["evaluate", str(tmp_path), "--sts", "synthetic", "--max_pairs", "60"]) == 0
    printed = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    assert printed == {key: f"{value:.4f}" for key, value in expected.items()}
