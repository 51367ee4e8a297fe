"""Claim: a surrogate window whose curvature is off along a vibration pumps or damps it.

Within a BoostMD window the forces come from an expansion about the window's first frame
``x0``: exact energy and force at ``x0``, learned curvature after. For one harmonic mode
(reference curvature ``k``, surrogate ``k (1 - eps)``, ``eps > 0`` too soft) the window's
force is ``-k x0 - k (1 - eps) (x - x0)``: it depends on where the window started. The map
from a window's start to its end is then not area-preserving: its Jacobian determinant
is ``1 + d (1 - cos(w' T))`` with ``d = eps / (1 - eps)``, ``w'`` the surrogate's
frequency and ``T`` the window's length. A too-soft mode gains phase-space area (energy)
at the rate ``r = ln(det) / T``, a too-stiff one loses it, window after window, and
Langevin friction ``gamma`` only holds a mode whose ``|r| < gamma``; its temperature
settles near ``T_bath gamma / (gamma - r)``. The energy-consistent refresh of
``BoostLangevin`` fixes the *total* energy at each refresh, not how it is shared out, so
the pumped modes run hot and the damped ones cold (equipartition fails).

This script integrates one mode with velocity Verlet exactly as BoostMD does (reference
force at the window's first and last step, surrogate in between), measures the window
map's determinant, and prints the rates for typical dipeptide vibrations (X-H stretch
about 11 fs, bends about 25 fs, torsions and skeletal modes about 60 fs) and window
lengths, and the curvature accuracy ``|eps|`` at which the rate stays under a tenth of the
friction (10% temperature error). Then it runs Langevin dynamics of the mode with both
frame placements of ``BoostMDCalculator`` and reports the kinetic temperature over the
bath's: ``start`` (the frame at the window's first step) and ``centred`` (the frame at the
window's time centre, ``(N - 1) / 2`` steps on, predicted with the ending window's
surrogate), for curvature errors ``+eps`` and ``-eps``. Prints one JSON line.

    python benchmarks/window_pumping.py
"""

import argparse
import json

import numpy as np


def window_map(period_fs: float, eps: float, steps: int, timestep_fs: float = 1.0) -> np.ndarray:
    """The linear map (x, p) -> (x, p) of one window of ``steps`` velocity-Verlet steps."""
    curvature = (2 * np.pi / period_fs) ** 2
    surrogate = curvature * (1 - eps)
    columns = []
    for x, p in ((1.0, 0.0), (0.0, 1.0)):
        x0, force = x, -curvature * x
        for step in range(steps):
            p += 0.5 * timestep_fs * force
            x += timestep_fs * p
            last = step == steps - 1  # the next reference call
            force = -curvature * x if last else -curvature * x0 - surrogate * (x - x0)
            p += 0.5 * timestep_fs * force
        columns.append((x, p))
    return np.array(columns).T


def rate_per_ps(period_fs: float, eps: float, steps: int) -> float:
    """Growth rate of the mode's phase-space area (energy), per ps."""
    return float(np.log(np.linalg.det(window_map(period_fs, eps, steps))) / steps * 1000)


def predicted_determinant(period_fs: float, eps: float, steps: int) -> float:
    """``1 + d (1 - cos(w' T))``, the continuous-time determinant."""
    frequency = 2 * np.pi / period_fs * np.sqrt(1 - eps)
    return float(1 + eps / (1 - eps) * (1 - np.cos(frequency * steps)))


def temperature_ratio(
    period_fs: float,
    eps: float,
    steps: int,
    frame: str,
    friction_per_ps: float,
    length: int,
    seed: int = 0,
) -> float:
    """Mean kinetic energy over ``kT`` of one mode under windowed Langevin dynamics (OBABO).

    Unit mass and ``kT = 1``; the window's surrogate is the expansion about its frame
    ``y`` with curvature ``k (1 - eps)``. Returns ``inf`` if the mode runs away.
    """
    rng = np.random.default_rng(seed)
    curvature = (2 * np.pi / period_fs) ** 2
    surrogate = curvature * (1 - eps)
    damping = np.exp(-friction_per_ps / 1000 / 2)
    noise = np.sqrt(1 - damping**2)
    ahead = (steps - 1) / 2

    def force(x, y):
        return -curvature * y - surrogate * (x - y)

    def predict(x, p, y):
        path, f = [x], force(x, y)
        for _ in range(int(np.ceil(ahead))):
            p += 0.5 * f
            x += p
            f = force(x, y)
            p += 0.5 * f
            path.append(x)
        low = int(np.floor(ahead))
        return path[low] + (ahead - low) * (path[min(low + 1, len(path) - 1)] - path[low])

    x, p = 0.0, rng.normal()
    y = x
    f = force(x, y)
    kinetic = np.empty(length)
    for step in range(length):
        p = damping * p + noise * rng.normal()
        p += 0.5 * f
        x += p
        if (step + 1) % steps == 0:  # the reference call: a new frame
            y = x if frame == "start" else predict(x, p + 0.5 * force(x, y), y)
        f = force(x, y)
        p += 0.5 * f
        p = damping * p + noise * rng.normal()
        kinetic[step] = p * p
        if not np.isfinite(p) or abs(p) > 1e6:
            return float("inf")
    return float(kinetic[length // 5 :].mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.02, help="relative curvature error")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--periods", type=float, nargs="+", default=[11.0, 25.0, 60.0], help="fs")
    parser.add_argument("--intervals", type=int, nargs="+", default=[3, 5, 10, 20])
    parser.add_argument(
        "--length", type=int, default=600_000, help="steps of each Langevin run (1 fs)"
    )
    args = parser.parse_args()
    figures = {"eps": args.eps, "friction_per_ps": args.friction, "modes": {}}
    for period in args.periods:
        for steps in args.intervals:
            rate = rate_per_ps(period, args.eps, steps)
            figures["modes"][f"period {period:g} fs, N = {steps}"] = {
                "determinant": round(float(np.linalg.det(window_map(period, args.eps, steps))), 5),
                "predicted_determinant": round(predicted_determinant(period, args.eps, steps), 5),
                "rate_per_ps": round(rate, 3),
                "rate_over_friction": round(rate / args.friction, 2),
                # the rate is linear in eps for small eps
                "eps_for_a_tenth_of_the_friction": round(
                    abs(0.1 * args.friction / rate * args.eps), 5
                ),
            }
    figures["temperature_over_bath"] = {}
    for period in args.periods:
        for steps in args.intervals:
            baseline = temperature_ratio(period, 0.0, steps, "start", args.friction, args.length)
            figures["temperature_over_bath"][f"period {period:g} fs, N = {steps}"] = {
                f"{frame}, eps {sign}": round(
                    temperature_ratio(
                        period, sign_value * args.eps, steps, frame, args.friction, args.length
                    )
                    / baseline,
                    3,
                )
                for frame in ("start", "centred")
                for sign, sign_value in (("+", 1), ("-", -1))
            }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
