"""Which ASE integrators sample right with BoostMDCalculator at friction 1/ps?

Claim (README, "Which integrators sample right"): on a dipeptide the surrogate never saw
(THR by default), ASE's own ``Langevin`` at 1/ps with ``BoostMDCalculator`` heats and
breaks bonds, with start or centred frames, and a per-atom friction array (20/ps on
hydrogens) does not save it; ``AdaptiveLangevin`` with the calculator, and
``BoostLangevin``, hold the temperature. Every run starts from the built structure with
Maxwell-Boltzmann momenta at 300 K (as a new user would), 1 fs, N = 10, shipped models;
with ``--equilibration K`` the first K steps run at 20/ps (every atom), the rest at the
setting's own friction.

Prints one JSON line: per setting, the mean kinetic temperature (all, hydrogens, heavy
atoms) over the second half of the production steps, the first collapse (frame, reason)
if any, the refresh energy error's mean and RMS, and whether the calculator warned that
its windows pump.

    python benchmarks/ase_integrators.py --peptide THR --steps 600
    python benchmarks/ase_integrators.py --peptide THR --steps 2000 --equilibration 300
"""

import argparse
import json
import logging

import numpy as np
from ase import units
from ase.md.langevin import Langevin

from boostmd import BoostMDCalculator
from boostmd.dynamics.adaptive import AdaptiveLangevin
from boostmd.dynamics.md import boost_langevin, group_temperatures, thermal_momenta
from boostmd.dynamics.stability import BondTopology, first_collapse
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

PER_PS = 0.001 / units.fs
SETTINGS = {
    "ase-langevin-start": ("langevin", "start"),
    "ase-langevin-centred": ("langevin", "centred"),
    "ase-langevin-hydrogen-20-per-ps-centred": ("hydrogen-friction", "centred"),
    "adaptive-langevin-centred": ("adaptive", "centred"),
    "boost-langevin-centred": ("boost", "centred"),
}


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _set_friction(dynamics, friction):
    dynamics.fr = friction
    dynamics.updatevars()


def run(models, code, integrator, frame, steps, equilibration=0, seed=0, temperature=300.0):
    atoms = capped_dipeptide(code)
    atoms.calc = calc = BoostMDCalculator(*models, interval=10, frame=frame, timestep_fs=1.0)
    rng = np.random.default_rng(seed)
    thermal_momenta(atoms, temperature, rng)
    if integrator == "boost":
        dynamics = boost_langevin(atoms, temperature, 1.0, 1.0, rng=rng, energy_consistent=True)
    elif integrator == "adaptive":
        dynamics = AdaptiveLangevin(atoms, units.fs, temperature, PER_PS, rng=rng)
    else:
        dynamics = Langevin(
            atoms, units.fs, temperature_K=temperature, friction=PER_PS, fixcm=False, rng=rng
        )
    friction = PER_PS
    if integrator == "hydrogen-friction":
        friction = np.full((len(atoms), 1), PER_PS)
        friction[atoms.numbers == 1] = 20 * PER_PS
    topology = BondTopology.of(atoms)  # of the starting structure
    positions, temperatures = [], []

    def observe():
        positions.append(atoms.positions.copy())
        temperatures.append([atoms.get_temperature(), *group_temperatures(atoms)])

    dynamics.attach(observe, interval=1)
    handler = _Warnings()
    calculator_log = logging.getLogger("boostmd.dynamics.calculator")
    calculator_log.addHandler(handler)
    calculator_log.setLevel(logging.WARNING)  # main() quiets everything else
    try:
        if equilibration:
            _set_friction(dynamics, 20 * PER_PS)
            dynamics.run(equilibration)
        _set_friction(dynamics, friction)
        del positions[: len(positions) - 1], temperatures[:]
        for _ in range(steps // 100):
            dynamics.run(100)
            if first_collapse(np.asarray(positions), topology) is not None:
                break  # the rest of a broken run is not sampling
    finally:
        logging.getLogger("boostmd.dynamics.calculator").removeHandler(handler)
    collapse = first_collapse(np.asarray(positions), topology)
    half = np.round(np.asarray(temperatures)[len(temperatures) // 2 :].mean(0), 1).tolist()
    errors = 1000 * np.asarray(calc.refresh_errors)
    return {
        "equilibration_steps": equilibration,
        "steps": len(positions) - 1,
        "temperature_K": dict(zip(("all", "hydrogen", "heavy"), half)),
        "collapse": None if collapse is None else [int(collapse[0]), collapse[1]],
        "refresh_error_meV": {
            "mean": round(float(errors.mean()), 1),
            "rms": round(float(np.sqrt((errors**2).mean())), 1),
        },
        "pumping_warning": any("pumping energy" in m for m in handler.messages),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptide", default="THR")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--equilibration", type=int, default=0, help="steps at 20/ps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    models = load_pretrained("dipeptides")
    results = {
        name: run(models, args.peptide, *SETTINGS[name], args.steps, args.equilibration, args.seed)
        for name in (args.only or SETTINGS)
    }
    print(json.dumps({"peptide": args.peptide, "runs": results}))


if __name__ == "__main__":
    main()
