"""2 ranks x B windows == 1 process x 2B windows for the MoCo forecaster (arXiv 2306.12086), over three steps.

Under DDP every rank enqueues the keys of all ranks (gathered without gradient), rank 0's then rank 1's, so the
queue, its pointer and hence the next steps' negatives, losses and gradients must be those of one process that sees
the whole global batch; the momentum encoder follows the DDP-averaged weights on every rank alike.
"""

import pytest
import torch

from ..trainers.distributed_check import torchrun
from .ts_forecasting_worker import STEPS, run

PER_DEVICE_BATCH = 4


@pytest.fixture(scope="module")
def two_ranks_and_one_process(tmp_path_factory) -> tuple[list[dict], dict]:
    """Every rank's results of the 2-process run (B = 4 windows each) and the 1-process run's (2B = 8)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torchrun("tests.timeseries.ts_forecasting_worker", str(out_dir), str(PER_DEVICE_BATCH))
    ranks = [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]
    return ranks, run(2 * PER_DEVICE_BATCH, str(tmp_path_factory.mktemp("single")))


@pytest.mark.parametrize(
    ("queue_size", "pointers"),
    [(16, [8, 0, 8]), (12, [8, 4, 0])],
    ids=["queue_a_multiple_of_the_global_batch", "queue_wrapping_inside_a_global_batch"],
)
def test_two_ranks_with_b_windows_match_one_process_with_2b(two_ranks_and_one_process, queue_size, pointers):
    """Per step: the logged loss and its terms, every gradient, the queue (keys of rank 0 then rank 1, in the single process's order,
    wrapping at K alike), its pointer and the momentum encoder, on each rank."""
    ranks, single = two_ranks_and_one_process
    expected = single[queue_size]
    assert expected["world_size"] == 1 and len(expected["steps"]) == STEPS
    assert [step["queue_ptr"] for step in expected["steps"]] == pointers  # the pointer advances by the global batch
    for rank, results in enumerate(ranks):
        got = results[queue_size]
        assert got["world_size"] == 2 and len(got["steps"]) == STEPS
        for step, (logged, reference) in enumerate(zip(got["losses"], expected["losses"], strict=True)):
            assert logged.keys() == reference.keys() == {"loss", "loss_mse", "loss_contrastive"}
            # the terms are logged at 4 decimals
            assert logged == pytest.approx(reference, rel=1e-6, abs=1e-4), f"rank {rank} step {step}"
        for step, (state, reference) in enumerate(zip(got["steps"], expected["steps"])):
            where = f"rank {rank} step {step}"
            assert state["queue_ptr"] == reference["queue_ptr"], where
            torch.testing.assert_close(state["queue"], reference["queue"], atol=1e-6, rtol=1e-5, msg=where)
            for group in ("gradients", "momentum_encoder"):
                assert state[group].keys() == reference[group].keys(), where
                for name, value in reference[group].items():
                    torch.testing.assert_close(
                        state[group][name], value, atol=1e-6, rtol=1e-5, msg=f"{where} {group} {name}"
                    )
