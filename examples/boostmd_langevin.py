"""BoostMD in an ordinary ASE script: Langevin MD of a capped dipeptide at 300 K.

python examples/boostmd_langevin.py --peptide VAL --steps 2000
"""

import argparse

from ase import units
from ase.io import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostMDCalculator
from boostmd.forcefields.peptides import capped_dipeptide

parser = argparse.ArgumentParser()
parser.add_argument("--peptide", default="ALA")
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--interval", type=int, default=10)
args = parser.parse_args()

atoms = capped_dipeptide(args.peptide)
atoms.calc = BoostMDCalculator.pretrained("dipeptides", interval=args.interval)
MaxwellBoltzmannDistribution(atoms, temperature_K=300)
dynamics = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=1 / (1000 * units.fs))
dynamics.attach(MDLogger(dynamics, atoms, "md.log"), interval=100)
dynamics.attach(Trajectory("md.traj", "w", atoms), interval=10)
dynamics.run(args.steps)
print(atoms.calc.stats)  # reference (full) and surrogate (reuse) calls and their time
