"""One check for every objective: 2 processes x batch B == 1 process x batch 2B (gloo on CPU).

Call :func:`assert_distributed_matches_single` from an objective's test with a scenario (see ``ddp_worker``). Under
DDP gradients are compared at every optimizer step; under FSDP (sharded gradients) the logged losses of three steps
are compared, which differ as soon as one update does.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .ddp_worker import MODES, SHARDED, run

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_training_args(config_class, output_dir: str, per_device_batch: int, max_steps: int = 3, **overrides):
    """``config_class`` (a TrainingArguments subclass) for a 2-process check's worker: plain SGD at lr 0.1 (Adam's first
    step is lr * sign(g): it would magnify float noise in near-zero gradients), a log every step, no saving, CPU,
    seed 0, and gloo when torchrun started more than one process."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    options = {
        "output_dir": output_dir,
        "per_device_train_batch_size": per_device_batch,
        "max_steps": max_steps,
        "learning_rate": 0.1,
        "optim": "sgd",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        "ddp_backend": "gloo" if distributed else None,
    }
    return config_class(**{**options, **overrides})


def torchrun(worker_module: str, *arguments: str, processes: int = 2) -> None:
    """``torchrun --nproc_per_node 2 -m worker_module ARGUMENTS...`` from the repository root (gloo, 1 thread each);
    fails the test with the workers' stderr when they fail."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_port", str(free_port()), "-m", worker_module, *arguments,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def run_two_processes(worker_module: str, tmp_path: Path, tokenizer, scenario: dict, per_device_batch: int) -> dict:
    """``torchrun --nproc_per_node 2 -m worker_module TOKENIZER_DIR OUT_FILE BATCH SCENARIO``; rank 0's results."""
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    out_file = tmp_path / "ddp.pt"
    torchrun(worker_module, str(tmp_path / "tokenizer"), str(out_file), str(per_device_batch), json.dumps(scenario))
    return torch.load(out_file)


def assert_distributed_matches_single(tmp_path: Path, tokenizer, scenario: dict, per_device_batch: int = 4) -> None:
    distributed = run_two_processes("tests.trainers.ddp_worker", tmp_path, tokenizer, scenario, per_device_batch)
    single = run(str(tmp_path / "tokenizer"), 2 * per_device_batch, str(tmp_path / "single"), scenario)

    for mode in scenario.get("modes", list(MODES)):
        assert distributed[mode]["world_size"] == 2 and single[mode]["world_size"] == 1
        assert distributed[mode]["losses"] == pytest.approx(single[mode]["losses"], rel=1e-6, abs=1e-5), mode
        if mode in SHARDED:
            continue
        assert len(distributed[mode]["gradients"]) == len(single[mode]["gradients"]) == 3
        for step, (got, expected) in enumerate(zip(distributed[mode]["gradients"], single[mode]["gradients"])):
            assert got.keys() == expected.keys()
            for name in expected:
                torch.testing.assert_close(
                    got[name], expected[name], atol=1e-5, rtol=1e-4, msg=f"{mode} step {step} {name}"
                )
