"""Capped dipeptides (Ace-X-Nme) as ASE ``Atoms``, built from SMILES with RDKit.

Side chains are neutral (gas-phase protonation: Asp/Glu as acids, Lys/Arg as amines, His
as the N-epsilon tautomer), all residues are L.
"""

from __future__ import annotations

from ase import Atoms

__all__ = ["AMINO_ACIDS", "capped_dipeptide", "molecule_from_smiles"]

# Three-letter code -> (one-letter code, SMILES of the whole capped dipeptide).
_BACKBONE = "CC(=O)N[C@@H]({side})C(=O)NC"
_SIDE_CHAINS = {
    "ALA": ("A", "C"),
    "ARG": ("R", "CCCNC(N)=N"),
    "ASN": ("N", "CC(N)=O"),
    "ASP": ("D", "CC(=O)O"),
    "CYS": ("C", "CS"),
    "GLN": ("Q", "CCC(N)=O"),
    "GLU": ("E", "CCC(=O)O"),
    "HIS": ("H", "Cc1c[nH]cn1"),
    "ILE": ("I", "[C@@H](C)CC"),
    "LEU": ("L", "CC(C)C"),
    "LYS": ("K", "CCCCN"),
    "MET": ("M", "CCSC"),
    "PHE": ("F", "Cc1ccccc1"),
    "SER": ("S", "CO"),
    "THR": ("T", "[C@H](O)C"),
    "TRP": ("W", "Cc1c[nH]c2ccccc12"),
    "TYR": ("Y", "Cc1ccc(O)cc1"),
    "VAL": ("V", "C(C)C"),
}
AMINO_ACIDS: dict[str, tuple[str, str]] = {
    code: (letter, _BACKBONE.format(side=side)) for code, (letter, side) in _SIDE_CHAINS.items()
}
AMINO_ACIDS["GLY"] = ("G", "CC(=O)NCC(=O)NC")
AMINO_ACIDS["PRO"] = ("P", "CC(=O)N1CCC[C@H]1C(=O)NC")
_BY_LETTER = {letter: code for code, (letter, _) in AMINO_ACIDS.items()}


def residue_code(code: str) -> str:
    """Normalise a one- or three-letter amino-acid code to three upper-case letters."""
    key = code.strip().upper()
    key = _BY_LETTER.get(key, key)
    if key not in AMINO_ACIDS:
        raise ValueError(
            f"unknown amino acid {code!r}; use one of {', '.join(sorted(AMINO_ACIDS))} "
            "or their one-letter codes"
        )
    return key


def capped_dipeptide(code: str, seed: int = 0) -> Atoms:
    """Build Ace-X-Nme for amino acid ``code`` with an MMFF-relaxed 3-D geometry.

    Parameters
    ----------
    code
        One- or three-letter amino-acid code (``"A"``, ``"ALA"``, ``"ala"``).
    seed
        Seed of RDKit's conformer embedding.

    Returns
    -------
    ase.Atoms
        The molecule, no cell, with ``info["residue"]`` and ``info["smiles"]``.
    """
    residue = residue_code(code)
    atoms = molecule_from_smiles(AMINO_ACIDS[residue][1], seed, f"{residue} dipeptide")
    atoms.info["residue"] = residue
    return atoms


def molecule_from_smiles(smiles: str, seed: int = 0, name: str | None = None) -> Atoms:
    """Build a molecule from SMILES with RDKit: hydrogens added, embedded, MMFF-relaxed.

    Parameters
    ----------
    smiles
        The molecule, e.g. ``"CC(=O)Oc1ccccc1C(=O)O"`` (aspirin).
    seed
        Seed of RDKit's conformer embedding.
    name
        What to call it in errors (default: the SMILES).

    Returns
    -------
    ase.Atoms
        The molecule, no cell, with ``info["smiles"]``.

    Raises
    ------
    ValueError
        For SMILES RDKit cannot parse.
    RuntimeError
        If RDKit cannot embed it.
    """
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as error:
        raise ImportError("building molecules needs RDKit: pip install 'boostmd[data]'") from error
    parsed = Chem.MolFromSmiles(smiles)
    if parsed is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    molecule = Chem.AddHs(parsed)
    if AllChem.EmbedMolecule(molecule, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {name or smiles} (seed {seed})")
    AllChem.MMFFOptimizeMolecule(molecule)
    atoms = Atoms(
        numbers=[atom.GetAtomicNum() for atom in molecule.GetAtoms()],
        positions=molecule.GetConformer().GetPositions(),
    )
    atoms.info["smiles"] = smiles
    return atoms
