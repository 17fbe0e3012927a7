"""SeqRecTrainer (CL4SRec) and MCLRecTrainer (MCLRec): 2 ranks x B sequences == 1 process x 2B, trained end to end."""

import pytest
import torch

from ..trainers.distributed_check import torchrun
from .seq_rec_worker import run


def test_two_processes_with_b_sequences_match_one_process_with_2b(tmp_path):
    """3 steps: the losses and every parameter gradient at every update (MCLRec: encoder, augmenters, encoder) equal
    the single process's, so the gathered views and DDP's all-reduce of encoder *and* augmenter gradients are exact."""
    out_file = tmp_path / "ddp.pt"
    torchrun("tests.recsys.seq_rec_worker", str(out_file), "4")
    distributed, single = torch.load(out_file), run(8, str(tmp_path / "single"))
    updates_per_step = {"cl4srec": 1, "mclrec": 3}
    for name, expected in single.items():
        got = distributed[name]
        assert got["world_size"] == 2 and expected["world_size"] == 1
        assert len(got["gradients"]) == len(expected["gradients"]) == 3 * updates_per_step[name]
        for update, (grads, reference) in enumerate(zip(got["gradients"], expected["gradients"])):
            assert grads.keys() == reference.keys()
            for parameter, expected_grad in reference.items():
                # float32 error scales with the largest entry: the augmenters' output is L2-normalised from a tiny
                # norm at init, so their last layer's gradients reach ~1e4 while some entries are ~1e-2.
                scale = max(1.0, expected_grad.abs().max().item())
                torch.testing.assert_close(
                    grads[parameter], expected_grad, atol=1e-6 * scale, rtol=1e-5, msg=f"{name} {update} {parameter}"
                )
        for step, (logged, reference) in enumerate(zip(got["losses"], expected["losses"], strict=True)):
            assert logged.keys() == reference.keys() and len(reference) > 5, f"{name} step {step}"
            # the objective's terms are logged at 4 decimals
            assert logged == pytest.approx(reference, rel=1e-6, abs=1e-4), f"{name} step {step}"
