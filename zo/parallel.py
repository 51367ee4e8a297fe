"""Forward parallelization across processes: who evaluates which queries, and the gather.

Every process sees the same batch and the same parameters and computes the unperturbed
forward itself; the perturbed queries are split among the processes, each fills its
share of the gradient (zeros elsewhere), and a sum over processes assembles the
estimate. Launch with ``torchrun``; gloo serves CPUs and NCCL serves GPUs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
import torch.distributed as dist

__all__ = ["group_rank_and_size", "init_from_environment", "owners_by_cost", "sum_over_group"]

logger = logging.getLogger(__name__)


def group_rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Rank of this process in ``group`` (default: the whole run) and the group's size.

    ``(0, 1)`` when no process group is initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def owners_by_cost(costs: torch.Tensor, parts: int) -> torch.Tensor:
    """Assign consecutive items to ``parts`` processes so that each gets an equal cost.

    Parameters
    ----------
    costs
        Cost of each item, shape ``(n,)``, non-negative.
    parts
        Number of processes.

    Returns
    -------
    torch.Tensor
        The owning process of each item, shape ``(n,)``, non-decreasing. An item belongs
        to the process whose share of the total cost holds the item's midpoint.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    costs = costs.to(torch.float64)
    total = float(costs.sum())
    if parts == 1 or total <= 0.0:
        return torch.zeros(costs.numel(), dtype=torch.long)
    midpoints = torch.cumsum(costs, 0) - costs / 2
    return (midpoints * (parts / total)).floor().long().clamp_(0, parts - 1)


def sum_over_group(
    tensors: Mapping[str, torch.Tensor], group: dist.ProcessGroup | None = None
) -> None:
    """Sum each tensor in place over the processes of ``group``, in one collective.

    A no-op for a single process.
    """
    if group_rank_and_size(group)[1] == 1:
        return
    values = list(tensors.values())
    flat = torch.cat([value.reshape(-1) for value in values])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    for value, chunk in zip(values, flat.split([value.numel() for value in values])):
        value.copy_(chunk.view_as(value))


def init_from_environment(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Uses NCCL for CUDA devices and gloo otherwise. Does nothing for a single process
    (``WORLD_SIZE`` unset or 1) or when a group already exists.

    Returns
    -------
    bool
        True if this call initialised the process group (so the caller should destroy it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    logger.info(
        "process %d of %d joined the %s group", dist.get_rank(), dist.get_world_size(), backend
    )
    return True
