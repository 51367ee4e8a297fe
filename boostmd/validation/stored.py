"""Reference runs computed once and reused by later validations.

A validation's reference runs (roles ``reference``, ``reference-2``, ``reference-adaptive``
and ``nve-reference``)
do not depend on the BoostMD sampler being validated, only on the system, the reference
model and the MD settings; at about 0.13 s a reference call on a 2-core CPU they are most
of a validation's cost. :func:`save_run` writes a finished run's observables to a store
(a folder of compressed ``.npz`` files, loaded with ``allow_pickle=False``), under a
**key** (:func:`run_key`) that names everything the run depends on; :func:`load_run`
returns it to a later validation only when its key is the same, so a changed model,
temperature, friction, length or seed recomputes the run. Any structure is keyed the same
way, by its name and a digest of its elements and positions, so the runs of a
``--structure`` system are stored and reused like a dipeptide's; where the phi/psi atom
indices a run records are not the ones the structure implies (a capped dipeptide's
backbone, or none for another molecule), the key holds them too.

The shipped store, :data:`STORE` (``boostmd/validation/reference_runs``), holds the
shipped reference's runs of the ``standard`` preset for ALA, THR, ILE and GLN and of the
``long`` preset for ALA and GLN, at 300 K, 1 fs, 1/ps; its ``README.md`` gives the
commands that made them.

Bond lengths are stored as int16 multiples of :data:`BOND_QUANTUM` (0.1 mÅ, 0.4% of a
bond's thermal spread at 300 K) from each bond's first length, bond angles as multiples of
:data:`ANGLE_QUANTUM` (0.01 degrees) from their first; everything else keeps the
checkpoint's own precision.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from ase import Atoms

from boostmd.validation.dihedrals import backbone_dihedrals
from boostmd.validation.runs import (
    ADAPTIVE_REFERENCE,
    Dihedrals,
    Job,
    MDSettings,
    job_result,
    start_digest,
)

__all__ = [
    "ANGLE_QUANTUM",
    "BOND_QUANTUM",
    "STORE",
    "load_run",
    "run_key",
    "save_run",
    "stored_sampling_runs",
]

logger = logging.getLogger(__name__)

STORE = Path(__file__).with_name("reference_runs")
BOND_QUANTUM = 1e-4  # Å
ANGLE_QUANTUM = 1e-2  # degrees
# per-frame arrays stored as int16 steps from their first frame, and each step's size
_QUANTISED = {"bonds_xh": BOND_QUANTUM, "bonds_heavy": BOND_QUANTUM, "angles": ANGLE_QUANTUM}
# what a stored run keeps of a checkpoint (the rest is the state to resume from)
_DROPPED = (
    "positions",
    "momenta",
    "xi",
    "rng_state",
    "schedule",
    "calibration",
    "cell",
    "barostat_state",
)


def run_key(
    job: Job,
    atoms: Atoms,
    reference_fingerprint: str,
    settings: MDSettings,
    dihedrals: Dihedrals | str = "backbone",
) -> dict:
    """Everything a reference run's trajectory and records depend on, as a JSON-ready dict.

    Parameters
    ----------
    job
        A reference run (``job.uses_boostmd`` false).
    atoms
        Its starting structure.
    reference_fingerprint
        The reference model's :attr:`~boostmd.forcefields.reference.MACEReference.fingerprint`.
    settings
        The validation's MD settings.
    dihedrals
        The phi/psi atom indices the run records (``None``: none). The default,
        ``"backbone"``, stands for those the structure implies
        (:func:`_implied_dihedrals`); only other ones enter the key, so that the keys of
        the dipeptides' stored runs stay as they were.
    """
    if job.uses_boostmd:
        raise ValueError(f"only reference runs are stored, not {job.role}")
    key = {
        "system": job.system,
        "role": job.role,
        "replica": job.replica,
        "structure": start_digest(atoms),
        "reference": reference_fingerprint,
        "temperature_K": settings.temperature_K,
        "timestep_fs": settings.timestep_fs,
        "seed": settings.seed,
    }
    if dihedrals != "backbone":
        recorded = None if dihedrals is None else tuple(tuple(map(int, d)) for d in dihedrals)
        if recorded != _implied_dihedrals(atoms):
            key["dihedrals"] = None if recorded is None else [list(d) for d in recorded]
    if job.role == ADAPTIVE_REFERENCE:
        key["adaptive_tau_fs"] = settings.adaptive_tau_fs
    if settings.pressure_GPa is not None and not job.nve:
        key["pressure_GPa"] = settings.pressure_GPa
    if job.nve:
        key["nve_steps"] = settings.nve_steps
    else:
        key.update(
            friction_per_ps=settings.friction_per_ps,
            equilibration_friction_per_ps=settings.equilibration_friction,
            equilibration_steps=settings.equilibration_steps,
            steps=settings.steps,
        )
    return key


def _implied_dihedrals(atoms: Atoms) -> Dihedrals:
    """Return a capped dipeptide's backbone phi/psi indices; ``None`` for another molecule."""
    try:
        return backbone_dihedrals(atoms)
    except ValueError:
        return None


def _path(store: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return store / f"{key['system']}-{key['role']}-{key['replica']}-{digest}.npz"


def save_run(store: Path, key: dict, checkpoint: dict) -> Path:
    """Store a finished run (the arrays of its checkpoint) under ``key``.

    Returns
    -------
    pathlib.Path
        The file written (an existing one for the same key is replaced: same key, same
        run).
    """
    if not bool(checkpoint["finished"]):
        raise ValueError(f"run {key['system']}-{key['role']}-{key['replica']} is not finished")
    arrays = {name: value for name, value in checkpoint.items() if name not in _DROPPED}
    for name, quantum in _QUANTISED.items():
        if name not in arrays:  # angles: absent from checkpoints of older versions
            continue
        values = np.asarray(arrays.pop(name), dtype=np.float64)
        start = values[:1] if len(values) else np.zeros((1, values.shape[1]))
        steps = np.rint((values - start) / quantum)
        if np.abs(steps).max(initial=0) > np.iinfo(np.int16).max:
            raise ValueError(f"one of {name} moved more than {32767 * quantum:g}: not a stable run")
        arrays[f"{name}_start"] = start[0]
        arrays[f"{name}_steps"] = steps.astype(np.int16)
    store.mkdir(parents=True, exist_ok=True)
    path = _path(store, key)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, key=json.dumps(key, sort_keys=True), **arrays)
    partial.replace(path)
    return path


def load_run(store: Path, key: dict) -> dict | None:
    """Return the stored run of ``key`` as its checkpoint's arrays, or ``None``.

    The arrays are those :func:`boostmd.validation.runs.run_job` saves (bond lengths back
    in float32), without the state to resume from.
    """
    path = _path(store, key)
    if not path.is_file():
        return None
    stored_key, arrays = _read(path)
    if stored_key != key:
        logger.warning("%s holds another run than its name says; recomputing it", path)
        return None
    return arrays


def _read(path: Path) -> tuple[dict, dict]:
    """Return a stored run's key and its arrays (bond lengths back in float32)."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    key = json.loads(str(arrays.pop("key")))
    for name, quantum in _QUANTISED.items():
        if f"{name}_start" in arrays:
            start, steps = arrays.pop(f"{name}_start"), arrays.pop(f"{name}_steps")
            arrays[name] = (start + quantum * steps.astype(np.float64)).astype(np.float32)
    return key, arrays


def stored_sampling_runs(store: Path, system: str, steps: int) -> list[dict]:
    """Every stored sampling run of the exact model of ``system`` with ``steps`` steps.

    The ``reference``, ``reference-2`` and ``reference-adaptive`` replicas, as job results
    (:func:`~boostmd.validation.runs.job_result`), whatever their other settings: for
    studies of the exact model's sampling noise
    (:mod:`boostmd.validation.false_alarms`), not for a validation, which matches keys.
    """
    runs = []
    for path in sorted(store.glob(f"{system}-*.npz")):
        key, arrays = _read(path)
        if key["system"] != system or key.get("steps") != steps:
            continue
        runs.append(job_result(Job(system, key["role"], key["replica"]), arrays))
    return runs
