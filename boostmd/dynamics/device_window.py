"""A window's surrogate steps integrated where the models run, without host round trips.

:class:`~boostmd.dynamics.integrator.BoostLangevin` otherwise takes every step through ASE: the
positions go to the model's device, the forces come back to numpy, every step. Within a
window the surrogate's frame is fixed, so its steps need nothing from the host but the
random numbers, which are drawn for the whole window at once from the integrator's own
generator, in ASE's order. :func:`integrate_window` then runs the steps of ASE's
Langevin (:mod:`ase.md.langevin`, without constraints or ``fixcm``) in float64 tensors on
the device, operation for operation as ASE writes them::

    v   = p / m
    v  += c1 F / m - c2 v + (c3 xi - c4 eta)
    x'  = x + dt v + c5 eta
    v   = (x' - x - c5 eta) / dt
    F'  = F_sur(x')                           (the model's dtype; forces back in float64)
    v  += c1 F' / m - c2 v + (c3 xi - c4 eta)
    p'  = v m

with, for :class:`~boostmd.dynamics.integrator.BoostLangevin`'s adaptive friction, its half steps
before and after (:func:`boostmd.dynamics.adaptive.friction_half_step`, the function the host
steps use), and hands back the whole path in one copy. On a CPU the path is ASE's bit for bit; on a
GPU the same arithmetic in another order of kernels can differ in the last bits.

On a CUDA device the step is captured once per window as a CUDA graph
(:class:`torch.cuda.CUDAGraph`) and replayed for each step, so a step is one graph launch
instead of dozens of kernel launches; if capturing fails, the steps run eagerly (with a
warning, once). On a CPU they always run eagerly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from boostmd.dynamics.adaptive import friction_half_step
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate

__all__ = ["LangevinCoefficients", "WindowPath", "integrate_window"]

logger = logging.getLogger(__name__)

_capture_failed_logged = False


@dataclass(frozen=True)
class LangevinCoefficients:
    """ASE Langevin's step coefficients (``Langevin.updatevars``) and masses, as arrays.

    ``c3``, ``c4``, ``c5``, ``masses`` and the adaptive friction's ``kinetic_target``
    (``3 kB T``) and ``inverse_mu`` (``1 / mu``, zero without one:
    :class:`~boostmd.dynamics.adaptive.AdaptiveLangevin`) have shape ``(n, 1)``; ``c1``, ``c2``
    and ``dt`` are numbers.
    """

    dt: float
    c1: float
    c2: float
    c3: np.ndarray
    c4: np.ndarray
    c5: np.ndarray
    masses: np.ndarray
    kinetic_target: np.ndarray
    inverse_mu: np.ndarray

    @classmethod
    def of(cls, dynamics) -> LangevinCoefficients:
        """Read the coefficients of an :class:`ase.md.langevin.Langevin` integrator."""
        shape = dynamics.masses.shape
        return cls(
            dynamics.dt,
            dynamics.c1,
            dynamics.c2,
            *(
                np.array(np.broadcast_to(getattr(dynamics, name, np.zeros(shape)), shape))
                for name in _PER_ATOM
            ),
        )

    @property
    def step_key(self) -> tuple[float, float, float]:
        """What systems integrated together must share: ``dt``, ``c1`` and ``c2``."""
        return self.dt, self.c1, self.c2

    @classmethod
    def concatenate(cls, parts: list[LangevinCoefficients]) -> LangevinCoefficients:
        """Join the coefficients of several systems (which must share ``step_key``)."""
        if len({part.step_key for part in parts}) != 1:
            raise ValueError("systems integrated together need the same timestep and friction")
        return cls(
            *parts[0].step_key,
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _PER_ATOM),
        )


_PER_ATOM = ("c3", "c4", "c5", "masses", "kinetic_target", "inverse_mu")


@dataclass(frozen=True)
class WindowPath:
    """Positions, momenta, surrogate energies, forces and adaptive frictions after each step.

    Float64; shapes ``(steps, n, 3)``, ``(steps, graphs)`` for the energies and
    ``(steps, n)`` for the adaptive friction ``xi``.
    """

    positions: np.ndarray
    momenta: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    xi: np.ndarray


class _Step:
    """One Langevin step with the surrogate's forces, on tensors it owns (the graph's)."""

    def __init__(self, surrogate, frame, scale, coefficients, positions, momenta, forces, xi):
        device = positions.device
        as64 = {"dtype": torch.float64, "device": device}
        self.surrogate, self.frame, self.scale = surrogate, frame, scale
        self.dtype = surrogate.feature_in.weight.dtype
        self.dt, self.c1, self.c2 = coefficients.dt, coefficients.c1, coefficients.c2
        self.c3, self.c4, self.c5, self.masses, self.kinetic_target, self.inverse_mu = (
            torch.as_tensor(getattr(coefficients, name), **as64) for name in _PER_ATOM
        )
        self.adaptive = bool(np.any(coefficients.inverse_mu))
        self.x, self.p, self.forces = positions.clone(), momenta.clone(), forces.clone()
        self.friction = xi.clone()
        self.xi = torch.zeros_like(self.x)
        self.eta = torch.zeros_like(self.x)
        self.energy = torch.zeros(frame.num_graphs, **as64)

    def _friction_half_step(self, p, friction, first):
        if not self.adaptive:
            return p, friction
        constants = self.masses, self.kinetic_target, self.inverse_mu, self.dt / 2, torch.exp
        return friction_half_step(p, friction, *constants, first)

    def __call__(self) -> None:
        c1, c2, masses = self.c1, self.c2, self.masses
        rnd_pos = self.c5 * self.eta
        rnd_vel = self.c3 * self.xi - self.c4 * self.eta
        p, friction = self._friction_half_step(self.p, self.friction, True)
        v = p / masses
        v = v + (c1 * self.forces / masses - c2 * v + rnd_vel)
        x = self.x + self.dt * v + rnd_pos
        v = (x - self.x - rnd_pos) / self.dt
        energy, forces, _ = self.surrogate.evaluate(self.frame, x.to(self.dtype), self.scale)
        forces = forces.to(torch.float64)
        v = v + (c1 * forces / masses - c2 * v + rnd_vel)
        p, friction = self._friction_half_step(v * masses, friction, False)
        self.x.copy_(x)
        self.p.copy_(p)
        self.friction.copy_(friction)
        self.forces.copy_(forces)
        self.energy.copy_(energy.to(torch.float64))


def _captured(step: _Step):
    """Return a callable that replays ``step`` as a CUDA graph (``None`` if it fails)."""
    global _capture_failed_logged
    state = [t.clone() for t in (step.x, step.p, step.forces, step.friction)]
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up on a side stream, as torch.cuda.graphs asks
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as error:
        if not _capture_failed_logged:
            _capture_failed_logged = True
            logger.warning("could not capture the surrogate step (%s); running it eagerly", error)
        return None
    finally:  # the warm-up and capture moved the state: put it back
        for tensor, saved in zip((step.x, step.p, step.forces, step.friction), state):
            tensor.copy_(saved)
    return graph.replay


def integrate_window(
    surrogate: Surrogate,
    frame: ReferenceFrame,
    scale: float | torch.Tensor,
    coefficients: LangevinCoefficients,
    positions: np.ndarray,
    momenta: np.ndarray,
    forces: np.ndarray,
    xi: np.ndarray,
    noise: np.ndarray,
) -> WindowPath:
    """Run ``len(noise)`` Langevin steps with the surrogate on its device.

    Parameters
    ----------
    surrogate, frame, scale
        The surrogate, the window's frame (of one or several graphs) and the curvature
        scale (one, or one per graph).
    coefficients
        The Langevin integrator's coefficients.
    positions, momenta, forces, xi
        The state before the first step (forces at ``positions``), shape ``(n, 3)``, and
        the adaptive friction, shape ``(n,)``.
    noise
        ``xi`` and ``eta`` of each step, shape ``(steps, 2, n, 3)``, drawn as ASE draws them.
    """
    device = surrogate.feature_in.weight.device
    as64 = {"dtype": torch.float64, "device": device}
    step = _Step(
        surrogate,
        frame,
        scale,
        coefficients,
        torch.as_tensor(positions, **as64),
        torch.as_tensor(momenta, **as64),
        torch.as_tensor(forces, **as64),
        torch.as_tensor(xi, **as64).reshape(-1, 1),
    )
    noise = torch.as_tensor(noise, **as64)
    run = _captured(step) if device.type == "cuda" else None
    run = run or step
    path = [], [], [], [], []
    for xi, eta in noise:
        step.xi.copy_(xi)
        step.eta.copy_(eta)
        run()
        for values, tensor in zip(path, (step.x, step.p, step.energy, step.forces, step.friction)):
            values.append(tensor.clone())
    positions, momenta, energies, forces, friction = (
        torch.stack(values).cpu().numpy() for values in path
    )
    return WindowPath(positions, momenta, energies, forces, friction[..., 0])
