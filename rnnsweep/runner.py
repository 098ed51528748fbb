"""Running sweeps: sample trials, plan groups, train them, record results.

This is the Python loop around the engine: one iteration per segment of
``eval_every`` steps (a single compiled ``lax.scan``), an evaluation after
each, and one database transaction per finished group. Everything is
validated (space, trials, groups, task data, workdir) before the first byte
is written.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from rnnsweep import engine
from rnnsweep import report
from rnnsweep import samplers
from rnnsweep import space as space_lib
from rnnsweep.groups import Group, plan_groups
from rnnsweep.store import Store, TrialResult
from rnnsweep.tasks.base import Task

DEFAULT_MAX_GROUP_SIZE = 32


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """A finished sweep.

  Attributes:
    trials: every trial's result, in id order.
    best: the best completed trial by the task's selection metric, or
      ``None``.
    metric: the selection metric's name (validation).
    mode: ``min`` or ``max``.
    tuned: names of the parameters the space varied (for tables).
    workdir: where results were written, or ``None``.
  """

  trials: list[TrialResult]
  best: TrialResult | None
  metric: str
  mode: str
  tuned: list[str]
  workdir: str | None = None

  def ranked(self) -> list[TrialResult]:
    return report.rank(self.trials, self.mode)

  def leaderboard(self, top: int = 10) -> str:
    return report.leaderboard(self.trials, mode=self.mode, columns=self.tuned,
                              top=top)


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _quiet(_: str) -> None:
  pass


def _stderr(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run_group(task: Task, group: Group, *, steps: int, eval_every: int,
              data_seed: int) -> list[TrialResult]:
  """Trains one group to ``steps`` and returns its real trials' results."""
  prog = engine.get_program(group.static, task)
  padded = group.padded_trials()
  hp = engine.hparam_arrays([t.params for t in padded])
  seeds = engine.seed_array([t.seed for t in padded])
  data = task.data()
  data_key = jax.random.PRNGKey(data_seed)
  start = time.perf_counter()
  state = prog.init(seeds, hp)
  eval_steps, train_loss, val = [], [], {}
  done = 0
  while done < steps:
    n = min(eval_every, steps - done)
    state, seg = prog.segment(state, hp, data.train, data_key, num_steps=n)
    metrics = prog.evaluate(state, data.val)
    done += n
    eval_steps.append(done)
    train_loss.append(np.asarray(seg.train_loss, np.float64))
    for k, v in metrics.items():
      val.setdefault(k, []).append(np.asarray(v, np.float64))
  diverged = np.asarray(state.trials.diverged)
  diverged_step = np.asarray(state.trials.diverged_step)
  wall = time.perf_counter() - start

  results = []
  for i, trial in enumerate(group.trials):
    # An evaluation after the diverging update saw frozen parameters: drop it.
    alive = np.array([not diverged[i] or s <= diverged_step[i]
                      for s in eval_steps])
    curves: dict[str, list] = {"step": list(eval_steps),
                               "train_loss": [float(x[i]) for x in train_loss]}
    for k, series in val.items():
      curves[f"val/{k}"] = [float(x[i]) if a else math.nan
                            for x, a in zip(series, alive)]
    sel = np.array(curves[f"val/{task.selection_metric}"])
    finite = np.isfinite(sel)
    best_value = best_step = None
    if finite.any():
      pick = np.where(finite, sel, np.inf if task.selection_mode == "min"
                      else -np.inf)
      j = int(np.argmin(pick) if task.selection_mode == "min"
              else np.argmax(pick))
      best_value, best_step = float(sel[j]), int(eval_steps[j])
    final = {k: float(series[-1][i]) if alive[-1] else math.nan
             for k, series in val.items()}
    if alive[-1]:
      final.update(task.derived_metrics(final))
    status = "diverged" if diverged[i] or not finite[-1] else "completed"
    results.append(TrialResult(
        trial_id=trial.trial_id, params=dict(trial.params), seed=trial.seed,
        status=status, group_id=group.group_id,
        metric=task.selection_metric, best_value=best_value,
        best_step=best_step, final_metrics=final, curves=curves,
        diverged_step=int(diverged_step[i]) if diverged[i] else None,
        wall_time_s=wall))
  return results


def execute(task: Task, trials: Sequence[samplers.TrialSpec], *, steps: int,
            eval_every: int, max_group_size: int = DEFAULT_MAX_GROUP_SIZE,
            seed: int = 0, workdir: str | None = None,
            settings: Mapping[str, Any] | None = None,
            tuned: Sequence[str] = (),
            log: Callable[[str], None] | None = None) -> SweepResult:
  """Trains the given trials in groups and records them.

  Args:
    task: the task.
    trials: fully resolved trials with unique ids.
    steps: updates (TBPTT windows) per trial.
    eval_every: validation interval in steps (the last segment may be
      shorter).
    max_group_size: largest K; ``1`` runs every trial alone.
    seed: sweep seed; also seeds the data stream shared by all trials.
    workdir: where to write ``results.db`` / ``results.csv`` (``None``:
      nothing is written).
    settings: extra settings to record in the database.
    tuned: parameter names to show in the leaderboard.
    log: receives one line per group; ``None`` is silent.
  """
  _check_positive_int("steps", steps)
  _check_positive_int("eval_every", eval_every)
  if not trials:
    raise ValueError("no trials to run")
  log = log or _quiet
  groups = plan_groups(trials, max_group_size)
  task.data()  # build (and so validate) the data before writing anything
  store = None
  if workdir is not None:
    Store.check_fresh(workdir)
    store = Store(workdir)
    store.create(dict(settings or {}, task=task.name,
                      task_config=task.config(), steps=steps,
                      eval_every=eval_every, max_group_size=max_group_size,
                      seed=seed, num_trials=len(trials),
                      versions=_versions(), created=time.time()),
                 trials, task.selection_metric)
    store.write_csv()
  log(f"{len(trials)} trials in {len(groups)} groups on "
      f"{jax.devices()[0].platform}; {steps} steps each, evaluating every "
      f"{eval_every}")
  results: list[TrialResult] = []
  for group in groups:
    before = sum(engine.trace_counts().values())
    group_results = run_group(task, group, steps=steps, eval_every=eval_every,
                              data_seed=seed)
    compiled = sum(engine.trace_counts().values()) - before
    if store is not None:
      store.record(group_results)
      store.write_csv()
    results.extend(group_results)
    so_far = report.best(results, task.selection_mode)
    best_text = (f"best {task.selection_metric} so far {so_far.best_value:.4g}"
                 f" (trial {so_far.trial_id})" if so_far
                 else "no completed trial yet")
    log(f"group {group.group_id + 1}/{len(groups)} {group.static.label()} "
        f"K={group.size} ({len(group.trials)} trials): "
        f"{group_results[0].wall_time_s:.1f}s"
        f"{' incl. compile' if compiled else ''}; {best_text}")
  results.sort(key=lambda r: r.trial_id)
  return SweepResult(trials=results,
                     best=report.best(results, task.selection_mode),
                     metric=task.selection_metric, mode=task.selection_mode,
                     tuned=list(tuned), workdir=workdir)


def _versions() -> dict[str, str]:
  import flax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from rnnsweep import __version__  # pylint: disable=import-outside-toplevel
  return {"rnnsweep": __version__, "jax": jax.__version__,
          "flax": flax.__version__, "optax": optax.__version__,
          "device": str(jax.devices()[0].device_kind)}


def task_space(task: Task, space: space_lib.Space | None) -> space_lib.Space:
  """The space a sweep on ``task`` samples: the task's base defaults, then
  ``space`` (or the task's default space) on top."""
  base = space_lib.Space(task.base_params())
  return base.updated(space if space is not None else task.default_space())


def sweep(task: Task, space: space_lib.Space | None = None, *,
          sampler: str = "random", num_trials: int | None = 16,
          steps: int = 300, eval_every: int = 100,
          max_group_size: int = DEFAULT_MAX_GROUP_SIZE, seed: int = 0,
          workdir: str | None = None, verbose: bool = False) -> SweepResult:
  """Samples a space and trains every trial.

  Args:
    task: what to train on (see :mod:`rnnsweep.tasks`).
    space: the search space; ``None`` uses ``task.default_space()``. The
      task's own defaults (e.g. full-length truncation for the adding
      problem) apply to names the space leaves out.
    sampler: ``random`` or ``grid``.
    num_trials: trials for ``random`` (ignored by ``grid``).
    steps, eval_every, max_group_size, seed, workdir: see :func:`execute`.
    verbose: print one line per group to stderr.

  Returns:
    A :class:`SweepResult`.
  """
  full = task_space(task, space)
  trials = samplers.sample(full, sampler, num_trials=num_trials, seed=seed)
  return execute(task, trials, steps=steps, eval_every=eval_every,
                 max_group_size=max_group_size, seed=seed, workdir=workdir,
                 settings={"sampler": sampler, "space": full.to_json()},
                 tuned=full.tuned_names(), log=_stderr if verbose else None)


def run_trials(task: Task, configs: Sequence[Mapping[str, Any]], *,
               steps: int, eval_every: int,
               max_group_size: int = DEFAULT_MAX_GROUP_SIZE, seed: int = 0,
               workdir: str | None = None,
               verbose: bool = False) -> SweepResult:
  """Trains an explicit list of configurations.

  Each config is a partial ``name -> value`` mapping; the task's base
  defaults and then the global defaults fill the rest. Trial ids are the
  list positions. ``max_group_size=1`` trains every trial alone, which is
  how vmap invariance is checked.
  """
  base = task.base_params()
  trials = samplers.make_trials([{**base, **c} for c in configs], seed=seed)
  tuned = sorted({k for c in configs for k in c
                  if len({repr(cc.get(k)) for cc in configs}) > 1})
  return execute(task, trials, steps=steps, eval_every=eval_every,
                 max_group_size=max_group_size, seed=seed, workdir=workdir,
                 settings={"sampler": "explicit"}, tuned=tuned,
                 log=_stderr if verbose else None)
