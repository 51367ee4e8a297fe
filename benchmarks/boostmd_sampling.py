"""Claims: BoostMD holds its temperature and never collapses at friction 1/ps; dE is small.

For each dipeptide (default ALA and the unseen THR, ILE, GLN), 300 K, 1 fs, friction
1/ps, N = 10, shipped models: one long run with ASE's ``Langevin`` and one with
``BoostLangevin`` (checked windows, energy-consistent refresh as in
``python -m boostmd.validate``), each after ``--equilibration-steps`` at 20/ps. Reported
per run: the first collapse (none expected), mean kinetic temperature of the hydrogens
and of the heavy atoms over the second half and over each tenth of the run (a drift
shows there), the refresh energy error dE over all windows (RMS, mean, largest |dE|,
meV) and its mean over each tenth, rollbacks, reference and surrogate calls. Then NVE
(friction 0) with ``BoostLangevin`` with and without the energy-consistent refresh: the
drift of the reference's total energy at refresh frames (meV/ps/atom).

Targets (issue 11): no collapse in 20,000 steps; dE RMS <= 13 meV (0.5 kT), mean within
+-2 meV. Prints one JSON line.

    python benchmarks/boostmd_sampling.py                 # 20,000 steps per run
    python benchmarks/boostmd_sampling.py --steps 2000 --peptides ALA   # a quick look
    python benchmarks/boostmd_sampling.py --integrators checked --nve-steps 0   # BoostMD only
    python benchmarks/boostmd_sampling.py --frame centred   # windows framed at their centre
"""

import argparse
import json
import time

import numpy as np
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from tqdm import tqdm

from boostmd import BoostMDCalculator
from boostmd.dynamics.md import ase_units, boost_langevin, group_temperatures, langevin
from boostmd.dynamics.stability import BondTopology, first_collapse
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

TEMPERATURE = 300.0
EQUILIBRATION_FRICTION = 20.0  # 1/ps


def _blocks(values, count=10):
    return [round(float(np.mean(b)), 1) for b in np.array_split(np.asarray(values), count)]


def _counts(calc, dynamics):
    rollbacks = getattr(dynamics, "rollbacks", 0)
    return calc.stats.full_steps, calc.stats.reuse_steps, rollbacks, calc.fallbacks


def run(code, models, integrator, steps, friction, seed, equilibration=0, **options):
    atoms = capped_dipeptide(code)
    calc = BoostMDCalculator(
        *models,
        interval=options.pop("interval", 10),
        frame=options.pop("frame", "start"),
        timestep_fs=1.0,
    )
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE, rng=np.random.default_rng(seed))
    make = boost_langevin if integrator == "checked" else langevin
    rng = np.random.default_rng(seed + 1)
    dynamics = make(atoms, TEMPERATURE, 1.0, EQUILIBRATION_FRICTION, rng, **options)
    if equilibration:  # to the bath first, as python -m boostmd.validate does
        dynamics.run(equilibration)
        calc.refresh_errors.clear()
    before = _counts(calc, dynamics)
    dynamics.set_friction(ase_units(1.0, friction)[1])
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
            advance = min(chunk, steps - done)
            dynamics.run(advance)
            done += advance
            collapse = first_collapse(np.asarray(record["positions"]), topology)
            record["positions"] = record["positions"][-1:]
            bar.update(advance)
    seconds = time.perf_counter() - start
    errors = 1000 * np.asarray(calc.refresh_errors)
    temperatures = np.asarray(record["temperatures"])
    half = temperatures[len(temperatures) // 2 :]
    result = {
        "steps": done,
        "collapse": None if collapse is None else collapse[1],
        "mean_T_hydrogen_K": round(float(half[:, 0].mean()), 1),
        "mean_T_heavy_K": round(float(half[:, 1].mean()), 1),
        "T_hydrogen_by_tenth_K": _blocks(temperatures[:, 0]),
        "T_heavy_by_tenth_K": _blocks(temperatures[:, 1]),
        "windows": len(errors),
        "dE_rms_meV": round(float(np.sqrt(np.mean(errors**2))), 2) if len(errors) else None,
        "dE_mean_meV": round(float(errors.mean()), 2) if len(errors) else None,
        "dE_max_abs_meV": round(float(np.abs(errors).max()), 1) if len(errors) else None,
        "dE_mean_by_tenth_meV": _blocks(errors) if len(errors) >= 10 else None,
        **{
            name: after - earlier
            for name, after, earlier in zip(
                ("reference_calls", "surrogate_calls", "rollbacks", "fallbacks"),
                _counts(calc, dynamics),
                before,
            )
        },
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
    parser.add_argument("--equilibration-steps", type=int, default=300, help="at 20/ps")
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--frame", choices=["start", "centred"], default="start")
    parser.add_argument(
        "--integrators", nargs="+", choices=["ase", "checked"], default=["ase", "checked"]
    )
    args = parser.parse_args()
    models = load_pretrained("dipeptides")
    figures = {
        "temperature_K": TEMPERATURE,
        "friction_per_ps": args.friction,
        "interval": args.interval,
        "frame": args.frame,
        "equilibration_steps": args.equilibration_steps,
    }
    for code in args.peptides:
        for integrator in args.integrators:
            options = {"energy_consistent": True} if integrator == "checked" else {}
            figures[f"{code}_{integrator}"] = run(
                code,
                models,
                integrator,
                args.steps,
                args.friction,
                seed=11,
                equilibration=args.equilibration_steps,
                interval=args.interval,
                frame=args.frame,
                **options,
            )[0]
    if args.nve_steps:
        figures["nve_drift_meV_per_ps_atom"] = {
            "energy_consistent": nve_drift(args.peptides[0], models, args.nve_steps, True),
            "plain": nve_drift(args.peptides[0], models, args.nve_steps, False),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
