"""Make ``ala_box_thermal.npz``: a thermal frame of 27 alanine dipeptides on a 12 Å grid.

The box of ``benchmarks/boostmd_scaling.py`` (594 atoms), 45 Langevin steps at 300 K,
1 fs, 1/ps from the built structure with the shipped dipeptide reference, then the
reference's float32 forces there. The pair-force decomposition's conjugate gradients with
block-Jacobi alone take about 1000 iterations on it (``tests/test_pair_forces.py``).

    python tests/data/make_ala_box_thermal.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

from boostmd_scaling import box  # noqa: E402

from boostmd.dynamics.calculator import ReferenceCalculator  # noqa: E402
from boostmd.forcefields.pretrained import load_pretrained  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    reference, _ = load_pretrained("dipeptides")
    atoms = box(3)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = ReferenceCalculator(reference)
    rng = np.random.default_rng(0)
    Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.001 / units.fs, rng=rng).run(45)
    forces = reference(atoms).forces.numpy()
    np.savez_compressed(
        HERE / "ala_box_thermal.npz",
        numbers=atoms.numbers,
        positions=atoms.positions,
        forces=forces.astype(np.float32),
    )


if __name__ == "__main__":
    main()
