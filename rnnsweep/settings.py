"""One frozen value holds every setting that shapes a sweep's results.

:class:`SweepSettings` is built once (from :func:`~rnnsweep.sweep`'s
arguments, :func:`~rnnsweep.run_trials`'s, or the script's flags) and then
used in three places that must never disagree: the default workdir is named
by its :meth:`~SweepSettings.digest`, the store saves its
:meth:`~SweepSettings.record`, and continuing a workdir compares that record
with the stored one. A setting added here is in all three at once.

Runtime knobs that cannot change a number (how often to checkpoint, whether
to draw a progress bar, ``extend``) are not settings: they are arguments of
the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from rnnsweep import engine
from rnnsweep import schedulers
from rnnsweep import sizing
from rnnsweep import space as space_lib
from rnnsweep.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """Everything a sweep's results depend on.

  Attributes:
    task: the task's name.
    task_config: the task's own settings (sequence length, data set, ...).
    sampler: ``grid``, ``random``, ``quasirandom``, ``around``, ``trials``
      (a file), ``optuna:<name>`` or ``explicit`` (a list of configs).
    space: the full search space as JSON (``None`` for explicit trials).
    num_trials: trials in the sweep.
    steps: updates per trial.
    eval_every: validation interval in steps.
    max_group_size: ``"auto"`` or the largest K.
    seed: the sweep seed (sampling, trial seeds, the shared data stream).
    engine: how programs are built (precision, unroll, donation, hoisting).
    selection_metric, selection_mode: the task's validation metric and
      whether lower (``min``) or higher (``max``) is better.
    scheduler: early stopping or PBT, with its options.
    sampler_options: the sampler's own settings (``around``: the base and
      points per axis; ``trials``: the file's name and a digest of its
      configurations; ``optuna:*``: rounds, trials per round, storage).
  """

  task: str
  task_config: Mapping[str, Any]
  sampler: str
  space: Mapping[str, Any] | None
  num_trials: int
  steps: int
  eval_every: int
  max_group_size: int | str
  seed: int
  engine: engine.EngineOptions
  selection_metric: str
  selection_mode: str
  scheduler: schedulers.SchedulerSettings = schedulers.SchedulerSettings()
  sampler_options: Mapping[str, Any] = dataclasses.field(
      default_factory=dict)

  @classmethod
  def make(cls, task: Task, *, sampler: str, space: Any, num_trials: int,
           steps: int, eval_every: int, max_group_size: int | str,
           seed: int, options: engine.EngineOptions | None = None,
           scheduler: schedulers.SchedulerSettings | str | None = None,
           sampler_options: Mapping[str, Any] | None = None
           ) -> "SweepSettings":
    """Checks and builds the settings of a sweep on ``task`` (one
    :class:`ValueError` line naming the bad setting)."""
    for name, value in (("steps", steps), ("eval_every", eval_every),
                        ("num_trials", num_trials)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    space_lib.check_seed("seed", seed)
    if scheduler is None or isinstance(scheduler, str):
      scheduler = schedulers.SchedulerSettings(scheduler or "none")
    scheduler = scheduler.checked(steps=steps, eval_every=eval_every)
    if scheduler.name == "pbt" and space is None:
      raise ValueError("scheduler 'pbt' needs a search space to perturb "
                       "within (explicit trials have none)")
    return cls(task=task.name, task_config=task.config(), sampler=sampler,
               space=space.to_json() if space is not None else None,
               num_trials=num_trials, steps=steps, eval_every=eval_every,
               max_group_size=sizing.check_max_group_size(max_group_size),
               seed=seed, engine=options or engine.EngineOptions(),
               selection_metric=task.selection_metric,
               selection_mode=task.selection_mode, scheduler=scheduler,
               sampler_options=json.loads(json.dumps(
                   dict(sampler_options or {}), sort_keys=True)))

  def resolved(self, platform: str | None = None) -> "SweepSettings":
    """These settings with the engine's ``auto`` precision and unroll
    chosen for ``platform`` (:meth:`~rnnsweep.engine.EngineOptions.resolved`):
    what a sweep records, names its workdir by and compares on resume."""
    return dataclasses.replace(self, engine=self.engine.resolved(platform))

  def record(self) -> dict[str, Any]:
    """The settings as JSON-ready values (what the store saves and
    compares)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["engine"] = self.engine.record()
    out["scheduler"] = self.scheduler.record()
    out["task_config"] = dict(self.task_config)
    out["sampler_options"] = dict(self.sampler_options)
    return json.loads(json.dumps(out, sort_keys=True))

  def full_space(self) -> space_lib.Space | None:
    """The sweep's space (``None`` for explicit trials)."""
    return (None if self.space is None
            else space_lib.space_from_json(self.space))

  def digest(self) -> str:
    """Eight hex digits naming these settings (the default workdir)."""
    text = json.dumps(self.record(), sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


#: The record's keys that must match to continue a sweep in a workdir.
COMPARED = tuple(f.name for f in dataclasses.fields(SweepSettings))
