"""The force fields: the reference MACE, the surrogate and their parts.

``reference`` (:class:`MACEReference`: energy, forces and node features of a MACE),
``surrogate`` (the feature-reusing model of the energy change since a reference frame)
with its ``graph`` (radius graphs, central pair forces) and ``many_body`` term,
``elements``, the file formats (``mace_io``, ``files``, ``upgrade`` of older surrogate
files), ``mace_import`` (the one place mace-torch is imported), ``pretrained`` and the
shipped weights in ``models/``, ``peptides`` (the capped dipeptides they cover) and
``testing`` (small MACE models for tests). Imports nothing else of :mod:`boostmd`.
"""
