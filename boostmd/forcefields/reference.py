"""The reference force field: a MACE model, one forward pass per full step.

:class:`MACEReference` returns the energy (eV), the forces (eV/Å) and the invariant node
features of every interaction layer from the same forward pass; it computes no stress
and runs no second pass for descriptors.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from boostmd.forcefields.elements import element_indices
from boostmd.forcefields.heap import release_free_heap
from boostmd.forcefields.mace_import import import_mace

__all__ = ["MACEReference", "ReferenceResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceResult:
    """What one reference forward pass returns, all detached.

    Attributes
    ----------
    energy
        Total energy in eV, a 0-d tensor.
    forces
        Forces in eV/Å, shape ``(n_atoms, 3)``.
    node_features
        Invariant (``0e``) node features of every interaction layer, concatenated,
        shape ``(n_atoms, feature_dim)``.
    stress
        For a system periodic along all three cell vectors: the stress
        ``(1 / V) dE / d(strain)`` in eV/Å³, shape ``(3, 3)`` (ASE's sign convention);
        else ``None``.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    node_features: torch.Tensor
    stress: torch.Tensor | None = None


def _invariant_columns(model: torch.nn.Module) -> tuple[torch.Tensor, list[int]]:
    """Column indices of the ``0e`` channels in MACE's concatenated ``node_feats``."""
    from e3nn import o3

    columns: list[int] = []
    per_layer: list[int] = []
    offset = 0
    for product in model.products:
        irreps = o3.Irreps(str(product.linear.irreps_out))
        count = 0
        for mul_ir, chunk in zip(irreps, irreps.slices()):
            if mul_ir.ir == o3.Irrep("0e"):
                columns.extend(range(offset + chunk.start, offset + chunk.stop))
                count += mul_ir.mul
        per_layer.append(count)
        offset += irreps.dim
    return torch.tensor(columns, dtype=torch.long), per_layer


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of a model's weights and buffers, rounded to float32.

    The float32 rounding makes a float64 copy of a float32 model share its fingerprint,
    so a surrogate trained against one precision runs with the other.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        value = tensor.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float32)
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _collate(graphs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join single-graph MACE inputs into one batch (edge indices offset, one cell each)."""
    offsets = np.cumsum([0] + [len(g["positions"]) for g in graphs])
    device = graphs[0]["positions"].device
    joined = {
        key: torch.cat([g[key] for g in graphs])
        for key in ("positions", "node_attrs", "shifts", "unit_shifts", "cell", "head")
    }
    joined["edge_index"] = torch.cat(
        [g["edge_index"] + int(offset) for g, offset in zip(graphs, offsets)], dim=1
    )
    sizes = torch.as_tensor(np.diff(offsets), device=device)
    joined["batch"] = torch.repeat_interleave(torch.arange(len(graphs), device=device), sizes)
    joined["ptr"] = torch.as_tensor(offsets, device=device)
    return joined


class MACEReference:
    """A MACE model as BoostMD's reference force field.

    Parameters
    ----------
    model
        A ``mace.modules.MACE`` or ``ScaleShiftMACE``. Its parameters are frozen
        (``requires_grad=False``) and it is put in eval mode; it keeps its device and dtype.
    head
        Name of the head to use for multi-head models (default: the first).

    Examples
    --------
    >>> reference = MACEReference.load("reference.pt")  # safe weights  # doctest: +SKIP
    >>> reference = MACEReference.from_file("my.model")  # pickled  # doctest: +SKIP
    >>> result = reference(atoms)  # doctest: +SKIP
    >>> result.energy, result.forces.shape, result.node_features.shape  # doctest: +SKIP

    Every :attr:`heap_trim_interval` forward passes the C heap's free memory is returned
    to the system (:func:`boostmd.forcefields.heap.release_free_heap`): MD's varying graph
    sizes can otherwise fragment glibc's heap by gigabytes over a long run. ``0`` turns
    it off.
    """

    heap_trim_interval: int = 64

    def __init__(self, model: torch.nn.Module, head: str | None = None) -> None:
        import_mace()
        missing = [
            a
            for a in ("atomic_numbers", "r_max", "products", "interactions")
            if not hasattr(model, a)
        ]
        if missing:
            raise TypeError(
                f"MACEReference needs a mace.modules.MACE/ScaleShiftMACE model; "
                f"{type(model).__name__} lacks {missing}"
            )
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        first = next(self.model.parameters())
        self.dtype, self.device = first.dtype, first.device
        self.atomic_numbers = tuple(int(z) for z in model.atomic_numbers.tolist())
        self.cutoff = float(model.r_max)
        heads = list(getattr(model, "heads", ["Default"]))
        if head is not None and head not in heads:
            raise ValueError(f"head {head!r} is not one of the model's heads {heads}")
        self.head = head
        self._head = torch.tensor([heads.index(head) if head else 0], device=self.device)
        self._columns, self.layer_feature_dims = _invariant_columns(model)
        self._columns = self._columns.to(self.device)
        self.fingerprint = model_fingerprint(model)
        self._forward_passes = 0

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        head: str | None = None,
        cuequivariance: bool = False,
    ) -> MACEReference:
        """Load a MACE ``.model`` file.

        A ``.model`` file is a whole pickled module: loading it runs code stored in the
        file. Calling this method is your explicit choice to trust that file.

        Parameters
        ----------
        path
            The ``.model`` file (as written by ``mace_run_train``).
        device
            Where to run the model.
        dtype
            ``"float32"`` (fast MD) or ``"float64"``.
        head
            Head of a multi-head model.
        cuequivariance
            Run on cuEquivariance kernels (:meth:`with_cuequivariance`).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no MACE model file at {path}")
        import_mace()
        logger.info("loading pickled MACE model %s (runs code from the file)", path)
        model = torch.load(path, map_location=device, weights_only=False)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        reference = cls(model.to(dtype=dtype), head=head)
        return reference.with_cuequivariance() if cuequivariance else reference

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        head: str | None = None,
        cuequivariance: bool = False,
    ) -> MACEReference:
        """Load MACE weights saved by :func:`boostmd.forcefields.mace_io.save_mace` (safe to load).

        Parameters
        ----------
        path
            The weights file (a state dict with a JSON architecture).
        device
            Where to run the model.
        dtype
            ``"float32"`` (fast MD) or ``"float64"``.
        head
            Head of a multi-head model.
        cuequivariance
            Run on cuEquivariance kernels (:meth:`with_cuequivariance`).
        """
        from boostmd.forcefields.mace_io import load_mace

        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        reference = cls(load_mace(path, device=device, dtype=dtype), head=head)
        return reference.with_cuequivariance() if cuequivariance else reference

    def with_cuequivariance(self) -> MACEReference:
        """Return this reference running on NVIDIA's cuEquivariance kernels.

        mace-torch's converter rebuilds the model with cuEquivariance's tensor products
        and moves the weights over; energies, forces and node features are the same up to
        rounding (2e-7 eV on alanine dipeptide in float64), so the fingerprint is kept
        and surrogates made for this reference run with the converted one. Without
        ``cuequivariance-ops-torch`` (CPUs) the library falls back to plain torch, which
        is correct but slower.

        Raises
        ------
        ImportError
            If ``cuequivariance-torch`` is not installed, naming the packages.
        """
        try:
            import cuequivariance_torch  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "cuEquivariance kernels need cuequivariance-torch (and on NVIDIA GPUs its "
                "ops): pip install cuequivariance-torch cuequivariance-ops-torch-cu12"
            ) from error
        from mace.cli.convert_e3nn_cueq import run

        default_dtype = torch.get_default_dtype()
        try:  # the converter sets torch's default dtype to the model's
            model = run(self.model, device=self.device.type, return_model=True)
        finally:
            torch.set_default_dtype(default_dtype)
        converted = MACEReference(model.to(device=self.device, dtype=self.dtype), self.head)
        converted.fingerprint = self.fingerprint
        logger.info("reference converted to cuEquivariance kernels")
        return converted

    @property
    def feature_dim(self) -> int:
        """Number of invariant node features per atom (all layers)."""
        return int(self._columns.numel())

    def species_index(self, numbers: np.ndarray) -> torch.Tensor:
        """Map atomic numbers to the model's element indices, naming unknown elements."""
        index = element_indices(numbers, self.atomic_numbers, "the reference model")
        return torch.as_tensor(index, device=self.device)

    def _graph(
        self, species: torch.Tensor, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> dict[str, torch.Tensor]:
        from mace.data.neighborhood import get_neighborhood

        pbc = tuple(bool(p) for p in pbc)
        cell = np.array(cell, dtype=np.float64).reshape(3, 3)
        edge_index, shifts, unit_shifts, _ = get_neighborhood(
            positions=positions, cutoff=self.cutoff, pbc=pbc, cell=cell.copy()
        )
        n = len(positions)
        as_float = {"dtype": self.dtype, "device": self.device}
        one_hot = torch.nn.functional.one_hot(species, len(self.atomic_numbers))
        return {
            "positions": torch.tensor(positions, **as_float),
            "node_attrs": one_hot.to(self.dtype),
            "edge_index": torch.as_tensor(edge_index, dtype=torch.long, device=self.device),
            "shifts": torch.tensor(shifts, **as_float),
            "unit_shifts": torch.tensor(unit_shifts, **as_float),
            "cell": torch.tensor(cell, **as_float),
            "pbc": torch.tensor(pbc, dtype=torch.bool),  # read here, not by MACE
            "batch": torch.zeros(n, dtype=torch.long, device=self.device),
            "ptr": torch.tensor([0, n], device=self.device),
            "head": self._head,
        }

    def compute(
        self,
        numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
    ) -> ReferenceResult:
        """Run one forward pass.

        Parameters
        ----------
        numbers
            Atomic numbers, shape ``(n_atoms,)``.
        positions
            Cartesian positions in Å, shape ``(n_atoms, 3)``.
        cell
            Cell vectors in Å (rows); ignored along non-periodic directions.
        pbc
            Periodicity along each cell vector (default: a molecule, no periodicity).
        """
        return self._forward([self._system_graph(numbers, positions, cell, pbc)])[0]

    def compute_many(self, systems: Sequence) -> list[ReferenceResult]:
        """Run one forward pass over several systems (one batch of graphs).

        Parameters
        ----------
        systems
            :class:`ase.Atoms` objects (any sizes and elements the model knows).

        Returns
        -------
        list of ReferenceResult
            One per system, equal to :meth:`compute` on each up to rounding.
        """
        if not len(systems):
            raise ValueError("compute_many needs at least one system")
        graphs = [self._system_graph(a.numbers, a.positions, a.cell.array, a.pbc) for a in systems]
        return self._forward(graphs)

    def _system_graph(self, numbers, positions, cell, pbc) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) != len(numbers):
            raise ValueError(
                f"positions must have shape ({len(numbers)}, 3), got {positions.shape}"
            )
        if not np.isfinite(positions).all():
            raise ValueError("positions contain NaN or infinite values")
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell)
        pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
        return self._graph(self.species_index(numbers), positions, cell, pbc)

    def _forward(self, graphs: list[dict[str, torch.Tensor]]) -> list[ReferenceResult]:
        self._forward_passes += 1
        if self.heap_trim_interval and self._forward_passes % self.heap_trim_interval == 0:
            release_free_heap()
        data = graphs[0] if len(graphs) == 1 else _collate(graphs)
        # Models from load() have no TorchScript (mace_import.eager_e3nn); a pickled
        # model's e3nn modules do, and unoptimised execution keeps their first call's
        # result equal to later ones' there too, at the same speed.
        bulk = [bool(graph["pbc"].all()) for graph in graphs]
        with torch.enable_grad(), torch.jit.optimized_execution(False):
            out = self.model(data, training=False, compute_force=True, compute_stress=any(bulk))
        sizes = [len(graph["positions"]) for graph in graphs]
        forces = out["forces"].detach().split(sizes)
        features = out["node_feats"].detach().index_select(1, self._columns).split(sizes)
        energies = out["energy"].detach()
        stresses = out["stress"].detach() if any(bulk) else None
        return [
            ReferenceResult(
                energy=energies[i],
                forces=forces[i],
                node_features=features[i],
                stress=stresses[i] if bulk[i] else None,
            )
            for i in range(len(graphs))
        ]

    def __call__(self, atoms) -> ReferenceResult:
        """Run one forward pass on an :class:`ase.Atoms`."""
        return self.compute(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)

    def __repr__(self) -> str:
        elements = "".join(chemical_symbols[z] for z in self.atomic_numbers)
        return (
            f"MACEReference(elements={elements}, cutoff={self.cutoff}, "
            f"features={self.feature_dim}, dtype={self.dtype}, fingerprint={self.fingerprint})"
        )
