"""Claim: the surrogate's stiffness along each bond, against the reference's, shows soft bonds.

The reference's own Langevin MD of the structure (300 K, 1 fs, 20/ps, seed 0); at 6
frames, 50 steps apart, each surrogate is framed by a reference call and both models'
curvatures along every bond's stretch are measured by central differences of their forces
(``boostmd.training.stiffness.bond_stiffness``), at the frame and ``--lag`` steps later (as
a window sees it away from its frame). Prints one JSON line: per surrogate and probe, the
X-H and heavy-bond stiffness ratios (surrogate over reference, summed over the frames) and
the softest bonds with their elements.

    python benchmarks/boostmd_stiffness.py --structure examples/structures/trp-dipeptide.xyz \\
        --surrogate shipped docs/fit/trp/surrogate.pt
"""

import argparse
import json

import numpy as np
from ase.io import read

from boostmd import BoostMDCalculator, Surrogate
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.dynamics.stability import BondTopology
from boostmd.forcefields.pretrained import load_reference
from boostmd.training.stiffness import bond_stiffness

FRAMES, SPACING, FIRST = 6, 50, 100


def _surrogate(path: str, reference):
    if path == "shipped":
        return BoostMDCalculator.pretrained("dipeptides").surrogate
    return Surrogate.load(path, dtype=reference.dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", required=True)
    parser.add_argument("--surrogate", nargs="+", required=True, help="files, or 'shipped'")
    parser.add_argument("--reference", default="dipeptides")
    parser.add_argument("--lag", type=int, default=5)
    args = parser.parse_args()
    reference = load_reference(args.reference)
    atoms = read(args.structure)
    topology = BondTopology.of(atoms)
    atoms.calc = ReferenceCalculator(reference)
    rng = np.random.default_rng(0)
    thermal_momenta(atoms, 300.0, rng)
    dynamics = langevin(atoms, 300.0, 1.0, 20.0, rng)
    trajectory = []
    dynamics.attach(lambda: trajectory.append(atoms.copy()), interval=1)
    dynamics.run(FIRST + FRAMES * SPACING + args.lag)
    starts = [FIRST + i * SPACING for i in range(FRAMES)]
    frames = [trajectory[t] for t in starts]
    names = [f"{atoms[i].symbol}{i}-{atoms[j].symbol}{j}" for i, j in topology.pairs]
    figures = {"structure": args.structure, "frames": FRAMES, "lag_steps": args.lag}
    for path in args.surrogate:
        surrogate = _surrogate(path, reference)
        for probe_name, probes in (
            ("at_frame", None),
            (f"lag_{args.lag}", [trajectory[t + args.lag].positions for t in starts]),
        ):
            stiffness = bond_stiffness(reference, surrogate, frames, probes, topology)
            ratios = stiffness.bond_ratios()
            softest = np.argsort(ratios)[:5]
            figures[f"{path}:{probe_name}"] = {
                "xh": round(stiffness.ratio("xh"), 4),
                "heavy": round(stiffness.ratio("heavy"), 4),
                "softest_bonds": {names[b]: round(float(ratios[b]), 3) for b in softest},
            }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
