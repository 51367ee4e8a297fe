"""Claims: BoostMD holds its temperature and never collapses at friction 1/ps; dE is small.

For each dipeptide (default ALA and the unseen THR, ILE, GLN), 300 K, 1 fs, friction
1/ps, N = 10, shipped models: one long run with ASE's ``Langevin`` and one with
``BoostLangevin`` (checked windows). Reported per run: the first collapse (none
expected), mean kinetic temperature of the hydrogens and of the heavy atoms over the
second half, the refresh energy error dE over all windows (RMS, mean, largest |dE|,
meV), rollbacks, reference and surrogate calls. Then NVE (friction 0) with
``BoostLangevin`` with and without the energy-consistent refresh: the drift of the
reference's total energy at refresh frames (meV/ps/atom).

Targets (issue 11): no collapse in 20,000 steps; dE RMS <= 13 meV (0.5 kT), mean within
+-2 meV. Prints one JSON line.

    python benchmarks/boostmd_sampling.py                 # 20,000 steps per run
    python benchmarks/boostmd_sampling.py --steps 2000 --peptides ALA   # a quick look
"""

import argparse
import json
import time

import numpy as np
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.units import kB
from tqdm import tqdm

from boostmd import BoostMDCalculator
from boostmd.md import boost_langevin, langevin
from boostmd.peptides import capped_dipeptide
from boostmd.pretrained import load_pretrained
from boostmd.stability import BondTopology, first_collapse

TEMPERATURE = 300.0


def group_temperatures(atoms):
    """Kinetic temperature (K) of the hydrogens and of the heavy atoms."""
    kinetic = 0.5 * (atoms.get_momenta() ** 2).sum(1) / atoms.get_masses()
    hydrogen = atoms.numbers == 1
    return [float(kinetic[m].mean() / (1.5 * kB)) for m in (hydrogen, ~hydrogen)]


def run(code, models, integrator, steps, friction, seed, **options):
    atoms = capped_dipeptide(code)
    calc = BoostMDCalculator(*models, interval=options.pop("interval", 10))
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE, rng=np.random.default_rng(seed))
    make = boost_langevin if integrator == "checked" else langevin
    dynamics = make(atoms, TEMPERATURE, 1.0, friction, np.random.default_rng(seed + 1), **options)
    topology = BondTopology.of(atoms)
    record = {"positions": [], "temperatures": [], "reference_energy": []}

    def observe():
        record["positions"].append(atoms.positions.copy())
        record["temperatures"].append(group_temperatures(atoms))
        if calc.results.get("boostmd_source") == "reference":
            total = atoms.get_potential_energy() + atoms.get_kinetic_energy()
            record["reference_energy"].append((dynamics.nsteps, total))

    dynamics.attach(observe, interval=1)
    collapse, done, chunk = None, 0, 500
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"{code} {integrator} friction {friction:g}", leave=False) as bar:
        while done < steps and collapse is None:
            dynamics.run(min(chunk, steps - done))
            done += min(chunk, steps - done)
            collapse = first_collapse(np.asarray(record["positions"]), topology)
            record["positions"] = record["positions"][-1:]
            bar.update(chunk)
    seconds = time.perf_counter() - start
    errors = 1000 * np.asarray(calc.refresh_errors)
    temperatures = np.asarray(record["temperatures"])
    half = temperatures[len(temperatures) // 2 :]
    result = {
        "steps": done,
        "collapse": None if collapse is None else collapse[1],
        "mean_T_hydrogen_K": round(float(half[:, 0].mean()), 1),
        "mean_T_heavy_K": round(float(half[:, 1].mean()), 1),
        "windows": len(errors),
        "dE_rms_meV": round(float(np.sqrt(np.mean(errors**2))), 2) if len(errors) else None,
        "dE_mean_meV": round(float(errors.mean()), 2) if len(errors) else None,
        "dE_max_abs_meV": round(float(np.abs(errors).max()), 1) if len(errors) else None,
        "rollbacks": getattr(dynamics, "rollbacks", None),
        "fallbacks": calc.fallbacks,
        "reference_calls": calc.stats.full_steps,
        "surrogate_calls": calc.stats.reuse_steps,
        "ms_per_step": round(1000 * seconds / max(done, 1), 2),
    }
    return result, record["reference_energy"], len(atoms)


def nve_drift(code, models, steps, energy_consistent):
    """Drift (meV/ps/atom) of the reference total energy at refresh frames, friction 0."""
    _, energies, n = run(
        code, models, "checked", steps, 0.0, 7, energy_consistent=energy_consistent
    )
    step, energy = np.asarray(energies).T
    slope = np.polyfit(step / 1000.0, energy, 1)[0]  # eV per ps (1 fs steps)
    return round(1000 * float(slope) / n, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--nve-steps", type=int, default=5_000)
    parser.add_argument("--peptides", nargs="+", default=["ALA", "THR", "ILE", "GLN"])
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    args = parser.parse_args()
    models = load_pretrained("dipeptides")
    figures = {"temperature_K": TEMPERATURE, "friction_per_ps": args.friction, "interval": 10}
    for code in args.peptides:
        for integrator in ("ase", "checked"):
            figures[f"{code}_{integrator}"] = run(
                code, models, integrator, args.steps, args.friction, seed=11
            )[0]
    figures["nve_drift_meV_per_ps_atom"] = {
        "energy_consistent": nve_drift(args.peptides[0], models, args.nve_steps, True),
        "plain": nve_drift(args.peptides[0], models, args.nve_steps, False),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
