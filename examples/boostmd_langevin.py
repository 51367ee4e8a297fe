"""BoostMD in an ordinary ASE script: Langevin MD of a capped dipeptide at 300 K.

python examples/boostmd_langevin.py --peptide VAL --steps 2000

With no extra argument this is the validated path: the shipped models, centred frames,
N = 10, checked windows, the per-atom adaptive friction and the energy-consistent refresh.
For a molecule the shipped surrogate was not made for, fit one first
(``python -m boostmd.fit``) and pass ``--surrogate DIR/surrogate.pt --structure FILE``.
"""

import argparse
import logging

import numpy as np
from ase import units
from ase.io import Trajectory, read
from ase.md import MDLogger

from boostmd import BoostLangevin, BoostMDCalculator, Surrogate
from boostmd.dynamics.md import thermal_momenta
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_reference

parser = argparse.ArgumentParser()
parser.add_argument("--peptide", default="ALA")
parser.add_argument("--structure", help="your own structure file instead of a dipeptide")
parser.add_argument("--reference", default="dipeptides", help="shipped name or weights file")
parser.add_argument("--surrogate", help="a surrogate for it (default: the shipped one)")
parser.add_argument("--steps", type=int, default=1000)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO)

atoms = read(args.structure) if args.structure else capped_dipeptide(args.peptide)
if args.surrogate:
    reference = load_reference(args.reference)
    atoms.calc = BoostMDCalculator(reference, Surrogate.load(args.surrogate))
else:
    atoms.calc = BoostMDCalculator.pretrained("dipeptides")
thermal_momenta(atoms, 300, np.random.default_rng(0))
dynamics = BoostLangevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.001 / units.fs)
dynamics.attach(MDLogger(dynamics, atoms, "md.log"), interval=100)
dynamics.attach(Trajectory("md.traj", "w", atoms), interval=10)
dynamics.run(args.steps)
print(dynamics.summary())  # reference calls per step, windows rerun, dE, implied speedup
