"""The only module that touches ``torch.distributed``: gathers with gradients and rank offsets.

Layout contract for gathered candidates (ST #3453 trained anchors toward hard negatives by getting this wrong):
every column is gathered *separately*, so a gathered column is ``[rank0 rows | rank1 rows | ...]`` and the
candidate matrix of an in-batch loss is ``cat([positive_all, negative_1_all, ..., negative_k_all])``::

    candidates = [ P(r0) P(r1) ... | N1(r0) N1(r1) ... | ... | Nk(r0) Nk(r1) ... ]
                   <-- W*B rows --> <--   W*B rows   -->       <--  W*B rows  -->

The positive of local anchor ``i`` on rank ``r`` is candidate ``r * B + i``: a *local* loss (local anchors
against global candidates) with that label offset has exactly the gradient of the single-process loss on the
global batch once DDP averages gradients over ranks, because the autograd-aware gather sums the gradients that
every rank sends back to each gathered row (see ``gather_with_grad``).

Outside a distributed run every helper is the identity, so objectives never branch on it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._compat import autograd_all_gather


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` [B, ...] from every rank into [W*B, ...], differentiable.

    Backward sums the incoming gradients over ranks and returns this rank's slice (a reduce-scatter), which
    is what makes the local loss exact. Uses the functional collective (see ``_compat.autograd_all_gather``) and makes the
    input contiguous first (pytorch #120386 dropped gradients of non-contiguous buffers). Every rank must pass
    the same ``B``.
    """
    if not is_distributed():
        return tensor
    return autograd_all_gather()(tensor.contiguous())


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` [B, ...] into [W*B, ...] for values that need no gradient (hashes, labels)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def collective_device() -> torch.device:
    """The device a collective's tensors must live on: CUDA for NCCL, the CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_offset(local_batch_size: int) -> int:
    """Index of this rank's first row inside a gathered column: ``rank * B``."""
    return rank() * local_batch_size


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks without gradient (for counts used in logging)."""
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
