"""The registry of objectives the hub's workers run: code that lives on the server.

Nothing received over the network is executed. An objective is one of:

- built in: benchmark functions (studies/objectives/builtin.py) and
  scikit-learn models on datasets shipped with scikit-learn (sklearn_models.py);
- a project's own, named by dotted path in ``settings.HUB_OBJECTIVES``: a
  module (every ObjectiveInfo in it), an ObjectiveInfo made with
  ``@objective(...)``, or a plain ``f(trial) -> value`` function;
- a CommandObjective row registered by staff in the admin (command.py).

An objective samples the study's declared search space when it has one and its
own default space otherwise, so ``sphere`` over a declared 10-parameter space is
the 10-dimensional sphere. Benchmark functions also take a dimension after a
colon: ``sphere:10``.
"""

from studies.objectives.base import ObjectiveFunction, ObjectiveInfo, RunContext, objective

__all__ = ["ObjectiveFunction", "ObjectiveInfo", "RunContext", "objective"]
