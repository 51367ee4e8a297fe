"""Coordinatewise gradient estimation (CGE) with feature reuse and batched queries.

    g_i = (l(theta + h_i e_i) - l(theta)) / h_i,    h_i = (theta_i + mu) - theta_i

==========  ==================================================================
symbol      variable
==========  ==================================================================
theta       the model's trainable parameters (flattened per parameter)
e_i         the unit vector of coordinate ``i``
mu          ``mu``; ``h_i`` is the step actually taken in floating point
l           ``loss_fn(model(inputs), targets)``
==========  ==================================================================

*Feature reuse*: perturbing a parameter of stage ``k`` changes nothing before stage
``k``, so the unperturbed forward keeps every stage's input and each query restarts at
the stage of its coordinate. *Batched queries*: one call evaluates ``query_batch``
perturbed copies of a stage (``torch.func.vmap`` over ``functional_call``) and carries
them through the later stages together. *Processes*: under ``torchrun`` the coordinates
are split among the ranks so that each has the same cost (a query restarting at stage
``k`` costs the stages from ``k`` on, timed once per input shape), and the estimates
are summed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call, vmap

from zo.estimator import GradientEstimator, LossFn
from zo.parallel import group_rank_and_size, owners_by_cost, sum_over_group
from zo.sparsity import SparseMask
from zo.stages import (
    frozen_running_stats,
    locate_parameters,
    model_stages,
    run_stages,
    stage_inputs,
    stage_times,
    state_numel,
)
from zo.tuning import QueryBatchTuner, device_clock, largest_query_batch

__all__ = ["CGE"]


class CGE(GradientEstimator):
    """Coordinatewise forward-difference gradient estimator.

    Parameters
    ----------
    model
        Any ``nn.Module``; for feature reuse an ``nn.Sequential`` or a model with a
        ``stages()`` method (see :mod:`zo.stages`). Randomness in the forward (dropout)
        would swamp the differences: use a deterministic forward.
    loss_fn
        ``loss_fn(outputs, targets) -> scalar``; with ``query_batch > 1`` it must work
        under ``torch.func.vmap`` (``cross_entropy`` and ``mse_loss`` do).
    mu
        Forward-difference step.
    feature_reuse
        Restart each query at its stage from the cached stage input. Without reuse the
        stages before the perturbed one are recomputed for every query (for every batch
        of queries when batched).
    sparsity
        None for all coordinates; a fraction of each weight's coordinates to skip; a
        fraction per weight name (from :func:`zo.zo_grasp`); or a :class:`SparseMask`.
        Biases and normalisation parameters are always estimated. The mask is in
        :attr:`mask`; re-draw it with ``mask.redraw(seed)``.
    query_batch
        Perturbed copies evaluated per call; 1 evaluates queries one at a time in place.
        None measures: per parameter and input shape the first query chunks are timed
        at sizes 1, 2, 4, ... and the fastest is kept (:mod:`zo.tuning`; the choices are in
        :attr:`query_batches`).
    seed
        Seeds the first draw of the sparse mask.
    group
        Process group whose ranks split the coordinates (default: the whole run when
        ``torch.distributed`` is initialised).

    Notes
    -----
    Normalisation layers in training mode normalise every query with its own batch
    statistics; only the unperturbed forward updates the running statistics, once per
    estimate, as a training step would. Parameters are restored from saved values, so
    they are bit-identical after :meth:`estimate`.

    Examples
    --------
    >>> import torch
    >>> import zo
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> estimator = zo.CGE(model, torch.nn.functional.cross_entropy, mu=1e-3)
    >>> loss = estimator.estimate(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]))
    >>> estimator.queries  # one per coordinate: 3 * 4 + 4 + 4 * 2 + 2
    26
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        mu: float = 5e-3,
        feature_reuse: bool = True,
        sparsity: float | Mapping[str, float] | SparseMask | None = None,
        query_batch: int | None = None,
        seed: int = 0,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(model, loss_fn)
        if not mu > 0:
            raise ValueError(f"mu must be positive, got {mu}")
        if query_batch is not None and query_batch < 1:
            raise ValueError(f"query_batch must be at least 1 or None, got {query_batch}")
        self.mu = mu
        self.feature_reuse = feature_reuse
        self.query_batch = query_batch
        self.group = group
        self.stages = model_stages(model)
        self._where = locate_parameters(model, self.stages)
        self.mask = self._make_mask(sparsity, seed)
        self._costs: dict[tuple, list[float]] = {}
        self._tuner = QueryBatchTuner()

    def _make_mask(
        self, sparsity: float | Mapping[str, float] | SparseMask | None, seed: int
    ) -> SparseMask | None:
        if sparsity is None or isinstance(sparsity, SparseMask):
            mask = sparsity
        else:
            mask = SparseMask.for_model(self.model, sparsity, seed)
        if mask is not None:
            sizes = {name: p.numel() for name, p in self.trainable.items()}
            if mask.numels != sizes:
                raise ValueError("the SparseMask was made for parameters other than the model's")
        return mask

    def estimate(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Add the CGE estimate to ``p.grad``; return the unperturbed loss."""
        self.queries = 0
        with torch.no_grad():
            states = stage_inputs(self.stages, inputs)
            loss = self.loss_fn(states[-1], targets)
            gradient = {name: torch.zeros_like(p) for name, p in self.trainable.items()}
            with frozen_running_stats(self.stages):
                for name, indices in self._share(states):
                    self._query_all(name, indices, states, targets, loss, gradient[name])
        sum_over_group(gradient, self.group)
        self._accumulate(gradient)
        return loss

    def _query_all(
        self,
        name: str,
        indices: torch.Tensor,
        states: list,
        targets: torch.Tensor,
        loss: torch.Tensor,
        gradient: torch.Tensor,
    ) -> None:
        """Write the forward differences of coordinates ``indices`` of ``name``."""
        stage = self._where[name][0]
        key = (name, tuple(states[0].shape), states[0].dtype, states[0].device)
        largest = min(largest_query_batch(state_numel(states[stage])), len(indices))
        clock = device_clock(loss.device)
        start = 0
        while start < len(indices):
            size = self.query_batch or self._tuner.size(key, largest)
            measuring = self.query_batch is None and self._tuner.measuring(key)
            chunk = indices[start : start + size]
            began = clock() if measuring else 0.0
            query = self._batched if size > 1 else self._one_by_one
            losses, steps = query(name, chunk, states, targets)
            gradient.view(-1)[chunk] = (losses - loss) / steps
            if measuring:
                self._tuner.record(key, size, clock() - began, len(chunk))
            self.queries += len(chunk)
            start += len(chunk)

    @property
    def query_batch_settled(self) -> bool:
        """Whether no query batch is still measured (fixed, or decided for all seen)."""
        return self.query_batch is not None or self._tuner.settled

    @property
    def query_batches(self) -> dict[tuple, int]:
        """Query batch chosen so far per ``(parameter name, input shape, dtype, device)``."""
        return self._tuner.chosen

    def _coordinates(self) -> list[tuple[str, torch.Tensor]]:
        names = sorted(self.trainable, key=lambda name: self._where[name][0])
        device = next(iter(self.trainable.values())).device
        return [
            (
                name,
                (
                    self.mask.indices[name]
                    if self.mask is not None
                    else torch.arange(self.trainable[name].numel())
                ).to(device),
            )
            for name in names
        ]

    def _share(self, states: list) -> list[tuple[str, torch.Tensor]]:
        """Return this process's coordinates: all, or a cost-balanced part under torchrun."""
        coordinates = self._coordinates()
        rank, size = group_rank_and_size(self.group)
        if size == 1:
            return coordinates
        restart = self.restart_costs(states)
        costs = torch.cat(
            [
                torch.full((len(indices),), restart[self._where[name][0]], dtype=torch.float64)
                for name, indices in coordinates
            ]
        )
        owners = owners_by_cost(costs, size).split([len(i) for _, i in coordinates])
        return [
            (name, indices[owner.to(indices.device) == rank])
            for (name, indices), owner in zip(coordinates, owners)
        ]

    def restart_costs(self, states: list) -> list[float]:
        """Cost of one query per stage it restarts at (all stages without feature reuse).

        Stage times are measured once per input shape (:func:`zo.stages.stage_times`)
        and summed over the processes, so that all of them split the work alike.

        Parameters
        ----------
        states
            The stage inputs of the unperturbed forward (:func:`zo.stages.stage_inputs`).
        """
        inputs = states[0]
        key = (tuple(inputs.shape), inputs.dtype, inputs.device)
        if key not in self._costs:
            times = torch.tensor(
                stage_times(self.stages, states), dtype=torch.float64, device=inputs.device
            )
            sum_over_group({"times": times}, self.group)
            self._costs[key] = times.tolist()
        costs = self._costs[key]
        if not self.feature_reuse:
            return [sum(costs)] * len(costs)
        return [sum(costs[k:]) for k in range(len(costs))]

    def _values(self, name: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the saved and the perturbed values of coordinates ``indices`` of ``name``."""
        old = self.trainable[name].detach().view(-1)[indices]
        return old, old + self.mu

    def _start(self, stage: int, states: list) -> object:
        if self.feature_reuse:
            return states[stage]
        return run_stages(self.stages[:stage], states[0])

    def _one_by_one(
        self, name: str, indices: torch.Tensor, states: list, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturb each coordinate in place, run from its stage, restore the saved value."""
        stage, _ = self._where[name]
        flat = self.trainable[name].detach().view(-1)
        old, new = self._values(name, indices)
        losses = torch.empty_like(new)
        for j, i in enumerate(indices.tolist()):
            flat[i] = new[j]
            try:
                outputs = run_stages(self.stages, self._start(stage, states), stage)
                losses[j] = self.loss_fn(outputs, targets)
            finally:
                flat[i] = old[j]
        return losses, new - old

    def _batched(
        self, name: str, indices: torch.Tensor, states: list, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate ``len(indices)`` perturbed copies of the stage in one vmapped call."""
        stage, local = self._where[name]
        base = self.trainable[name].detach()
        old, new = self._values(name, indices)
        copies = base.expand(len(indices), *base.shape).clone()
        rows = torch.arange(len(indices), device=base.device)
        copies.view(len(indices), -1)[rows, indices] = new
        module = self.stages[stage]

        def perturbed_stage(weight: torch.Tensor, state: object) -> object:
            return functional_call(module, {local: weight}, (state,))

        state = vmap(perturbed_stage, in_dims=(0, None))(copies, self._start(stage, states))
        for later in self.stages[stage + 1 :]:
            state = vmap(later)(state)
        return vmap(self.loss_fn, in_dims=(0, None))(state, targets), new - old

    def __repr__(self) -> str:
        return (
            f"CGE(mu={self.mu}, feature_reuse={self.feature_reuse}, "
            f"query_batch={self.query_batch}, stages={len(self.stages)}, mask={self.mask!r})"
        )
