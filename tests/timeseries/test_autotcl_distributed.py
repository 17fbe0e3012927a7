"""AutoTCL (arXiv 2402.10434) over 2 ranks x B series == 1 process x 2B series, for the loss and for the trainer.

The global InfoNCE gathers every rank's views with gradient, so it must be the one process's exactly. Two terms are
per rank by design, and the reference evaluates them per half of its batch (``autotcl_worker.PerRank*``): the local
InfoNCE of each rank's first series, and the augmenter's loss, whose gradients the trainer averages over ranks by hand.
"""

from functools import partial

import pytest
import torch

from hf_contrastive import distributed
from hf_contrastive.objectives.autotcl import AutoTCLAugmenterLoss, AutoTCLEncoderLoss

from ..objectives.distributed_objective import assert_two_processes_match_one
from ..trainers.distributed_check import torchrun
from .autotcl_worker import SEGMENTS, STEPS, STEPS_PER_SERIES, PerRankEncoderLoss, run

PER_DEVICE_BATCH = 4


def series_embeddings(rows: int = 2 * PER_DEVICE_BATCH, dims: int = 5) -> dict[str, torch.Tensor]:
    """Per-step representations of 2B series and of their views, [2B, T, D] in float64 (fixed seed).

    T = 2 x 16 segments: the local InfoNCE's window is the whole series, so its random start is 0 on every rank.
    """
    generator = torch.Generator().manual_seed(0)
    shape = (rows, STEPS_PER_SERIES, dims)
    original = torch.randn(shape, generator=generator, dtype=torch.float64)
    view = original + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)
    return {"original": original, "view": view}


@pytest.mark.parametrize("local_weight", [0.0, 0.3], ids=["global_infonce_only", "with_the_per_rank_local_term"])
def test_encoder_loss_over_two_ranks_matches_one_process(tmp_path, local_weight):
    """Mean of the ranks' losses and every row's gradient (/W, as DDP averages) equal one process's on 2B rows.

    The ranks run ``AutoTCLEncoderLoss``; the one process runs it too when there is no local term, else its per-rank
    reading (the local InfoNCE averaged over the first series of each half).
    """

    def make_objective():
        options = {"local_weight": local_weight, "local_segments": SEGMENTS}
        if distributed.is_distributed() or local_weight == 0:
            return AutoTCLEncoderLoss(**options)
        return PerRankEncoderLoss(2, **options)

    batch = {"labels": torch.arange(2 * PER_DEVICE_BATCH)}
    assert_two_processes_match_one(tmp_path, make_objective, series_embeddings(), batch)


def test_adversarial_augmenter_loss_over_two_ranks_matches_one_process(tmp_path):
    """The adversarial augmenter loss (-global InfoNCE) contrasts every rank's views, like the encoder loss it opposes."""
    batch = {"labels": torch.arange(2 * PER_DEVICE_BATCH)}
    make_objective = partial(AutoTCLAugmenterLoss, mode="adversarial")
    assert_two_processes_match_one(tmp_path, make_objective, series_embeddings(), batch)


@pytest.fixture(scope="module")
def two_ranks_and_one_process(tmp_path_factory) -> tuple[list[dict], dict]:
    """Every rank's results of the 2-process run (B = 4 series each) and the 1-process reference's (2B = 8)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torchrun("tests.timeseries.autotcl_worker", str(out_dir), str(PER_DEVICE_BATCH))
    ranks = [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]
    single = run(2 * PER_DEVICE_BATCH, str(tmp_path_factory.mktemp("single")), per_rank_terms=2)
    return ranks, single


def assert_tensors_close(got: dict, expected: dict, where: str) -> None:
    assert got.keys() == expected.keys(), where
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=1e-5, msg=f"{where} {name}")


def test_alternating_steps_on_two_ranks_match_one_process(two_ranks_and_one_process):
    """Three steps, each an augmenter then an encoder update: on each rank, the logged loss, the augmenter's gradients
    (averaged over ranks by the trainer), the encoder's (averaged by DDP) and the final averaged encoder equal the
    one process's."""
    ranks, expected = two_ranks_and_one_process
    assert expected["world_size"] == 1 and len(expected["steps"]) == STEPS
    for step in expected["steps"]:  # both updates ran, and each network's gradients are its own
        assert all(name.startswith("augmenter.") for name in step["augmenter"])
        assert step["encoder"] and all(name.startswith("encoder.") for name in step["encoder"])
        assert any(gradient.abs().sum() > 0 for gradient in step["augmenter"].values())
    for rank, got in enumerate(ranks):
        assert got["world_size"] == 2 and len(got["steps"]) == STEPS
        for step, (state, reference) in enumerate(zip(got["steps"], expected["steps"])):
            for network in ("augmenter", "encoder"):
                assert_tensors_close(state[network], reference[network], f"rank {rank} step {step} {network}")
        assert_tensors_close(got["averaged_encoder"], expected["averaged_encoder"], f"rank {rank} averaged encoder")
        assert got["losses"] == pytest.approx(expected["losses"], rel=1e-6), f"rank {rank}"
