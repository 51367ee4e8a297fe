"""Write the example structures (xyz) that the docs' fits start from, with RDKit.

The molecules from their SMILES; the TRP dipeptide (the shipped surrogate never saw it) as
the validation builds it.

python examples/structures/make.py
"""

from pathlib import Path

from ase.io import write

from boostmd.forcefields.peptides import molecule_from_smiles
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
