"""Running sweeps: sample trials, plan groups, train them, record results.

This is the Python loop around the engine: one iteration per segment of
``eval_every`` steps (a single compiled ``lax.scan``), an evaluation after
each, and one database transaction per finished group. Everything is
validated (space, trials, groups, task data, workdir) before the first byte
is written.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from rnnsweep import batch_search
from rnnsweep import checkpoint
from rnnsweep import distributed
from rnnsweep import engine
from rnnsweep import faults
from rnnsweep import placement
from rnnsweep import progress as progress_lib
from rnnsweep import report
from rnnsweep import resume
from rnnsweep import samplers
from rnnsweep import schedulers
from rnnsweep import selection
from rnnsweep import sizing
from rnnsweep import space as space_lib
from rnnsweep.groups import Group, StaticConfig, plan_groups, split_group
from rnnsweep.settings import SweepSettings
from rnnsweep import store as store_lib
from rnnsweep.store import Owner, Store, TrialResult
from rnnsweep.tasks.base import Task

DEFAULT_MAX_GROUP_SIZE = sizing.AUTO
DEFAULT_CHECKPOINT_SECONDS = 60.0
CHECKPOINT_DIR = "checkpoints"


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
    failed: trial id -> error, for trials whose group raised (they stay
      ``failed`` in the store and run again when the sweep is resumed).
  """

  trials: list[TrialResult]
  best: TrialResult | None
  metric: str
  mode: str
  tuned: list[str]
  workdir: str | None = None
  failed: Mapping[int, str] = dataclasses.field(default_factory=dict)

  def ranked(self) -> list[TrialResult]:
    return report.rank(self.trials, self.mode)

  def leaderboard(self, top: int = 10) -> str:
    return report.leaderboard(self.trials, mode=self.mode, columns=self.tuned,
                              top=top)

  def replicated(self) -> list[report.Replicated]:
    """The configurations trained with several seeds, best mean first
    (:func:`rnnsweep.report.replicated`)."""
    return report.replicated(self.trials, self.tuned, self.mode)


def _quiet(_: str) -> None:
  pass


def log_stderr(msg: str) -> None:
  """The per-group log of a verbose sweep: one line to stderr."""
  print(msg, file=sys.stderr, flush=True)


class _TakenOver(Exception):
  """Another process took the group over while this one trained it."""


def _fresh_progress(group: Group) -> dict:
  """The host side of a group's run (checkpointed beside the state)."""
  n = min(group.size, len(group.trials))
  return {"wall_s": 0.0,
          # evaluations so far: names the checkpoints (slots' steps differ)
          "tick": 0,
          # slot -> position in group.trials of the trial it holds, or -1
          "slots": [i if i < n else -1 for i in range(group.size)],
          "next": n,
          "curves": {}, "started": {}, "scheduler": None,
          # decisions taken but not yet written (the first slots' starts)
          "unwritten": [[group.trials[i].trial_id, 0, "start", None,
                         {"slot": i}] for i in range(n)]}


def run_group(task: Task, group: Group, *, steps: int, eval_every: int,
              data_seed: int, checkpoint_dir: str | None = None,
              checkpoint_seconds: float = 0.0,
              on_segment: Callable[[int], None] | None = None,
              options: engine.EngineOptions | None = None,
              scheduler: schedulers.SchedulerSettings | None = None,
              space: space_lib.Space | None = None,
              on_tick: Callable[..., bool] | None = None,
              devices: Sequence[Any] | None = None,
              log: Callable[[str], None] | None = None
              ) -> list[TrialResult]:
  """Trains one group until every trial it holds or queues has finished.

  The loop runs one segment (up to the next evaluation boundary of each
  slot), evaluates, lets the scheduler decide, writes what finished and
  what was decided (``on_tick``), refills freed slots from the queue and
  applies PBT exploits, then maybe checkpoints.

  Args:
    task, group: what to train.
    steps, eval_every: length and validation interval, in updates.
    data_seed: seed of the data stream every trial shares.
    checkpoint_dir: if given, the group resumes from its newest usable
      checkpoint there, and saves one after a segment whenever
      ``checkpoint_seconds`` have passed since the last (0: every segment).
    on_segment: called with the trial-steps each finished segment trained.
    options: how the program is built (precision, unroll, donation).
    scheduler: early stopping or PBT (checked settings; ``None``: none).
    space: the sweep's space (PBT perturbs within it).
    on_tick: ``on_tick(results, decisions, done, refilled, running)`` after
      each evaluation, with the trials that finished there, the decisions
      taken, how many slots were refilled and how many trials the group
      now trains; it returns False when the group is no longer this
      process's.
    devices: the devices the slots are sharded over (``None``: the default
      device). The slots are padded to a multiple of their number; a
      checkpoint written on another number of devices is padded (or was
      padded) the same way, so a group resumes on any count.
    log: receives a line when the group continues from a checkpoint.

  Returns:
    The results of the trials that finished in this call (a resumed group's
    trials recorded before the interruption are in the store).
  """
  scheduler = scheduler or schedulers.SchedulerSettings()
  prog = engine.get_program(group.static, task, options, devices)
  n_dev = prog.num_devices
  padded = group.padded_trials()
  padded += [padded[0]] * (placement.padded_size(len(padded), n_dev)
                           - len(padded))
  hp = engine.hparam_arrays([t.params for t in padded], horizon=steps)
  seeds = engine.seed_array([t.seed for t in padded])
  data = prog.put_replicated(task.data())
  data_key = prog.put_replicated(engine.data_key(data_seed))
  sel = task.selection_metric
  state, progress = None, None
  if checkpoint_dir is not None:
    # Process 0 reads it; every process receives it.
    restored = distributed.on_leader(lambda: _restore(
        prog, group, checkpoint_dir, seeds, hp))
    if restored is not None:
      state, progress = restored
      written = len(progress["slots"])
      state, progress["slots"] = _fit_devices(prog, state, progress["slots"])
      (log or _quiet)(
          f"group {group.group_id + 1} continues from its checkpoint after "
          f"evaluation {progress['tick']} ({written} slots"
          + ("" if written == len(progress["slots"]) else
             f", {len(progress['slots'])} on {n_dev} devices") + ")")
  start = time.perf_counter()
  # A fresh group's steps are all 0. On an accelerator, not reading them
  # from the device lets the host compile the first segment while the
  # device still runs init (dispatch is asynchronous; reading them would
  # wait for init first), and the best-parameter update compiles while
  # the device trains, before the evaluation is read. Not on a CPU, where
  # compiles and runs share the cores: there a 256-trial init (1.6 s) and
  # a segment's compile (2.6 s) took 6.4 s together.
  overlap = prog.platform != "cpu"
  steps_known = None
  if state is None:
    progress = _fresh_progress(group)
    progress["slots"] += [-1] * (len(padded) - len(progress["slots"]))
    if prog.options.compile_at_once:
      prog.prepare(seeds, hp, data, data_key)
    state = prog.init(seeds, hp)
    if overlap:
      steps_known = np.zeros(len(padded), np.int32)
  wall_before = progress["wall_s"]
  sched = schedulers.Scheduler(scheduler, steps=steps,
                               mode=task.selection_mode, space=space,
                               seed=data_seed, state=progress["scheduler"])
  slots, curves = progress["slots"], progress["curves"]
  finished_results: list[TrialResult] = []
  last_save = time.monotonic()
  while any(i >= 0 for i in slots):
    faults.point("segment_start")
    step_now = (prog.to_host(state.trials.step) if steps_known is None
                else steps_known)
    steps_known = None
    stop_at = step_now.copy()
    for s, i in enumerate(slots):
      if i >= 0:
        stop_at[s] = min((step_now[s] // eval_every + 1) * eval_every, steps)
    state, seg = prog.segment(state, data.train, data_key,
                              num_steps=int(np.max(stop_at - step_now)),
                              stop_at=stop_at)
    metrics = prog.evaluate(state, data.val)
    if overlap:
      prog.compiled_keep_best(state, np.zeros(len(slots), np.float32))
    metrics = {k: np.asarray(v, np.float64) for k, v in
               prog.to_host(metrics).items()}
    held = np.array([i >= 0 for i in slots])
    state = prog.keep_best(state, np.where(held, metrics[sel], np.nan
                                           ).astype(np.float32))
    faults.point("segment_done")
    progress["tick"] += 1
    if on_segment is not None:
      on_segment(int(np.sum(stop_at - step_now)))
    wall = wall_before + time.perf_counter() - start
    diverged, diverged_step, trial_hp, loss = prog.to_host(
        (state.trials.diverged, state.trials.diverged_step, state.trials.hp,
         seg.train_loss))
    trial_hp = {k: np.asarray(v, np.float64) for k, v in trial_hp.items()}
    loss = np.asarray(loss, np.float64)
    finished, arrivals = [], []
    for s, i in enumerate(slots):
      if i < 0:
        continue
      tid = str(group.trials[i].trial_id)
      c = curves.setdefault(tid, {"step": [], "train_loss": []})
      c["step"].append(int(stop_at[s]))
      c["train_loss"].append(float(loss[s]))
      for k, v in metrics.items():
        # An evaluation after the diverging update saw frozen parameters.
        c.setdefault(f"val/{k}", []).append(
            math.nan if diverged[s] else float(v[s]))
      if stop_at[s] >= steps:
        finished.append((s, "diverged" if diverged[s] else "completed"))
      elif diverged[s] and scheduler.name != "pbt":
        finished.append((s, "diverged"))  # nothing left to learn
      else:
        arrivals.append(schedulers.Arrival(
            s, int(tid), int(stop_at[s]),
            math.nan if diverged[s] else float(metrics[sel][s]),
            {k: float(v[s]) for k, v in trial_hp.items()
             if k != engine.HORIZON}))
    outcome = sched.decide(arrivals)
    finished += [(a.slot, "pruned") for a in arrivals
                 if a.trial_id in outcome.pruned]
    lineage = progress.setdefault("lineage", {})
    for d in outcome.decisions:
      if d.kind == "exploit":
        lineage.setdefault(str(d.trial_id), []).append(
            dict(d.detail, step=d.step))
    decisions = [schedulers.Decision(*d) for d in progress["unwritten"]]
    decisions += outcome.decisions
    results = []
    if finished:
      # Each finished trial's best-validation parameters meet the test
      # split once.
      test = {k: np.asarray(v, np.float64) for k, v in prog.to_host(
          prog.evaluate(state, data.test, best=True)).items()}
      for s, status in finished:
        trial = group.trials[slots[s]]
        results.append(_trial_result(
            task, group, trial, curves[str(trial.trial_id)],
            {k: v[s] for k, v in test.items()}, status,
            int(diverged_step[s]) if diverged[s] else None,
            wall - progress["started"].get(str(trial.trial_id), 0.0),
            lineage.get(str(trial.trial_id), ())))
    refills = []
    for s, _ in finished:
      slots[s] = -1
      if progress["next"] < len(group.trials):
        slots[s] = progress["next"]
        trial = group.trials[progress["next"]]
        progress["next"] += 1
        progress["started"][str(trial.trial_id)] = wall
        refills.append((s, trial))
        decisions.append(schedulers.Decision(trial.trial_id, 0, "start",
                                             None, {"slot": s}))
    done = not any(i >= 0 for i in slots)
    if on_tick is not None and not on_tick(
        results, decisions, done, len(refills),
        sum(i >= 0 for i in slots)):
      raise _TakenOver()
    finished_results += results
    progress["unwritten"] = []
    faults.point("tick_recorded")  # written; slots not refilled yet
    for s, trial in refills:
      state = prog.reset_slot(state, np.int32(s), np.int32(trial.seed),
                              engine.trial_hparams(trial.params,
                                                   horizon=steps))
    if outcome.exploits:
      sources = np.arange(len(slots), dtype=np.int32)
      new_hp = {k: v.astype(np.float32) for k, v in trial_hp.items()}
      for e in outcome.exploits:
        sources[e.slot] = e.source
        for k, v in e.hp.items():
          new_hp[k][e.slot] = v
      state = prog.exploit(state, sources, new_hp)
    if scheduler.queued and progress["next"] >= len(group.trials):
      state, slots = _shrink(prog, state, slots)
      progress["slots"] = slots
    progress["scheduler"] = sched.state
    # Process 0's clock decides for every process.
    if checkpoint_dir is not None and not done and distributed.on_leader(
        lambda: time.monotonic() - last_save >= checkpoint_seconds):
      progress["wall_s"] = wall_before + time.perf_counter() - start
      host_state = prog.to_host(state)
      if distributed.is_leader():
        checkpoint.save(checkpoint_dir, group.group_id, progress["tick"],
                        host_state, progress)
      last_save = time.monotonic()
  return finished_results


def _restore(prog: engine.Program, group: Group, directory: str,
             seeds: np.ndarray, hp: Mapping[str, np.ndarray]
             ) -> checkpoint.Restored | None:
  """The group's newest usable checkpoint in ``directory``, or ``None``."""
  # Tracing init for the state's shapes costs time: only when there is a
  # checkpoint to check against them.
  if not checkpoint.checkpoints(directory, group.group_id):
    return None
  # A queued group may have shrunk: the record says to how many slots.
  # (Written on another number of devices, it may hold more slots.)
  rows = lambda progress: np.arange(len(progress["slots"])) % len(seeds)
  template = lambda progress: engine.state_shape(
      prog, seeds[rows(progress)],
      {k: v[rows(progress)] for k, v in hp.items()})
  return checkpoint.load_latest(directory, group.group_id, template)


def _fit_devices(prog: engine.Program, state: engine.GroupState,
                 slots: list[int]) -> tuple[engine.GroupState, list[int]]:
  """A restored state (host arrays) with a slot count the program's
  devices do not divide (written on another number of devices) gains
  empty slots: copies of slot 0 that never train."""
  k = placement.padded_size(len(slots), prog.num_devices)
  if k == len(slots):
    return state, slots
  rows = np.asarray(list(range(len(slots))) + [0] * (k - len(slots)))
  return (jax.tree_util.tree_map(lambda a: np.asarray(a)[rows], state),
          slots + [-1] * (k - len(slots)))


def _shrink(prog: engine.Program, state: engine.GroupState,
            slots: list[int]) -> tuple[engine.GroupState, list[int]]:
  """Once a queued group has no trials left to start: when at most half
  its slots still hold a trial, move those into a smaller group (the next
  power of two, so groups of one shape share the smaller programs; a
  multiple of the devices).
  Empty slots still cost compute; a trial's numbers do not depend on K."""
  held = [s for s, i in enumerate(slots) if i >= 0]
  k = placement.padded_size(1 << max(0, len(held) - 1).bit_length(),
                            prog.num_devices)
  if not held or k > len(slots) // 2:
    return state, slots
  rows = held + [held[0]] * (k - len(held))
  state = prog.compact(state, np.asarray(rows, np.int32))
  return state, [slots[s] for s in held] + [-1] * (k - len(held))


def _trial_result(task: Task, group: Group, trial: samplers.TrialSpec,
                  curves: Mapping[str, list], test: Mapping[str, float],
                  status: str, diverged_step: int | None, wall: float,
                  lineage: Sequence[Mapping[str, Any]] = ()) -> TrialResult:
  """One finished trial's record from its curves and test metrics."""
  sel = np.array(curves[f"val/{task.selection_metric}"])
  finite = np.isfinite(sel)
  best_value = best_step = None
  if finite.any():
    j = int(np.argmin(np.where(
        finite, selection.lower_is_better(sel, task.selection_mode),
        np.inf)))
    best_value, best_step = float(sel[j]), int(curves["step"][j])
  final = {k[4:]: float(v[-1]) for k, v in curves.items()
           if k.startswith("val/")}
  if finite[-1]:
    final.update(task.derived_metrics(final))
  test_metrics = {}
  if best_value is not None:
    test_metrics = {k: float(v) for k, v in test.items()}
    test_metrics.update(task.derived_metrics(test_metrics))
  if status == "completed" and not finite[-1]:
    status = "diverged"
  return TrialResult(
      trial_id=trial.trial_id, params=dict(trial.params), seed=trial.seed,
      status=status, group_id=group.group_id,
      metric=task.selection_metric, best_value=best_value,
      best_step=best_step, final_metrics=final,
      curves={k: list(v) for k, v in curves.items()},
      diverged_step=diverged_step, wall_time_s=wall,
      test_metrics=test_metrics,
      stopped_step=int(curves["step"][-1]) if status == "pruned" else None,
      lineage=tuple(dict(e) for e in lineage))


def execute(task: Task, trials: Sequence[samplers.TrialSpec] | None,
            settings: SweepSettings, *, workdir: str | None = None,
            tuned: Sequence[str] = (), extend: bool = False,
            checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
            log: Callable[[str], None] | None = None,
            progress: bool = False, devices: Any = "all") -> SweepResult:
  """Trains the given trials in groups and records them.

  With an ``optuna:*`` sampler ``trials`` is ``None``: the trials are asked
  in rounds (:func:`execute_rounds`, which calls this function with each
  round's trials so far).

  With a ``workdir`` that already holds this sweep (same settings), the
  run continues it: finished groups are skipped, interrupted ones resume
  from their last checkpoint, and the result holds every trial. Another
  process running the same sweep on the same workdir at the same time
  trains other groups, never the same one.

  Args:
    task: the task (``settings`` was made from it).
    trials: fully resolved trials with ids ``0..n-1``.
    settings: everything the results depend on (steps, evaluation
      interval, group size, seed, engine options...); stored with the
      sweep and compared when it is continued.
    workdir: where ``results.db``, ``results.csv`` and checkpoints go
      (``None``: nothing is written).
    tuned: parameter names to show in the leaderboard.
    extend: continuing a workdir, allow more trials than it holds.
    checkpoint_seconds: least time between two checkpoints of a group
      (0: after every segment).
    log: receives one line per group; ``None`` is silent.
    progress: draw a live progress bar on stderr when it is a terminal.
    devices: ``"all"``, ``"cpu"``, a number N (the first N devices) or a
      list of devices: each group's trial axis is sharded over them
      (:mod:`rnnsweep.placement`). Not a setting: the numbers do not
      depend on it, and a sweep continues on any count.
  """
  if trials is None and settings.sampler.startswith(samplers.OPTUNA_PREFIX):
    if distributed.multi_process():
      raise ValueError(f"sampler {settings.sampler!r} does not run on "
                       f"several processes yet (its study lives in one); "
                       f"use grid, random, quasirandom, around or trials")
    return execute_rounds(task, settings, workdir=workdir, tuned=tuned,
                          checkpoint_seconds=checkpoint_seconds, log=log,
                          progress=progress, devices=devices)
  if not trials:
    raise ValueError("no trials to run")
  if len(trials) != settings.num_trials:
    raise ValueError(f"settings.num_trials is {settings.num_trials} but "
                     f"{len(trials)} trials were given")
  if task.name != settings.task or task.config() != settings.task_config:
    raise ValueError("settings were made for another task")
  if checkpoint_seconds < 0:
    raise ValueError(f"checkpoint_seconds must be >= 0, got "
                     f"{checkpoint_seconds!r}")
  devices = placement.select_devices(devices)
  placement.check_spans_processes(devices)
  if not distributed.is_leader():
    log, progress = None, False  # process 0 speaks for the job
  log = log or _quiet
  settings = resolve_engine(settings, devices, log)
  steps = settings.steps
  store = _open_store(workdir)
  if store is not None:
    store.check_workdir()
  _check_task_data(task, {t.params["batch_size"] for t in trials})
  sizer = settings.max_group_size
  if sizer == sizing.AUTO:
    lanes, homes, why = _lanes_to_size(devices, task, trials)
    sizer = sizing.AutoSizer(task, steps=steps, options=settings.engine,
                             data_seed=settings.seed, log=log, lanes=lanes,
                             homes=homes, why=why)
  ckpt_dir = None
  if store is not None:
    resuming = store.exists()
    groups = resume.prepare(
        store, dict(settings.record(), versions=_versions(),
                    created=time.time()), trials, sizer, extend,
        queue=settings.scheduler.queued)
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    if distributed.is_leader():
      checkpoint.remove_stale(ckpt_dir, {g.group_id for g in groups})
    if resuming:
      log(f"continuing the sweep in {workdir}: {len(groups)} "
          f"group{'' if len(groups) == 1 else 's'} to go")
  else:
    groups = plan_groups(trials, sizer, queue=settings.scheduler.queued)
  log(f"{len(trials)} trial{'' if len(trials) == 1 else 's'}, {len(groups)} "
      f"group{'' if len(groups) == 1 else 's'} to run on "
      f"{placement.describe(devices)}; {steps} steps each, evaluating every "
      f"{settings.eval_every}")
  to_train = sum(len(g.trials) for g in groups)
  hint = placement.cpu_split_hint(devices, to_train)
  if hint:
    log(hint)
  results: list[TrialResult] = []
  failed: dict[int, str] = {}
  bar = progress_lib.SweepProgress(
      total_trial_steps=steps * to_train, total_trials=to_train,
      total_groups=len(groups), metric=task.selection_metric,
      enabled=progress)
  log = bar.wrap_log(log)
  with bar:
    _run_groups(task, groups, settings, store=store, ckpt_dir=ckpt_dir,
                checkpoint_seconds=checkpoint_seconds, log=log, bar=bar,
                results=results, failed=failed, devices=devices,
                sized=sizer if isinstance(sizer, sizing.AutoSizer) else None)
  if store is not None:
    store.write_csv(task.selection_metric)
    results = store.results()  # every finished trial, earlier runs included
  results.sort(key=lambda r: r.trial_id)
  return SweepResult(trials=results,
                     best=report.best(results, task.selection_mode),
                     metric=task.selection_metric, mode=task.selection_mode,
                     tuned=list(tuned), workdir=workdir, failed=failed)


def resolve_engine(settings: SweepSettings, devices: Any = "all",
                   log: Callable[[str], None] | None = None
                   ) -> SweepSettings:
  """``settings`` with the engine's ``auto`` precision and unroll chosen
  for the platform of ``devices`` (as :func:`execute` takes them), saying
  what was chosen to ``log`` (once: the result has nothing left to
  choose but the recurrence, which each group chooses)."""
  devices = placement.select_devices(devices)
  platform = devices[0].platform
  opts = settings.engine
  if log is not None and engine.AUTO in (opts.compute_dtype, opts.unroll):
    log(opts.auto_line(platform))
  return settings.resolved(platform)


def _open_store(workdir: str | None) -> Store | None:
  """The workdir's store; in a job of several processes, process 0's,
  which the others ask through :class:`~rnnsweep.distributed.OnLeader`."""
  if workdir is None:
    return None
  if not distributed.multi_process():
    return Store(workdir)
  return distributed.OnLeader(
      Store(workdir) if distributed.is_leader() else None, Store)


def _check_task_data(task: Task, batch_sizes) -> None:
  """Builds (and so validates) the task's data and checks that it fills a
  batch of each size, before anything is written."""
  task.data()
  for b in sorted(set(batch_sizes)):
    task.check_batch_size(b)


def execute_rounds(task: Task, settings: SweepSettings, *,
                   workdir: str | None = None, tuned: Sequence[str] = (),
                   checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
                   log: Callable[[str], None] | None = None,
                   progress: bool = False, devices: Any = "all"
                   ) -> SweepResult:
  """A model-based sweep: ``rounds`` rounds of ask a batch / train it as
  groups / tell every result (:mod:`rnnsweep.batch_search`). The store
  grows by one batch per round; continuing a workdir continues the study
  (trials asked before an interruption are never asked again)."""
  settings = resolve_engine(settings, devices,
                            log if distributed.is_leader() else None)
  opts = settings.sampler_options
  rounds, batch = opts["rounds"], opts["batch_size_trials"]
  seeds = opts.get("seeds", 1)
  storage = opts.get("storage") or batch_search.default_storage(workdir)
  # Everything is checked before the study is created or asked.
  batch_sizes = settings.full_space().params.get("batch_size")
  _check_task_data(task, batch_sizes.candidate_values()
                   if batch_sizes is not None
                   else [space_lib.PARAMS["batch_size"].default])
  first_round = 0
  if workdir is not None:
    store = Store(workdir)
    store.check_workdir()
    if store.exists():
      stored = resume.check_same_sweep(store, settings.record())
      first_round = min(rounds - 1, max(0, stored // (batch * seeds) - 1))
    os.makedirs(workdir, exist_ok=True)
  study = batch_search.BatchStudy.open(
      settings.full_space(), settings.sampler, seed=settings.seed,
      mode=task.selection_mode, storage=storage, batch=batch)
  every: dict[int, TrialResult] = {}
  failed: dict[int, str] = {}

  def train(configs, round_index):
    trials = samplers.make_trials(configs, seed=settings.seed)
    if seeds > 1:
      trials = samplers.with_seeds(trials, seeds)
    if workdir is None:  # nothing stored: train only this round's trials
      trials = trials[round_index * batch * seeds:]
    result = execute(task, trials, dataclasses.replace(
        settings, num_trials=len(trials)), workdir=workdir, tuned=tuned,
                     extend=True, checkpoint_seconds=checkpoint_seconds,
                     log=log, progress=progress, devices=devices)
    every.update((r.trial_id, r) for r in result.trials)
    failed.update(result.failed)
    return (result, result.trials, result.failed,
            f"val/{task.selection_metric}")

  batch_search.run_rounds(study, rounds=rounds, first_round=first_round,
                          train=train, log=log or _quiet, seeds=seeds)
  results = [every[k] for k in sorted(every)]
  return SweepResult(trials=results,
                     best=report.best(results, task.selection_mode),
                     metric=task.selection_metric, mode=task.selection_mode,
                     tuned=list(tuned), workdir=workdir,
                     failed={k: v for k, v in failed.items()
                             if k not in every})


class _Heartbeat:
  """Refreshes this process's claims in the store every
  :data:`~rnnsweep.store.HEARTBEAT_SECONDS`, from a thread (a long compile
  or segment must not make a live process look dead)."""

  def __init__(self, store: Store | None, owner: Owner):
    self.store, self.owner = store, owner
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="rnnsweep-heartbeat")

  def _run(self) -> None:
    while not self._stop.wait(store_lib.HEARTBEAT_SECONDS):
      try:
        self.store.heartbeat(self.owner)
      except ValueError:
        pass  # busy store: the next beat will do; claims go stale slowly

  def __enter__(self):
    if self.store is not None:
      self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()


def _lane_plan(devices, task, groups: Sequence[tuple[StaticConfig, int]]
               ) -> tuple[list[list[Any]], dict[StaticConfig, int], str]:
  """Lanes for ``groups`` (static configuration, number of trials), each
  static configuration's home lane, that of its largest group, and why
  (:func:`placement.plan_lanes`, each trial costing its analytic FLOPs);
  every device in one lane when several processes run each group
  together."""
  if distributed.multi_process():
    return [list(devices)], {static: 0 for static, _ in groups}, ""
  plan = placement.plan_lanes(devices, [
      (engine.flops_per_update(static, task), k) for static, k in groups])
  homes, largest = {}, {}
  for (static, k), home in zip(groups, plan.homes):
    if k > largest.get(static, 0):
      homes[static], largest[static] = home, k
  return plan.lanes, homes, plan.why


def _lanes_to_size(devices, task, trials
                   ) -> tuple[list[list[Any]], dict[StaticConfig, int], str]:
  """The lanes ``auto`` sizes the buckets of ``trials`` for, each
  bucket's home, and why (:func:`_lane_plan`, a bucket counted as one
  group)."""
  counts = collections.Counter(StaticConfig.from_params(t.params)
                               for t in trials)
  return _lane_plan(devices, task, list(counts.items()))


def _lanes_to_run(devices, task, groups, sized
                  ) -> tuple[list[list[Any]], dict[StaticConfig, int], str]:
  """The lanes :func:`_run_groups` trains ``groups`` on, each static
  configuration's home lane, and why: those of ``sized`` where it sized a
  bucket (it said why), else planned for these groups
  (:func:`_lane_plan`)."""
  if sized is not None and sized.homes:
    return sized.lanes, dict(sized.homes), ""
  return _lane_plan(devices, task,
                    [(group.static, len(group.trials)) for group in groups])


def _run_groups(task, groups, settings, *, store, ckpt_dir,
                checkpoint_seconds, log, bar, results, failed,
                devices, sized=None) -> None:
  """The loop of :func:`execute`: train, record and report each group.

  The devices are cut into lanes (:func:`~rnnsweep.placement.plan_lanes`);
  each lane takes the next group whenever it is free, so with several
  devices groups of different static configurations may train at the same
  time on disjoint device sets (one thread per lane; JAX releases the
  interpreter while a program runs). Groups sized by ``sized`` (an
  :class:`~rnnsweep.sizing.AutoSizer` that sized at least one bucket)
  keep its lanes, and a lane takes the groups of the buckets sized for it
  first (their programs are compiled there), then any other; other
  groups get lanes planned for them, each bucket's groups first on the
  lane planned for its largest.

  With a store, a group is trained only after this process claims it: a
  group another live process holds (the same command run twice on one
  workdir) is left to it, and looked at again once the rest is done, in
  case its holder died meanwhile.
  """
  owner = Owner.this_process()
  lane_list, homes, why = _lanes_to_run(devices, task, groups, sized)
  if why:
    log(why)
  shared = _Shared(collections.deque(groups),
                   max((g.group_id for g in groups), default=-1) + 1, homes)
  if len(devices) > 1:
    log(f"placement: {placement.describe_lanes(lane_list)}")
  if len(lane_list) > 1:
    bar = _Locked(bar, shared.lock)

  def lane(index, lane_devices):
    while (group := shared.next_group(index)) is not None:
      if store is not None:
        claim = store.claim(group, owner)
        if claim == "done":
          bar.group_skipped(len(group.trials),
                            len(group.trials) * settings.steps)
          continue
        if claim is not None:
          with shared.lock:
            shared.held_elsewhere[group.group_id] = (group, claim)
          continue
      _train_group(task, group, shared, settings, store=store,
                   ckpt_dir=ckpt_dir, owner=owner,
                   checkpoint_seconds=checkpoint_seconds, log=log, bar=bar,
                   results=results, failed=failed, devices=lane_devices)

  with _Heartbeat(getattr(store, "target", store), owner):
    if len(lane_list) == 1:
      lane(0, lane_list[0])
    else:
      errors = []

      def run(index, lane_devices):
        try:
          lane(index, lane_devices)
        except BaseException as e:  # pylint: disable=broad-except
          errors.append(e)
          with shared.lock:
            shared.queue.clear()  # the other lanes finish what they hold

      threads = [threading.Thread(target=run, args=(i, l), daemon=True,
                                  name=f"rnnsweep-lane{i}")
                 for i, l in enumerate(lane_list)]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
      if errors:
        raise errors[0]
  for group, claim in shared.held_elsewhere.values():
    bar.group_skipped(len(group.trials), len(group.trials) * settings.steps)
    log(f"group {group.group_id + 1} is being trained by {claim.describe()}; "
        f"its {len(group.trials)} trials are not in this result (run the "
        f"command again, or report the workdir, once it is done)")


class _Shared:
  """What the lanes of :func:`_run_groups` share, under one lock: the
  queue of groups, the next free group id (for splits), the groups
  another process held, and the home lane of each static configuration
  that has one."""

  def __init__(self, queue: collections.deque, next_id: int,
               homes: dict[StaticConfig, int] | None = None):
    self.queue = queue
    self.next_id = next_id
    self.homes = homes or {}
    self.held_elsewhere: dict[int, tuple[Group, store_lib.Claim]] = {}
    self.second_look = True
    self.lock = threading.RLock()

  def next_group(self, lane: int = 0) -> Group | None:
    """The next group for ``lane`` to try (the first of its home, else
    the first of all), or ``None`` when there is none."""
    with self.lock:
      if not self.queue and self.second_look and self.held_elsewhere:
        # One more look at the groups others held.
        self.second_look = False
        self.queue.extend(g for g, _ in self.held_elsewhere.values())
        self.held_elsewhere.clear()
      if not self.queue:
        return None
      for i, group in enumerate(self.queue):
        if self.homes.get(group.static) == lane:
          del self.queue[i]
          return group
      return self.queue.popleft()


class _Locked:
  """Calls to ``target``'s methods, one at a time (the progress bar, from
  several lanes)."""

  def __init__(self, target: Any, lock: Any):
    self._target, self._lock = target, lock

  def __getattr__(self, name: str) -> Any:
    attr = getattr(self._target, name)
    if not callable(attr):
      return attr

    def call(*args, **kwargs):
      with self._lock:
        return attr(*args, **kwargs)
    return call


def _train_group(task, group, shared, settings, *, store, ckpt_dir,
                 owner, checkpoint_seconds, log, bar, results,
                 failed, devices) -> None:
  """Trains one claimed group on ``devices`` and records it (a group that
  runs out of memory is split and its parts queued first)."""
  before = sum(engine.trace_counts().values())

  def on_tick(results, decisions, done, refilled, running):
    if store is not None and not store.record(
        group, results, owner, decisions=decisions, done=done):
      return False
    bar.trials_finished(
        len(results), pruned=sum(r.status == "pruned" for r in results),
        refilled=refilled,
        steps_saved=sum(settings.steps - r.curves["step"][-1]
                        for r in results), running=running)
    return True
  start = time.perf_counter()
  bar.training(min(group.size, len(group.trials)))
  try:
    group_results = run_group(task, group, steps=settings.steps,
                              eval_every=settings.eval_every,
                              data_seed=settings.seed,
                              checkpoint_dir=ckpt_dir,
                              checkpoint_seconds=checkpoint_seconds,
                              on_segment=bar.advance,
                              options=settings.engine,
                              scheduler=settings.scheduler,
                              space=settings.full_space(),
                              on_tick=on_tick, devices=devices, log=log)
  except _TakenOver:
    # Our claim lapsed and another process took the group over: its
    # record (or its run) stands; ours is not written over it.
    log(f"group {group.group_id + 1} was taken over by another process "
        f"while this one trained it; its results are left to that one")
    return
  except Exception as e:  # pylint: disable=broad-except
    error = f"{type(e).__name__}: {e}".splitlines()[0]
    if engine.is_out_of_memory(e) and group.size > 1 and len(
        group.trials) > 1:
      # Too big for the device: halve it and run the halves next.
      resumed = None
      with shared.lock:  # group ids and the queue are the lanes' in common
        if store is not None:
          parts = store.split(group, owner)
          # The halves continue from the group's last checkpoint.
          resumed = distributed.on_leader(
              lambda: checkpoint.split(ckpt_dir, group, parts))
          if distributed.is_leader():
            checkpoint.remove(ckpt_dir, group.group_id)
        else:
          parts = split_group(group, shared.next_id)
        shared.next_id = max(shared.next_id, parts[-1].group_id + 1)
        shared.queue.extendleft(reversed(parts))
      bar.group_split(len(parts) - 1)
      log(f"group {group.group_id + 1} (K={group.size}) ran out of memory "
          f"({error}); split into groups of K={parts[0].size} and retried"
          + (f" from its checkpoint at step {resumed}" if resumed else
             " from step 0"))
      return
    # One broken group must not lose the others: record and go on.
    failed.update({t.trial_id: error for t in group.trials})
    if store is None or distributed.multi_process():
      # In a job of several processes an error may be a lost peer (the
      # collectives fail): the job stops, the group keeps its checkpoint
      # and claim (its holder dead), and a rerun continues it.
      raise
    store.mark_failed(group, error, owner)
    log(f"group {group.group_id + 1} failed ({error}); its trials are marked "
        f"failed and will be retried when the sweep is resumed")
    return
  wall = time.perf_counter() - start
  compiled = sum(engine.trace_counts().values()) - before
  if store is not None:
    faults.point("group_committed")  # recorded, checkpoints not yet deleted
    if distributed.is_leader():
      checkpoint.remove(ckpt_dir, group.group_id)
    store.write_csv(task.selection_metric)
    faults.point("group_recorded")
  results.extend(group_results)
  so_far = report.best(results, task.selection_mode)
  bar.group_done(so_far.best_value if so_far else None)
  best_text = (f"best {task.selection_metric} so far {so_far.best_value:.4g}"
               f" (trial {so_far.trial_id})" if so_far
               else "no completed trial yet")
  counts = collections.Counter(r.status for r in group_results)
  pruned = (f", {counts['pruned']} pruned, "
            f"{len(group.trials) - group.size} slots refilled"
            if group.queued else "")
  spread = (f" over {len(devices)} devices "
            f"({placement.padded_size(group.size, len(devices))} slots)"
            if len(devices) > 1 else "")
  trial = engine.get_program(group.static, task, settings.engine,
                             devices).trial
  fallback = (f" (XLA recurrence: {trial.fallback})" if trial.fallback else
              " (fused recurrence)" if trial.recurrence == "pallas" else "")
  log(f"group {group.group_id + 1} {group.static.label()} "
      f"K={group.size}{spread} ({len(group.trials)} trials{pruned}): "
      f"{wall:.1f}s{' incl. compile' if compiled else ''}{fallback}; "
      f"{best_text}")


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


def sweep_settings(task: Task, space: space_lib.Space | None = None, *,
                   sampler: str = "random", num_trials: int | None = 16,
                   steps: int = 300, eval_every: int = 100,
                   max_group_size: int | str = DEFAULT_MAX_GROUP_SIZE,
                   seed: int = 0,
                   options: engine.EngineOptions | None = None,
                   scheduler: schedulers.SchedulerSettings | str | None = None,
                   sampler_options: Mapping[str, Any] | None = None,
                   seeds: int = 1
                   ) -> tuple[SweepSettings, list[samplers.TrialSpec] | None,
                              space_lib.Space]:
  """The settings of :func:`sweep` with these arguments, its trials
  (``None`` for an ``optuna:*`` sampler, which asks them in rounds) and its
  full space (the script names its default workdir by
  ``settings.digest()``)."""
  samplers.check_sampler(sampler)
  samplers.check_seeds(seeds)
  full = task_space(task, space)
  options_ = dict(sampler_options or {})
  if "seeds" in options_:
    raise ValueError("seeds is an argument of its own, not a sampler option")
  if "seed" in full.tuned_names():
    if seeds > 1:
      raise ValueError(
          f"space: 'seed' varies, and seeds={seeds} asks for seeds of its "
          f"own; give the seeds one way (leave 'seed' out of the space, or "
          f"seeds at 1)")
    if sampler not in ("grid", "around"):
      raise ValueError(
          f"space: 'seed' varies, and sampler {sampler!r} would "
          + ("draw it as one more value (some configurations on one seed, "
             "some on another)"
             if sampler in ("random", "quasirandom") else
             "tune it as a hyperparameter (keeping the luckiest seed)")
          + "; to train every configuration with several seeds, leave it "
          "out of the space and pass seeds=N (--seeds=N)")
  if seeds > 1 and getattr(scheduler, "name", scheduler) == "pbt":
    raise ValueError(
        f"seeds={seeds} with scheduler 'pbt': a configuration's seeds would "
        f"join one population and copy each other's weights; to see PBT's "
        f"spread over seeds, run the sweep again with another seed")
  if sampler.startswith(samplers.OPTUNA_PREFIX):
    options_ = _rounds_options(sampler, options_, max_group_size)
    trials = None
    count = options_["rounds"] * options_["batch_size_trials"] * seeds
    if seeds > 1:  # each asked configuration is told its mean
      options_["seeds"] = seeds
  elif sampler == "trials":
    raise ValueError("sampler 'trials' reads a file: use run_trials("
                     "task, rnnsweep.load_trials(path), ...)")
  else:
    trials = samplers.sample(full, sampler, num_trials=num_trials, seed=seed,
                             options=options_)
    if sampler == "around":
      options_["base"] = dict(trials[0].params)
      options_.setdefault("points_per_axis", 5)
    if seeds > 1:
      trials = samplers.with_seeds(trials, seeds)
      options_["seeds"] = seeds
    count = len(trials)
  settings = SweepSettings.make(
      task, sampler=sampler, space=full, num_trials=count, steps=steps,
      eval_every=eval_every, max_group_size=max_group_size, seed=seed,
      options=options, scheduler=scheduler, sampler_options=options_)
  return settings, trials, full


#: Trials per round of an ``optuna:*`` sampler when neither
#: ``batch_size_trials`` nor an integer ``max_group_size`` says.
DEFAULT_BATCH_SIZE_TRIALS = 16


def _rounds_options(sampler: str, options: dict[str, Any],
                    max_group_size: int | str) -> dict[str, Any]:
  unknown = set(options) - {"rounds", "batch_size_trials", "storage"}
  if unknown:
    raise ValueError(f"sampler {sampler!r} takes options rounds, "
                     f"batch_size_trials and storage, got {sorted(unknown)}")
  batch_search.sampler_class(sampler)  # optuna there, and the name known
  rounds = options.get("rounds", 4)
  batch = options.get("batch_size_trials") or (
      max_group_size if isinstance(max_group_size, int)
      else DEFAULT_BATCH_SIZE_TRIALS)
  for name, v in (("rounds", rounds), ("batch_size_trials", batch)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v!r}")
  storage = options.get("storage")
  if storage is not None and not isinstance(storage, str):
    raise ValueError(f"storage must be an Optuna storage URL, got "
                     f"{storage!r}")
  return {"rounds": rounds, "batch_size_trials": batch, "storage": storage}


def sweep(task: Task, space: space_lib.Space | None = None, *,
          sampler: str = "random", num_trials: int | None = 16,
          steps: int = 300, eval_every: int = 100,
          max_group_size: int | str = DEFAULT_MAX_GROUP_SIZE, seed: int = 0,
          workdir: str | None = None, extend: bool = False,
          checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
          options: engine.EngineOptions | None = None,
          scheduler: schedulers.SchedulerSettings | str | None = None,
          sampler_options: Mapping[str, Any] | None = None,
          seeds: int = 1,
          verbose: bool = False, devices: Any = "all") -> SweepResult:
  """Samples a space and trains every trial.

  Args:
    task: what to train on (see :mod:`rnnsweep.tasks`).
    space: the search space; ``None`` uses ``task.default_space()``. The
      task's own defaults (e.g. full-length truncation for the adding
      problem) apply to names the space leaves out.
    sampler: ``grid``, ``random``, ``quasirandom``, ``around`` (one factor
      at a time around ``sampler_options["base"]``) or ``optuna:<name>``
      (``tpe``, ``cmaes``, ``gp``, ``qmc``, ``random`` or an Optuna sampler
      class: asked in rounds of a batch each).
    num_trials: trials for ``random`` and ``quasirandom``.
    steps: updates (TBPTT windows) per trial.
    eval_every: validation interval in steps (the last segment may be
      shorter).
    max_group_size: largest K; ``1`` runs every trial alone; ``"auto"``
      chooses K per static configuration from memory and, on a CPU, a
      short speed probe (see :mod:`rnnsweep.sizing`). A group that runs
      out of device memory is split in two and retried either way.
    seed: sweep seed (sampling, trial seeds, the shared data stream), in
      ``[0, 2**31)``.
    workdir, extend, checkpoint_seconds: see :func:`execute`. Running again
      with the same arguments and workdir continues an interrupted sweep.
    options: how programs are built (:class:`~rnnsweep.engine.EngineOptions`).
    scheduler: ``"asha"``, ``"hyperband"``, ``"median"``, ``"pbt"`` or a
      :class:`~rnnsweep.schedulers.SchedulerSettings` with options: stop
      hopeless trials early (their slots take the next trials of the same
      static configuration) or evolve the population (PBT). Decisions read
      the validation metric at evaluation boundaries only.
    sampler_options: ``around``: ``base`` (a configuration) and
      ``points_per_axis`` (default 5); ``optuna:*``: ``rounds`` (default
      4), ``batch_size_trials`` (default: ``max_group_size`` when an
      integer, else 16) and ``storage`` (an Optuna storage URL; default
      ``optuna.db`` in the workdir).
    seeds: runs of every configuration the sampler gives, each with its
      own seed (:func:`~rnnsweep.samplers.with_seeds`): the first with the
      configuration's own, so its numbers are those of a sweep with
      ``seeds=1``. ``num_trials`` (``batch_size_trials`` of an
      ``optuna:*`` sampler) counts configurations; an ``optuna:*`` study
      is told each configuration's mean over its seeds. Not with PBT, nor
      with a space whose ``seed`` varies.
    verbose: print one line per group to stderr, and a live progress bar
      when stderr is a terminal.
    devices: ``"all"``, ``"cpu"`` or a number N: see :func:`execute`.

  Returns:
    A :class:`SweepResult`.
  """
  settings, trials, full = sweep_settings(
      task, space, sampler=sampler, num_trials=num_trials, steps=steps,
      eval_every=eval_every, max_group_size=max_group_size, seed=seed,
      options=options, scheduler=scheduler, sampler_options=sampler_options,
      seeds=seeds)
  return execute(task, trials, settings, workdir=workdir,
                 tuned=shown_names(full.tuned_names(), seeds), extend=extend,
                 checkpoint_seconds=checkpoint_seconds,
                 log=log_stderr if verbose else None, progress=verbose,
                 devices=devices)


def shown_names(tuned: Sequence[str], seeds: int) -> list[str]:
  """The leaderboard's parameter columns: the tuned names, and the seed
  where each configuration runs with several."""
  return list(tuned) + (["seed"] if seeds > 1 and "seed" not in tuned
                        else [])


def varied_names(configs: Sequence[Mapping[str, Any]]) -> list[str]:
  """The names whose values differ between ``configs`` (a name some
  configurations leave out varies unless all do), sorted.

  Linear in the configurations (a pass for the names, one for their
  values, stopping at two distinct ones): a 1,024-trial list took 3.8 s
  of Python when each name's values were collected once per
  configuration naming it (quadratic)."""
  seen: dict[str, set[str]] = {}
  for c in configs:
    for k in c:
      seen.setdefault(k, set())
  for c in configs:
    for k, values in seen.items():
      if len(values) < 2:
        values.add(repr(c.get(k)))
  return sorted(k for k, values in seen.items() if len(values) > 1)


def trials_settings(task: Task, configs: Sequence[Mapping[str, Any]], *,
                    steps: int, eval_every: int,
                    max_group_size: int | str = DEFAULT_MAX_GROUP_SIZE,
                    seed: int = 0,
                    options: engine.EngineOptions | None = None,
                    scheduler: schedulers.SchedulerSettings | str | None = None,
                    source: str | None = None, seeds: int = 1
                    ) -> tuple[SweepSettings, list[samplers.TrialSpec],
                               list[str]]:
  """The settings, trials and varied parameter names of
  :func:`run_trials` (the script names its default workdir by the
  settings' digest)."""
  space_lib.check_seed("seed", seed)
  samplers.check_seeds(seeds)
  base = task.base_params()
  trials = samplers.make_trials([{**base, **c} for c in configs], seed=seed)
  tuned = varied_names(configs)
  options_ = {} if source is None else {
      "file": os.path.basename(source),
      "configs_sha1": samplers.configs_digest(configs)}
  if seeds > 1:
    trials = samplers.with_seeds(trials, seeds)
    options_["seeds"] = seeds
  settings = SweepSettings.make(
      task, sampler="explicit" if source is None else "trials", space=None,
      num_trials=max(len(trials), 1), steps=steps, eval_every=eval_every,
      max_group_size=max_group_size, seed=seed, options=options,
      scheduler=scheduler, sampler_options=options_)
  return settings, trials, shown_names(tuned, seeds)


def run_trials(task: Task, configs: Sequence[Mapping[str, Any]], *,
               steps: int, eval_every: int,
               max_group_size: int | str = DEFAULT_MAX_GROUP_SIZE,
               seed: int = 0,
               workdir: str | None = None, extend: bool = False,
               checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
               options: engine.EngineOptions | None = None,
               scheduler: schedulers.SchedulerSettings | str | None = None,
               verbose: bool = False,
               log: Callable[[str], None] | None = None,
               source: str | None = None, devices: Any = "all",
               seeds: int = 1) -> SweepResult:
  """Trains an explicit list of configurations.

  Each config is a partial ``name -> value`` mapping; the task's base
  defaults and then the global defaults fill the rest. Trial ids are the
  list positions. ``max_group_size=1`` trains every trial alone, which is
  how vmap invariance is checked. Arguments as in :func:`sweep`; ``log``
  receives the per-group lines (default: stderr when ``verbose``).
  ``source`` names the file the configs came from (a ``trials`` sweep:
  recorded with a digest of the configs). ``devices``: see
  :func:`execute`. ``seeds``: runs of each configuration, as in
  :func:`sweep`; a configuration that names its seed (a row of a sweep's
  results.csv) runs first with that one, to the numbers it had.
  """
  settings, trials, tuned = trials_settings(
      task, configs, steps=steps, eval_every=eval_every,
      max_group_size=max_group_size, seed=seed, options=options,
      scheduler=scheduler, source=source, seeds=seeds)
  return execute(task, trials, settings, workdir=workdir, tuned=tuned,
                 extend=extend, checkpoint_seconds=checkpoint_seconds,
                 log=log or (log_stderr if verbose else None), progress=verbose,
                 devices=devices)
