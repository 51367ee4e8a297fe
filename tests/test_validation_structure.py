"""Bond angles and intermolecular distances of the validation (a liquid's statistics)."""

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import write
from scipy.stats import wasserstein_distance

from boostmd.dynamics.periodic import whole_molecules
from boostmd.dynamics.stability import BondTopology
from boostmd.forcefields.water import water_box
from boostmd.validation.report import compare_runs
from boostmd.validation.runs import Job, _Recorder, job_result
from boostmd.validation.stored import ANGLE_QUANTUM, load_run, run_key, save_run
from boostmd.validation.structure import (
    PAIR_BIN,
    PAIR_EVERY,
    PAIR_MAX,
    IntermolecularPairs,
    bond_angle_triples,
    bond_angles,
    histogram_w1,
    pair_cutoff,
    radial_distribution,
)
from boostmd.validation.validate import MDSettings, _read_structure


def test_every_two_bonds_sharing_an_atom_make_one_angle_measured_at_that_atom():
    water = molecule("H2O")
    triples = bond_angle_triples(BondTopology.of(water).pairs)
    assert triples.tolist() == [[1, 0, 2]]
    assert bond_angles(water.positions, triples)[0] == pytest.approx(water.get_angle(1, 0, 2))
    methane = molecule("CH4")  # four bonds at the carbon: six tetrahedral angles
    angles = bond_angles(methane.positions, bond_angle_triples(BondTopology.of(methane).pairs))
    assert angles == pytest.approx(np.full(6, math.degrees(math.acos(-1 / 3))), abs=1e-3)


def test_intermolecular_pairs_are_the_oxygens_of_different_waters_under_the_minimum_image():
    box = water_box(8, seed=1)
    pairs = IntermolecularPairs(box, BondTopology.of(box))
    assert len(pairs.pairs) == 8 * 7 // 2 and (box.numbers[pairs.pairs] == 8).all()
    # half the 7.9 Å cell, on the bin grid
    assert pairs.cutoff == pytest.approx(PAIR_BIN * np.floor(box.cell[0, 0] / 2 / PAIR_BIN))
    distances = box.get_distances(pairs.pairs[:, 0], pairs.pairs[:, 1], mic=True)
    expected, _ = np.histogram(distances, bins=pairs.edges)
    counts = pairs.histogram(box.positions)
    assert counts.tolist() == expected.tolist() and counts.sum() > 0
    wrapped = box.copy()
    wrapped.wrap()  # a wrapped frame has the same pair distances
    assert pairs.histogram(wrapped.positions).tolist() == counts.tolist()
    # a lone molecule has no intermolecular pairs; no cell: PAIR_MAX
    alone = molecule("CH3CH2OH")
    assert len(IntermolecularPairs(alone, BondTopology.of(alone)).pairs) == 0
    assert pair_cutoff(alone) == PAIR_MAX


def test_histogram_w1_is_the_wasserstein_distance_of_the_binned_samples():
    rng = np.random.default_rng(0)
    edges = PAIR_BIN * np.arange(61)
    a, _ = np.histogram(rng.normal(1.5, 0.3, 5000), bins=edges)
    b, _ = np.histogram(rng.normal(1.7, 0.4, 5000), bins=edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    assert histogram_w1(a, b) == pytest.approx(wasserstein_distance(centres, centres, a, b))
    assert histogram_w1(np.stack([a, a]), a[None]) == 0.0  # frames are summed
    assert math.isnan(histogram_w1(np.zeros(60), a))


def test_the_radial_distribution_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(1)
    gas = Atoms("O400", positions=rng.uniform(0, 20, (400, 3)), cell=[20] * 3, pbc=True)
    pairs = IntermolecularPairs(gas, BondTopology.of(gas))
    frames = [pairs.histogram(rng.uniform(0, 20, (400, 3))) for _ in range(20)]
    r, g = radial_distribution(np.array(frames), len(pairs.pairs), gas.get_volume())
    assert r[-1] == pytest.approx(PAIR_MAX - PAIR_BIN / 2)
    assert np.mean(g[r > 3]) == pytest.approx(1.0, abs=0.02)


def _recorded(box: Atoms, frames: int, shift: float = 0.0, seed: int = 2) -> dict:
    """A run's checkpoint arrays with ``frames`` frames of ``box`` (waters pushed apart)."""
    recorder = _Recorder(box, BondTopology.of(box))
    rng = np.random.default_rng(seed)
    start = box.positions.copy()
    for _ in range(frames):
        moved = box.copy()
        moved.positions = start * (1 + shift) + 0.002 * rng.normal(size=start.shape)
        moved.calc = _Fixed(moved)
        recorder.observe(moved, None)
    return {
        **recorder.arrays(),
        "collapse_frame": -1,
        "collapse_reason": "",
        "seconds": 1.0,
        "step": frames - 1,
        "refresh_errors": np.zeros(0),
        "finished": True,
        **dict.fromkeys(("reference_calls", "surrogate_calls", "rollbacks", "windows"), 0),
        "fallbacks": 0,
    }


class _Fixed:
    """A calculator stand-in whose results the recorder reads (energy and forces zero)."""

    def __init__(self, atoms):
        self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}

    def get_potential_energy(self, atoms=None, force_consistent=False):
        return 0.0

    def get_property(self, name, atoms=None, allow_calculation=True):
        return self.results[name]


def test_runs_keep_angles_every_frame_and_pair_histograms_every_tenth_and_compare_them(tmp_path):
    box = water_box(8, seed=1)
    saved = _recorded(box, 25)
    bins = IntermolecularPairs(box, BondTopology.of(box)).bins
    assert saved["angles"].shape == (25, 8) and saved["pair_counts"].shape == (3, bins)
    assert saved["temperature_elements"].shape == (25, 2)  # H and O
    assert saved["density"] == pytest.approx(np.full(25, 1.0), abs=1e-6)
    result = job_result(Job("w8", "reference", 0), saved)
    expanded = job_result(Job("w8", "reference-2", 0), _recorded(box, 25, shift=0.02))
    values = compare_runs([result], [expanded], 0, 5, 300.0, dihedrals=False)
    assert values["angle_w1_deg"] < 1.0  # expanding the box keeps the angles
    # ... but moves the waters apart: each O-O distance in reach by 2% (20-60 mÅ)
    assert 20 < values["pair_distance_w1_mA"] < 1000 * 0.02 * pair_cutoff(box)
    again = job_result(Job("w8", "reference-2", 0), _recorded(box, 25, seed=3))
    same = compare_runs([result], [again], 0, 5, 300.0, dihedrals=False)
    assert same["pair_distance_w1_mA"] < 0.2 * values["pair_distance_w1_mA"]
    # a collapse at frame 12 keeps the histograms of frames 0 and 10
    assert (
        len(job_result(Job("w8", "reference", 0), {**saved, "collapse_frame": 12})["pair_counts"])
        == 2
    )
    # runs of older versions kept neither: both metrics are nan
    older = {key: value for key, value in saved.items() if key not in ("angles", "pair_counts")}
    old_run = job_result(Job("w8", "reference-2", 0), older)
    old = compare_runs([result], [old_run], 0, 5, 300.0, dihedrals=False)
    assert math.isnan(old["angle_w1_deg"]) and math.isnan(old["pair_distance_w1_mA"])
    # stored runs keep the angles to ANGLE_QUANTUM
    settings = MDSettings(300.0, 1.0, 1.0, 24, 0, 0, 5, 10, 0)
    key = run_key(Job("w8", "reference", 0), box, "fingerprint", settings)
    save_run(tmp_path, key, saved)
    loaded = load_run(tmp_path, key)
    assert np.abs(loaded["angles"] - saved["angles"]).max() <= ANGLE_QUANTUM
    assert loaded["pair_counts"].tolist() == saved["pair_counts"].tolist()
    assert PAIR_EVERY == 10


def test_a_wrapped_file_is_read_with_its_molecules_whole_and_a_whole_one_as_it_is(tmp_path):
    box = water_box(16, seed=2)
    wrapped = box.copy()
    wrapped.wrap()
    pairs = BondTopology.of(box).pairs
    raw = np.linalg.norm(wrapped.positions[pairs[:, 0]] - wrapped.positions[pairs[:, 1]], axis=1)
    assert raw.max() > 5  # split molecules: a raw O-H difference spans the cell
    write(tmp_path / "wrapped.extxyz", wrapped)
    read_back = _read_structure(tmp_path / "wrapped.extxyz")
    lengths = np.linalg.norm(
        read_back.positions[pairs[:, 0]] - read_back.positions[pairs[:, 1]], axis=1
    )
    assert lengths == pytest.approx(np.full(len(pairs), 0.9572), abs=1e-6)
    # each atom moved by whole cell vectors only
    moved = np.linalg.solve(box.cell.array.T, (read_back.positions - wrapped.positions).T)
    assert moved == pytest.approx(np.rint(moved), abs=1e-9)
    assert np.array_equal(whole_molecules(box).positions, box.positions)
