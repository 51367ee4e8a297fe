"""The dynamics: BoostMD's calculator and integrators, and what drives their calls.

``calculator`` (:class:`BoostMDCalculator`, an ASE calculator), ``integrator``
(:class:`BoostLangevin`: checked windows, rollbacks), ``adaptive``
(:class:`AdaptiveLangevin`, the per-atom adaptive friction), ``device_window`` (whole
windows in torch), ``model_calls`` and ``replicas`` (batched model calls of many runs),
``calibration`` (the surrogate's curvature scale), ``md`` (Langevin set-up helpers) and
``stability`` (bond topology, collapse detection). Imports :mod:`boostmd.forcefields`
only.
"""
