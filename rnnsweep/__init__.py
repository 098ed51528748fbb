"""rnnsweep: vectorised hyperparameter sweeps for recurrent sequence models.

Many same-shaped trials train at once inside one jitted, vmapped XLA
program. Typical use::

    import rnnsweep as rs
    task = rs.make_task("lm")
    space = rs.Space({"learning_rate": rs.LogUniform(1e-3, 2e-2),
                      "cell": rs.Choice(["lstm", "gru"])})
    result = rs.sweep(task, space, num_trials=16, steps=300, eval_every=100)
    print(result.leaderboard())
"""

__version__ = "0.1.0"

from rnnsweep.engine import EngineOptions
from rnnsweep.groups import Group, StaticConfig, plan_groups
from rnnsweep.runner import (SweepResult, execute, run_trials, sweep,
                             sweep_settings, task_space)
from rnnsweep.settings import SweepSettings
from rnnsweep.samplers import (TrialSpec, around, grid, load_trials,
                               make_trials, quasirandom, random)
from rnnsweep.space import (Choice, Fixed, IntLogUniform, IntUniform,
                            LogUniform, PARAMS, Space, Uniform, load_space)
from rnnsweep.schedulers import SchedulerSettings
from rnnsweep import (batch_search, distributed, interop, placement, report,
                      resume, samplers, schedulers, sizing)
from rnnsweep.store import Store, TrialResult
from rnnsweep.tasks import (Adding, CharLM, Classify, Copy, Forecast, Task,
                            make_task)

__all__ = [
    "Adding", "CharLM", "Choice", "Classify", "Copy", "EngineOptions",
    "Forecast", "Fixed", "Group", "IntLogUniform", "IntUniform",
    "LogUniform", "PARAMS", "SchedulerSettings", "Space", "StaticConfig",
    "Store", "SweepResult", "SweepSettings", "Task", "TrialResult",
    "TrialSpec", "Uniform", "around", "batch_search", "distributed",
    "execute", "grid",
    "interop", "load_space", "load_trials", "make_task", "make_trials",
    "placement", "plan_groups", "quasirandom", "random", "report", "resume", "run_trials",
    "samplers", "schedulers", "sizing", "sweep", "sweep_settings",
    "task_space",
]
