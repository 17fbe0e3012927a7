"""2 gloo processes x B rows == 1 process x 2B rows for an objective called directly on embedding tensors.

The objective-level check (no trainer, no model): each forked rank runs the objective on its rows of every column,
with the gathers of :mod:`hf_contrastive.distributed` live, and saves its local loss and the gradient of its rows.
The trainer-level check (model gradients through DDP) is ``tests.vision.multimodal_worker``.
"""

import pytest
import torch


def _rank_loss_and_gradients(rank, world, port, make_objective, embeddings, batch, out):
    """One gloo rank: the objective on its rows of every column; saves (loss, {column: gradient of its rows})."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = len(batch["labels"]) // world
    local = {k: v[rank * rows : (rank + 1) * rows].clone().requires_grad_() for k, v in embeddings.items()}
    local_batch = {"labels": batch["labels"][rank * rows : (rank + 1) * rows]}
    loss = make_objective()(local, local_batch).loss
    loss.backward()
    torch.save((loss.detach(), {k: v.grad for k, v in local.items()}), f"{out}.{rank}")
    dist.destroy_process_group()


def assert_two_processes_match_one(tmp_path, make_objective, embeddings, batch):
    """2 gloo processes x B rows == 1 process x 2B rows: the mean of the local losses and, once DDP averages over
    the ranks, the gradient of every embedding row (each rank's row gradient / W)."""
    import torch.multiprocessing as mp

    from ..trainers.distributed_check import free_port

    mp.start_processes(
        _rank_loss_and_gradients,
        args=(2, free_port(), make_objective, embeddings, batch, tmp_path / "rank"),
        nprocs=2,
        start_method="fork",
    )
    results = [torch.load(tmp_path / f"rank.{rank}") for rank in range(2)]
    single = {k: v.clone().requires_grad_() for k, v in embeddings.items()}
    loss = make_objective()(single, batch).loss
    loss.backward()
    assert torch.stack([r[0] for r in results]).mean().item() == pytest.approx(loss.item(), rel=1e-9)
    for column, leaf in single.items():
        distributed = torch.cat([r[1][column] for r in results]) / 2
        torch.testing.assert_close(distributed, leaf.grad, rtol=1e-9, atol=1e-12)
