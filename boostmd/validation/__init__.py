"""Does BoostMD sample what the reference samples? Runs, statistics and verdicts.

``validate`` (the command), ``runs`` (checkpointed Langevin and NVE runs), ``stored``
(reference runs computed once and reused), ``report`` (metrics, noise floors, verdict),
``configurational`` (configurational temperatures from the reference's forces),
``sampling`` (distribution distances, block standard errors), ``dihedrals`` (phi/psi) and
``plots``. Imports :mod:`boostmd.dynamics` and :mod:`boostmd.forcefields`.
"""
