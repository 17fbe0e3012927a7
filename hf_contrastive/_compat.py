"""Version shims, kept in one place."""

from __future__ import annotations

from collections.abc import Callable

import torch


def autograd_all_gather() -> Callable[[torch.Tensor], torch.Tensor]:
    """The newest differentiable all-gather along dim 0 this torch offers (no DTensor: pytorch #153016).

    torch >= 2.13 renamed ``all_gather_tensor_autograd`` to ``all_gather_single_autograd``; older releases only
    have the former; ``torch.distributed.nn.all_gather`` is the last resort (deprecated, returns a tuple).
    """
    import torch.distributed as dist
    import torch.distributed._functional_collectives as collectives

    for name in ("all_gather_single_autograd", "all_gather_tensor_autograd"):
        gather = getattr(collectives, name, None)
        if gather is not None:
            return lambda tensor: gather(tensor, gather_dim=0, group=dist.group.WORLD)

    import torch.distributed.nn

    return lambda tensor: torch.cat(torch.distributed.nn.all_gather(tensor), dim=0)


def cache_forward_argument(model) -> str:
    """The name of a model's KV-cache argument: transformers renamed ``past_key_values`` to ``cache`` during 5.x."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
