import numpy as np
import pytest

from boostmd.forcefields.peptides import AMINO_ACIDS, capped_dipeptide, residue_code

pytest.importorskip("rdkit")


@pytest.mark.parametrize("code", sorted(AMINO_ACIDS))
def test_every_dipeptide_builds_with_sane_geometry(code):
    atoms = capped_dipeptide(code)
    distances = atoms.get_all_distances()
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 0.9  # no overlapping atoms
    # Ace-X-Nme has two amide groups: at least two O and two N.
    symbols = atoms.get_chemical_symbols()
    assert symbols.count("O") >= 2 and symbols.count("N") >= 2
    assert atoms.info["residue"] == code


def test_alanine_dipeptide_formula():
    assert capped_dipeptide("A").get_chemical_formula() == "C6H12N2O2"
    assert len(capped_dipeptide("ala")) == 22


def test_codes_normalise_and_unknown_codes_are_named():
    assert residue_code("w") == residue_code("Trp") == "TRP"
    with pytest.raises(ValueError, match="unknown amino acid 'XYZ'"):
        residue_code("XYZ")
