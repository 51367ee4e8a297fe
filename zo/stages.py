"""A model as a sequence of stages: staged forwards, stage costs, frozen statistics.

Feature reuse needs to know where a forward pass can restart. A model is split into
*stages* ``s_0 .. s_{L-1}`` whose composition is the model: ``nn.Sequential`` models use
their children, and any model may declare its own split with a ``stages()`` method
returning the modules in order (a stage may pass a tuple on to the next one, as the
residual blocks of :class:`zo.models.ResNet20` do). Every trainable parameter must belong
to exactly one stage.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "check_stages",
    "frozen_running_stats",
    "locate_parameters",
    "model_stages",
    "run_stages",
    "stage_costs",
    "stage_inputs",
    "stage_times",
    "state_numel",
]

logger = logging.getLogger(__name__)


def model_stages(model: nn.Module) -> list[nn.Module]:
    """Return the stages of ``model``: its ``stages()``, its children, or the model itself.

    A model with a ``stages()`` method is split as it declares; an ``nn.Sequential`` is
    split into its children; any other model is a single stage (no reuse possible).
    """
    declared = getattr(model, "stages", None)
    if callable(declared):
        stages = list(declared())
    elif isinstance(model, nn.Sequential):
        stages = list(model)
    else:
        logger.info(
            "%s declares no stages(); it runs as one stage, so feature reuse saves nothing",
            type(model).__name__,
        )
        stages = [model]
    if not stages:
        raise ValueError(f"{type(model).__name__} has no stages")
    for index, stage in enumerate(stages):
        if not isinstance(stage, nn.Module):
            raise TypeError(f"stage {index} is a {type(stage).__name__}, not an nn.Module")
    return stages


def locate_parameters(model: nn.Module, stages: Sequence[nn.Module]) -> dict[str, tuple[int, str]]:
    """Map each trainable parameter name of ``model`` to ``(stage index, name in the stage)``.

    Raises
    ------
    ValueError
        If a trainable parameter is in no stage, or in more than one.
    """
    by_id: dict[int, tuple[int, str]] = {}
    for index, stage in enumerate(stages):
        for local_name, parameter in stage.named_parameters():
            if id(parameter) in by_id and by_id[id(parameter)][0] != index:
                raise ValueError(
                    f"parameter {local_name} of stage {index} is shared with stage "
                    f"{by_id[id(parameter)][0]}; feature reuse needs each parameter in one stage"
                )
            by_id.setdefault(id(parameter), (index, local_name))
    located = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) not in by_id:
            raise ValueError(
                f"trainable parameter {name} is in none of the {len(stages)} stages of "
                f"{type(model).__name__}; its stages() must cover every trainable parameter"
            )
        located[name] = by_id[id(parameter)]
    return located


def run_stages(stages: Sequence[nn.Module], state: Any, start: int = 0) -> Any:
    """Run ``stages[start:]`` in order on ``state`` and return the last output."""
    for stage in stages[start:]:
        state = stage(state)
    return state


def stage_inputs(stages: Sequence[nn.Module], inputs: Any) -> list[Any]:
    """Run all stages; return each stage's input, then the final output (``L + 1`` items)."""
    states = [inputs]
    for stage in stages:
        states.append(stage(states[-1]))
    return states


def state_numel(state: Any) -> int:
    """Count the tensor elements of a stage state (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(state, torch.Tensor):
        return state.numel()
    if isinstance(state, (tuple, list)):
        return sum(state_numel(item) for item in state)
    if isinstance(state, dict):
        return sum(state_numel(item) for item in state.values())
    return 0


def stage_costs(stages: Sequence[nn.Module], inputs: Any) -> list[float]:
    """Cost of each stage on ``inputs``: FLOPs of its matrix products plus its output size.

    Counted, not timed: a device-independent profile (:func:`stage_times` measures).
    Normalisation statistics are not updated.

    Returns
    -------
    list of float
        One cost per stage, in stage order.
    """
    costs = []
    state = inputs
    with torch.no_grad(), frozen_running_stats(stages):
        for stage in stages:
            with FlopCounterMode(display=False) as counter:
                state = stage(state)
            costs.append(float(counter.get_total_flops() + state_numel(state)))
    return costs


def stage_times(
    stages: Sequence[nn.Module], states: Sequence[Any], repeats: int = 3
) -> list[float]:
    """Median wall time in seconds of each stage on its input, over ``repeats`` runs.

    Parameters
    ----------
    stages
        The stages, in order.
    states
        Their inputs, as :func:`stage_inputs` returns them (the final output is ignored).
    repeats
        Runs per stage.
    """
    device = states[0].device if isinstance(states[0], torch.Tensor) else None
    synchronize = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
    times = []
    with torch.no_grad(), frozen_running_stats(stages):
        for stage, state in zip(stages, states):
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                stage(state)
                if synchronize is not None:
                    synchronize(device)
                runs.append(time.perf_counter() - start)
            times.append(statistics.median(runs))
    return times


@contextmanager
def frozen_running_stats(modules: nn.Module | Sequence[nn.Module]) -> Iterator[None]:
    """Within the block, normalisation layers in training mode leave their running stats.

    They still normalise with the statistics of the batch, as in training, so perturbed
    forwards see the same normalisation as the unperturbed one but do not move the
    running averages (nor ``num_batches_tracked``).
    """
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    frozen = [
        module
        for root in roots
        for module in root.modules()
        if module.training and getattr(module, "track_running_stats", False)
    ]
    for module in frozen:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in frozen:
            module.track_running_stats = True


def check_stages(model: nn.Module, inputs: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert that running the stages of ``model`` in order equals ``model(inputs)``.

    Also checks that the stages cover every trainable parameter exactly once. Running
    statistics are not updated.

    Raises
    ------
    AssertionError
        If the staged output differs from the model's output.
    ValueError
        If a trainable parameter is in no stage or in several.
    """
    stages = model_stages(model)
    locate_parameters(model, stages)
    with torch.no_grad(), frozen_running_stats(model):
        expected = model(inputs)
        staged = run_stages(stages, inputs)
    if not isinstance(staged, torch.Tensor) or staged.shape != expected.shape:
        raise AssertionError(
            f"the stages of {type(model).__name__} end in "
            f"{getattr(staged, 'shape', type(staged).__name__)}, the model returns "
            f"{tuple(expected.shape)}"
        )
    if not torch.allclose(staged, expected, rtol=rtol, atol=atol):
        difference = float((staged - expected).abs().max())
        raise AssertionError(
            f"the stages of {type(model).__name__} do not compose to the model: "
            f"largest difference {difference:.3g}"
        )
