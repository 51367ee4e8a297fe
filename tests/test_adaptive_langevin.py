"""The per-atom adaptive Langevin thermostat: exact with exact forces, robust to wrong ones.

(a) With an exact model it samples exp(-U / kB T) and each atom's kinetic energy follows
its chi-squared law (goodness-of-fit tests at the 1% level on many independent particles).
(b) With a deliberately wrong anchored expansion (windows of 10 steps whose curvature is
2% too soft on one bond and 2% too stiff on the other, as BoostMD's surrogate can be),
plain Langevin windows break equipartition while the adaptive friction keeps every
atom's kinetic temperature within 2% and each bond's variance within 3% of exact.
With the tests' small MACE alone (slow-marked: about 10 minutes here) it samples bond
lengths as ASE's Langevin does.
"""

import itertools

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.md.langevin import Langevin
from scipy import integrate, stats

from boostmd.dynamics.adaptive import AdaptiveLangevin
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import thermal_momenta

TEMPERATURE = 300.0
KT = units.kB * TEMPERATURE
PER_PS = 0.001 / units.fs


class DoubleWell(Calculator):
    """Independent particles in U = h ((x/b)^2 - 1)^2 + k y^2 / 2 + c x y + k z^2 / 2."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 (ASE's convention)
    h, b, k, c = 0.05, 0.5, 1.0, 0.3

    @classmethod
    def potential(cls, x, y):
        return cls.h * ((x / cls.b) ** 2 - 1) ** 2 + 0.5 * cls.k * y**2 + cls.c * x * y

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x, y, z = atoms.positions.T
        forces = np.stack(
            [
                -4 * self.h * x * ((x / self.b) ** 2 - 1) / self.b**2 - self.c * y,
                -self.k * y - self.c * x,
                -self.k * z,
            ],
            axis=1,
        )
        energy = self.potential(x, y).sum() + 0.5 * self.k * (z**2).sum()
        self.results = {"energy": energy, "forces": forces}


def hotelling_p_value(indicators: np.ndarray, expected: np.ndarray) -> float:
    """p-value that independent particles' bin fractions have the expected means.

    ``indicators`` ``(particles, samples, bins)``: each sample's bin, one-hot. Each
    particle's time-averaged fractions are one independent observation (their samples
    are correlated in time, the particles are not); Hotelling's T^2 over particles, the
    last bin left out (the fractions sum to one).
    """
    fractions = indicators.mean(axis=1)[:, :-1] - expected[:-1]
    n, p = fractions.shape
    mean = fractions.mean(axis=0)
    t2 = n * mean @ np.linalg.solve(np.cov(fractions, rowvar=False), mean)
    return float(stats.f.sf((n - p) / (p * (n - 1)) * t2, p, n - p))


def one_hot(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, values) - 1, 0, len(edges) - 2)
    return np.eye(len(edges) - 1)[index]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_forces_sample_boltzmann_positions_and_chi_squared_kinetic_energy(seed):
    particles, steps, skip, every = 200, 10_000, 2000, 20
    atoms = Atoms(f"C{particles}", positions=np.zeros((particles, 3)))
    atoms.positions[:, 0] = 0.5
    atoms.calc = DoubleWell()
    rng = np.random.default_rng(seed)
    thermal_momenta(atoms, TEMPERATURE, rng)
    dynamics = AdaptiveLangevin(atoms, units.fs, TEMPERATURE, PER_PS, tau=100 * units.fs, rng=rng)
    positions, kinetic = [], []

    def observe():
        positions.append(atoms.positions[:, :2].copy())
        kinetic.append(0.5 * (atoms.get_momenta() ** 2).sum(1) / atoms.get_masses())

    dynamics.attach(observe, interval=every)
    dynamics.run(steps)
    positions = np.asarray(positions[skip // every :]).transpose(1, 0, 2)
    kinetic = np.asarray(kinetic[skip // every :]).T

    # positions: a 4 x 3 grid of (x, y) cells against the integral of exp(-U / kT)
    x_edges, y_edges = np.array([-2, -0.5, 0, 0.5, 2]), np.array([-2, -0.12, 0.12, 2])
    weight = np.array(
        [
            [
                integrate.dblquad(
                    lambda y, x: np.exp(-DoubleWell.potential(x, y) / KT), x0, x1, y0, y1
                )[0]
                for y0, y1 in itertools.pairwise(y_edges)
            ]
            for x0, x1 in itertools.pairwise(x_edges)
        ]
    ).ravel()
    cells = (
        one_hot(positions[..., 0], x_edges)[..., :, None]
        * one_hot(positions[..., 1], y_edges)[..., None, :]
    )
    cells = cells.reshape(*cells.shape[:2], -1)
    assert hotelling_p_value(cells, weight / weight.sum()) > 0.01
    # each atom's kinetic energy: Gamma(3/2, kT), in ten bins of equal probability
    edges = stats.gamma.ppf(np.linspace(0, 1, 11), 1.5, scale=KT)
    edges[-1] = np.inf
    assert hotelling_p_value(one_hot(kinetic, edges), np.full(10, 0.1)) > 0.01
    # the frictions follow their part of the extended density, N(0, kT / mu) with
    # mu = 3 kT tau^2: nothing to cancel with exact forces
    spread = 1 / (np.sqrt(3) * dynamics.tau)
    assert abs(dynamics.xi.mean()) < 4 * spread / np.sqrt(particles)
    assert dynamics.xi.std() == pytest.approx(spread, rel=0.25)


class BondSprings(Calculator):
    """Harmonic springs (eV/Å^2) on the given atom pairs at their starting lengths."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 (ASE's convention)

    def __init__(self, pairs, lengths, stiffness=10.0):
        super().__init__()
        self.pairs, self.lengths, self.stiffness = np.asarray(pairs), lengths, stiffness

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j = self.pairs.T
        vectors = atoms.positions[j] - atoms.positions[i]
        lengths = np.linalg.norm(vectors, axis=1)
        stretch = lengths - self.lengths
        pull = (self.stiffness * stretch / lengths)[:, None] * vectors
        forces = np.zeros_like(atoms.positions)
        np.add.at(forces, i, pull)
        np.add.at(forces, j, -pull)
        self.results = {"energy": 0.5 * self.stiffness * (stretch**2).sum(), "forces": forces}


@pytest.mark.slow  # 0.2 s a call for the tests' MACE here: about 10 minutes
def test_small_mace_reference_alone_samples_as_ase_langevin(reference):
    from ase.build import molecule
    from ase.calculators.mixing import SumCalculator

    from boostmd.dynamics.stability import BondTopology

    samples = {}
    for name in ("ase", "adaptive"):
        runs = []
        for seed in range(2):
            atoms = molecule("CH3CH2OH")
            pairs = BondTopology.of(atoms).pairs
            lengths = np.linalg.norm(
                atoms.positions[pairs[:, 1]] - atoms.positions[pairs[:, 0]], axis=1
            )
            # the random MACE alone barely binds ethanol: springs keep it a molecule
            atoms.calc = SumCalculator(
                [ReferenceCalculator(reference), BondSprings(pairs, lengths)]
            )
            rng = np.random.default_rng(seed)
            thermal_momenta(atoms, TEMPERATURE, rng)
            friction, step = 10 * PER_PS, 0.5 * units.fs
            if name == "ase":
                dynamics = Langevin(
                    atoms, step, temperature_K=TEMPERATURE, friction=friction, fixcm=False, rng=rng
                )
            else:
                dynamics = AdaptiveLangevin(atoms, step, TEMPERATURE, friction, rng=rng)
            frames = []

            def observe(a=atoms, f=frames, p=pairs):
                f.append(np.linalg.norm(a.positions[p[:, 1]] - a.positions[p[:, 0]], axis=1))

            dynamics.attach(observe, interval=4)
            dynamics.run(1500)
            runs.append(np.asarray(frames[50:]))
        samples[name] = np.concatenate(runs)
    for j in range(samples["ase"].shape[1]):
        a, b = samples["ase"][:, j], samples["adaptive"][:, j]
        # bond length mean and spread agree within 4 standard errors (from block statistics)
        for statistic in (np.mean, np.std):
            blocks = [[statistic(block) for block in np.array_split(s, 6)] for s in (a, b)]
            error = np.hypot(*(np.std(x, ddof=1) / np.sqrt(len(x)) for x in blocks))
            assert abs(statistic(a) - statistic(b)) < 4 * error


class AnchoredChains(Calculator):
    """Independent harmonic 3-atom chains (vector springs) seen through anchored windows.

    Every ``interval``-th call is a "reference call": exact energy and forces, and the
    frame ``x0`` for the next calls, which expand the energy about ``x0`` with each bond's
    stiffness multiplied by ``scale``: F(x) = F(x0) - K_wrong (x - x0), as BoostMD's windows
    do with a surrogate whose curvature is off.
    """

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 (ASE's convention)

    def __init__(self, stiffness, scale, interval: int = 10):
        super().__init__()
        self.stiffness, self.scale = np.asarray(stiffness), np.asarray(scale)
        self.interval = interval
        self.calls = 0

    def _bond_forces(self, displacement, stiffness):
        bonds = displacement[:, 1:] - displacement[:, :-1]
        tension = stiffness[None, :, None] * bonds
        forces = np.zeros_like(displacement)
        forces[:, 1:] -= tension
        forces[:, :-1] += tension
        return 0.5 * float((tension * bonds).sum()), forces

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = atoms.positions.reshape(-1, 3, 3)
        exact = self.stiffness
        if self.calls % self.interval == 0:
            self.frame = x.copy()
            self.frame_energy, self.frame_forces = self._bond_forces(x - self.rest, exact)
            energy, forces = self.frame_energy, self.frame_forces
        else:
            moved = x - self.frame
            change, forces = self._bond_forces(moved, exact * self.scale)
            forces = forces + self.frame_forces
            energy = self.frame_energy - float((self.frame_forces * moved).sum()) + change
        self.calls += 1
        self.results = {"energy": energy, "forces": forces.reshape(-1, 3)}


def chain_run(tau, scale, chains=500, steps=10_000, skip=3000, periods_fs=(100.0, 50.0)):
    """Per-atom kinetic temperature / T and bond variance / exact of a windowed run.

    H-X-H chains whose two bonds vibrate with different periods, so that each normal mode
    is mostly one bond (with equal periods both modes would share both bonds' errors,
    which then cancel).
    """
    masses = np.tile([1.0, 12.0, 1.0], chains)
    # each bond's stiffness for its period, with the reduced mass of X-H
    stiffness = 12 / 13 * (2 * np.pi / (np.asarray(periods_fs) * units.fs)) ** 2
    rest = np.zeros((chains, 3, 3))
    rest[:, :, 0] = [0.0, 1.0, 2.0]
    rest[:, :, 1] = 3.0 * np.arange(chains)[:, None]
    atoms = Atoms(f"H{3 * chains}", positions=rest.reshape(-1, 3), masses=masses)
    atoms.calc = calc = AnchoredChains(stiffness, scale)
    calc.rest = rest
    rng = np.random.default_rng(0)
    thermal_momenta(atoms, TEMPERATURE, rng)
    dynamics = AdaptiveLangevin(atoms, units.fs, TEMPERATURE, PER_PS, tau=tau, rng=rng)
    kinetic, bonds = [], []

    def observe():
        momenta = atoms.get_momenta().reshape(chains, 3, 3)
        kinetic.append((momenta**2).sum(-1).mean(0) / masses[:3] / (3 * KT))
        x = atoms.positions.reshape(chains, 3, 3)
        bonds.append(x[:, 1:] - x[:, :-1])

    dynamics.attach(observe, interval=10)
    dynamics.run(steps)
    kinetic, bonds = np.asarray(kinetic[skip // 10 :]), np.asarray(bonds[skip // 10 :])
    centred = bonds - bonds.mean(axis=(0, 1))
    variance = (centred**2).mean(axis=(0, 1)).mean(-1) * stiffness / KT  # kT / k when exact
    return kinetic.mean(0), variance


def test_adaptive_friction_absorbs_what_wrong_windows_pump():
    soft_and_stiff = [0.98, 1.02]
    plain_temperature, plain_variance = chain_run(None, soft_and_stiff)
    temperature, variance = chain_run(100 * units.fs, soft_and_stiff)
    # plain windows pump the too-soft bond and drain the too-stiff one (measured: its
    # end atoms at 1.45 and 0.49 times the bath, the bonds' variances 1.48 and 0.44)
    assert plain_temperature[0] > 1.2 and plain_temperature[2] < 0.8
    assert plain_variance[0] > 1.2 and plain_variance[1] < 0.8
    # the adaptive friction keeps every atom at the bath and every bond's spread exact
    np.testing.assert_allclose(temperature, 1.0, atol=0.02)
    np.testing.assert_allclose(variance, 1.0, atol=0.03)


def test_calculator_warns_once_when_windows_pump_energy(reference, surrogate, caplog):
    from ase.build import molecule

    from boostmd import BoostMDCalculator

    atoms = molecule("CH3CH2OH")
    atoms.calc = calc = BoostMDCalculator(reference, surrogate, interval=10, timestep_fs=1.0)
    atoms.get_forces()
    rng = np.random.default_rng(0)
    with caplog.at_level("WARNING", logger="boostmd.dynamics.calculator"):
        for _ in range(60):  # jumps that scatter about zero: no warning
            calc._watch_pumping(rng.normal(0.0, 0.01), 10)
        assert "pumping energy" not in caplog.text
        for _ in range(120):  # +8 meV per window on average: heating
            calc._watch_pumping(rng.normal(0.008, 0.01), 10)
    assert caplog.text.count("pumping energy") == 1
    assert "boostmd.BoostLangevin" in caplog.text
    # an adaptive friction takes the pumped energy out: its integrator turns the warning off
    AdaptiveLangevin(atoms, units.fs, TEMPERATURE, PER_PS)
    assert calc.warn_pumping is False


def test_an_integer_seed_is_a_generator_and_a_bad_rng_is_named():
    from ase.calculators.emt import EMT

    runs = []
    for rng in (2, np.random.default_rng(2)):
        atoms = molecule("H2O")
        atoms.calc = EMT()
        AdaptiveLangevin(atoms, units.fs, 300, 0.001 / units.fs, rng=rng).run(3)
        runs.append(atoms.positions)
    np.testing.assert_array_equal(*runs)
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        AdaptiveLangevin(molecule("H2O"), units.fs, 300, 0.001 / units.fs, rng="two")
