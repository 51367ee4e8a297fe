"""Write the example structures that the docs' fits start from.

The molecules from their SMILES with RDKit; the TRP dipeptide (the shipped surrogate never
saw it) as the validation builds it; 64 waters, and ALA in 100 waters, in periodic cubic
cells at 1.0 g/cm^3 (extxyz, which keeps the cell), packed by
:mod:`boostmd.forcefields.water` and relaxed with the shipped water reference; and the
smaller boxes of the water reference's own data (16 waters, ALA in 26), on which the
shipped water surrogate is fitted.

python examples/structures/make.py
"""

from pathlib import Path

from ase.io import write
from ase.optimize import FIRE

from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.forcefields.peptides import molecule_from_smiles
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.water import solvated, water_box
from boostmd.validation.validate import starting_dipeptide

SMILES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "ethanol": "CCO",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
}

for name, smiles in SMILES.items():
    path = Path(__file__).with_name(f"{name}.xyz")
    write(path, molecule_from_smiles(smiles, seed=0, name=name))
    print(path)

path = Path(__file__).with_name("trp-dipeptide.xyz")
write(path, starting_dipeptide("TRP"))
print(path)


def relaxed(atoms):
    """``atoms`` after a short FIRE minimisation with the shipped water reference.

    A box packed by random insertion starts with close contacts; relaxed, every run from
    it (the fit's, the validation's) begins near the liquid instead of equilibrating away
    a packing's strain energy.
    """
    atoms.calc = ReferenceCalculator(load_reference("water"))
    FIRE(atoms, logfile=None).run(fmax=0.2, steps=300)
    atoms.calc = None
    return atoms


WATER_BOXES = {
    # the boxes of the shipped water reference's own data, on which its surrogate is fitted
    "water16": water_box(16, density=1.0, seed=0),
    "ala-water26": solvated(starting_dipeptide("ALA"), 26, density=1.0, seed=0),
    # the validated boxes
    "water64": water_box(64, density=1.0, seed=0),
    "ala-water100": solvated(starting_dipeptide("ALA"), 100, density=1.0, seed=0),
}
for name, atoms in WATER_BOXES.items():
    path = Path(__file__).with_name(f"{name}.extxyz")
    write(path, relaxed(atoms))
    print(path)
