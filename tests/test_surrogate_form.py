"""The learned terms of the surrogate cannot open holes: bounded below, growing far out."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd import MACEReference, Surrogate
from boostmd.forcefields.surrogate import _polynomial_coefficients
from boostmd.forcefields.testing import build_mace


@pytest.fixture(scope="module")
def reference():
    return MACEReference(build_mace(dtype=torch.float64, seed=1))


def test_each_channel_polynomial_is_never_negative():
    generator = torch.Generator().manual_seed(0)
    raw = 3 * torch.randn(500, 4 * 8, generator=generator, dtype=torch.float64)
    a, b, c, _ = _polynomial_coefficients(raw)
    z = torch.linspace(-50, 50, 4001, dtype=torch.float64)[:, None, None]
    polynomial = a * z**2 + b * z**3 + c * z**4
    assert float(polynomial.min()) >= -1e-12
    assert bool((b.abs() <= 2 * torch.sqrt(a * c)).all())


def test_learned_energy_is_bounded_below_by_the_saturating_term(reference):
    # Any weights, any displacement: the learned part is at least -sum |s|.
    torch.manual_seed(0)
    surrogate = Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
    with torch.no_grad():
        torch.nn.init.normal_(surrogate.coefficient_head.weight, std=2.0)
        torch.nn.init.normal_(surrogate.coefficient_head.bias, std=2.0)
    atoms = molecule("CH3CH2OH")
    result = reference(atoms)
    with torch.no_grad():
        frame = surrogate.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
    floor = float(frame.coefficients[3].clamp(max=0).sum())
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for scale in (0.05, 0.2, 0.5):
            positions = torch.as_tensor(atoms.positions + rng.normal(0, scale, (9, 3)))
            full = float(surrogate.energy(frame, positions)[0])
            frame_off = frame.coefficients
            frame.coefficients = torch.zeros_like(frame_off)
            first_order = float(surrogate.energy(frame, positions)[0])
            frame.coefficients = frame_off
            assert (full - first_order) / surrogate.config.energy_scale >= floor - 1e-9


def test_old_surrogate_files_are_refused_with_the_fix(reference, tmp_path):
    from boostmd.forcefields.files import write_payload
    from boostmd.forcefields.surrogate import FORMAT

    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=8)
    path = write_payload(
        tmp_path / "old.pt",
        FORMAT,
        {"version": 1, "config": surrogate.config.to_json(), "state_dict": {}},
        overwrite=False,
    )
    with pytest.raises(ValueError, match=r"retrain it with python -m boostmd\.train"):
        Surrogate.load(path)


def test_version_1_files_are_upgraded_with_their_networks(reference, tmp_path):
    from boostmd.forcefields.files import write_payload
    from boostmd.forcefields.surrogate import FORMAT
    from boostmd.forcefields.upgrade import upgrade_version_1

    torch.manual_seed(2)
    template = Surrogate.for_reference(reference, num_channels=4, hidden_dim=8)
    state = {k: v.clone() for k, v in template.state_dict().items()}
    # A version-1 head with constant outputs a = 0.3, b = 0, c_raw = 0.5 on every atom.
    state["coefficient_head.weight"] = torch.zeros(12, 8, dtype=torch.float64)
    state["coefficient_head.bias"] = torch.tensor(
        [0.3, 0.0, 0.5], dtype=torch.float64
    ).repeat_interleave(4)
    path = write_payload(
        tmp_path / "v1.pt",
        FORMAT,
        {"version": 1, "config": template.config.to_json(), "state_dict": state},
        overwrite=False,
    )
    atoms = molecule("CH3CH2OH")
    result = reference(atoms)
    upgraded = upgrade_version_1(path, atoms.numbers, result.node_features.numpy())
    for name, value in template.state_dict().items():
        if not name.startswith("coefficient_head."):
            torch.testing.assert_close(upgraded.state_dict()[name], value)
    with torch.no_grad():
        frame = upgraded.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
    a, b, c, s = frame.coefficients
    torch.testing.assert_close(a, torch.full_like(a, 0.3))
    torch.testing.assert_close(c, torch.nn.functional.softplus(torch.full_like(c, 0.5)))
    assert float(b.abs().max()) < 1e-9 and float(s.abs().max()) < 1e-9


def test_version_2_files_load_with_the_many_body_term_switched_off(reference, tmp_path):
    from boostmd.forcefields.files import write_payload
    from boostmd.forcefields.surrogate import FORMAT

    torch.manual_seed(5)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=8)
    with torch.no_grad():
        torch.nn.init.normal_(surrogate.coefficient_head.weight, std=0.3)
    version_2 = {k: v for k, v in surrogate.state_dict().items() if not k.startswith("body.")}
    path = write_payload(
        tmp_path / "v2.pt",
        FORMAT,
        {"version": 2, "config": surrogate.config.to_json(), "state_dict": version_2},
        overwrite=False,
    )
    loaded = Surrogate.load(path)
    atoms = molecule("CH3CH2OH")
    result = reference(atoms)
    positions = torch.as_tensor(atoms.positions + np.random.default_rng(0).normal(0, 0.05, (9, 3)))
    energies = []
    for model in (surrogate, loaded):
        frame = model.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
        energies.append(model.energy_and_forces(frame, positions))
    torch.testing.assert_close(energies[0], energies[1])
    assert not loaded.body.readout[-1].weight.detach().any()


def _random_surrogate(reference):
    """Every term switched on: all weights random (the many-body read-out starts at zero)."""
    torch.manual_seed(2)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    with torch.no_grad():
        for parameter in surrogate.parameters():
            parameter.copy_(0.5 * torch.randn_like(parameter))
    return surrogate


def test_md_forces_by_hand_equal_autograd_on_molecules_and_periodic_cells(reference):
    """``evaluate`` (MD: one scripted pass, its gradient by hand) equals autograd (training)."""
    from ase.build import bulk

    from boostmd.dynamics.model_calls import frames_many

    surrogate = _random_surrogate(reference)
    rng = np.random.default_rng(3)
    ethanol, methanol = molecule("CH3CH2OH"), molecule("CH3OH")
    crystal = bulk("C", "diamond", a=3.6, cubic=True)
    crystal.rattle(0.05, seed=1)
    systems = [[ethanol], [crystal], [ethanol, methanol]]  # the last: one batch of two
    for group in systems:
        results = [reference(atoms) for atoms in group]
        frame = frames_many(surrogate, group, results)
        frame = frame[0] if len(frame) == 1 else type(frame[0]).join(frame)
        start = np.concatenate([atoms.positions for atoms in group])
        # up to 0.6 Å: some edges leave the cutoff, where the envelope is flat
        for spread, scale in ((0.05, 1.0), (0.6, 0.7)):
            positions = torch.as_tensor(start + rng.normal(0, spread, start.shape))
            if len(group) > 1:
                scale = torch.tensor([0.7, 1.3], dtype=torch.float64)
            energy, forces, curvature = surrogate.evaluate(frame, positions, scale)
            expected_energy, expected_forces = surrogate.energy_and_forces(
                frame, positions, training=True, curvature_scale=scale
            )
            # random weights make large numbers: equal to float64 rounding
            torch.testing.assert_close(energy, expected_energy.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(forces, expected_forces.detach(), rtol=1e-10, atol=1e-10)
            assert curvature.shape == energy.shape
