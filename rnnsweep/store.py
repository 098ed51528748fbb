"""Results on disk: an SQLite file is the source of truth, plus a CSV view.

``results.db`` holds a ``sweep`` table (settings, search space, versions),
a ``groups`` table (the plan: which trials train together, and whether the
group is pending, running, done or failed) and a ``trials`` table with one
row per trial: params, seed, group, status (pending / running / completed /
diverged / pruned / failed), best validation metric, curves, wall time.

The database is created complete in a temporary file and renamed into place,
so a workdir either has a whole plan or none. Every later write is one
transaction (WAL journal: a report reading a running sweep never sees half a
group). ``results.csv`` is regenerated after each group, written to a
temporary file and renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import sqlite3
import time
from typing import Any, Iterator, Mapping, Sequence

from rnnsweep import faults
from rnnsweep import space as space_lib
from rnnsweep.groups import (Group, GroupSizer, StaticConfig, plan_groups,
                             split_group)

DB_NAME = "results.db"
CSV_NAME = "results.csv"

#: Settings that must match to continue a sweep in the same workdir.
COMPARED_SETTINGS = ("task", "task_config", "sampler", "space", "steps",
                     "eval_every", "max_group_size", "seed", "num_trials",
                     "engine")
FINISHED = ("completed", "diverged", "pruned")

_SCHEMA = """
CREATE TABLE sweep (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE groups (
  group_id INTEGER PRIMARY KEY,
  static TEXT NOT NULL,
  size INTEGER NOT NULL,
  trial_ids TEXT NOT NULL,
  status TEXT NOT NULL,
  error TEXT
);
CREATE TABLE trials (
  trial_id INTEGER PRIMARY KEY,
  params TEXT NOT NULL,
  seed INTEGER NOT NULL,
  group_id INTEGER,
  status TEXT NOT NULL,
  metric TEXT NOT NULL,
  best_value REAL,
  best_step INTEGER,
  final_metrics TEXT,
  curves TEXT,
  diverged_step INTEGER,
  wall_time_s REAL,
  test_metrics TEXT,
  updated_at REAL NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class TrialResult:
  """Everything recorded about one finished trial.

  Attributes:
    trial_id: the trial's stable id.
    params: every hyperparameter, defaults included.
    seed: the trial's seed.
    status: ``completed`` or ``diverged``.
    group_id: the group it trained in.
    metric: name of the selection metric (validation).
    best_value: best validation value of ``metric`` before any divergence
      (``None`` if there was none).
    best_step: the step of ``best_value``.
    final_metrics: every validation metric at the last evaluation.
    curves: ``{"step": [...], "train_loss": [...], "val/<name>": [...]}``.
    diverged_step: the step that went non-finite, or ``None``.
    wall_time_s: wall time of the trial's group, compile included.
    test_metrics: the held-out test split's metrics of the parameters at
      ``best_step`` (empty when there is no best). Never used to select.
  """

  trial_id: int
  params: Mapping[str, Any]
  seed: int
  status: str
  group_id: int
  metric: str
  best_value: float | None
  best_step: int | None
  final_metrics: Mapping[str, float]
  curves: Mapping[str, list]
  diverged_step: int | None
  wall_time_s: float
  test_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)

  @property
  def test_value(self) -> float | None:
    """The selection metric on the test split, if measured."""
    v = self.test_metrics.get(self.metric)
    return None if v is None or not math.isfinite(v) else v


def _json_float(x):
  """JSON has no NaN/inf; store them as null."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _clean(obj):
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  return _json_float(obj)


def _unnull(xs):
  return [math.nan if v is None else v for v in xs]


class Store:
  """The workdir's SQLite database.

  Args:
    workdir: folder holding ``results.db`` and ``results.csv``.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.db_path = os.path.join(workdir, DB_NAME)
    self.csv_path = os.path.join(workdir, CSV_NAME)

  def exists(self) -> bool:
    return os.path.exists(self.db_path)

  @contextlib.contextmanager
  def _connect(self) -> Iterator[sqlite3.Connection]:
    try:
      conn = sqlite3.connect(self.db_path, timeout=60.0)
    except sqlite3.Error as e:
      raise self._unreadable(e) from None
    try:
      with conn:  # one transaction: commit on success, roll back on error
        yield conn
    except sqlite3.DatabaseError as e:
      raise self._unreadable(e) from None
    finally:
      conn.close()

  def _unreadable(self, e: Exception) -> ValueError:
    return ValueError(
        f"{self.db_path} cannot be read as an rnnsweep database ({e}); "
        f"nothing was changed: move it aside to start over, or restore it "
        f"from a copy")

  # -- creating and continuing ----------------------------------------------

  def prepare(self, settings: Mapping[str, Any], trials: Sequence[Any],
              max_group_size: int | GroupSizer,
              extend: bool = False) -> list[Group]:
    """Creates the sweep, or checks a stored one against ``settings``.

    Args:
      settings: the run's settings; the keys in :data:`COMPARED_SETTINGS`
        must equal the stored ones to continue.
      trials: every trial of the sweep, ids ``0..n-1``.
      max_group_size: largest K for planning new groups, or a function of
        the bucket giving it (only called when groups are planned).
      extend: allow ``trials`` to hold more trials than the stored sweep;
        the new ones are planned into new groups.

    Returns:
      The groups that still need to run, in plan order.
    """
    if not self.exists():
      plan = plan_groups(trials, max_group_size)
      self._create(settings, trials, plan)
      return plan
    stored = self.settings()
    if "num_trials" not in stored:
      raise self._unreadable("no sweep settings in it")
    diffs = [k for k in COMPARED_SETTINGS
             if json.dumps(_clean(stored.get(k)), sort_keys=True) !=
             json.dumps(_clean(settings.get(k)), sort_keys=True)]
    n_old = stored["num_trials"]
    growing = extend and len(trials) > n_old
    if diffs and not (growing and diffs == ["num_trials"]):
      shown = "; ".join(f"{k}: stored {_short(stored.get(k))}, now "
                        f"{_short(settings.get(k))}" for k in diffs)
      hint = (" (pass extend / --extend to add trials)"
              if diffs == ["num_trials"] and len(trials) > n_old else "")
      raise ValueError(f"workdir {self.workdir!r} holds a sweep with other "
                       f"settings: {shown}; use another workdir{hint}")
    by_id = {t.trial_id: t for t in trials}
    with self._connect() as conn:
      for tid, params, seed in conn.execute(
          "SELECT trial_id, params, seed FROM trials ORDER BY trial_id"):
        t = by_id.get(tid)
        if t is None or json.loads(params) != _clean(dict(t.params)) or (
            seed != t.seed):
          raise ValueError(
              f"workdir {self.workdir!r}: stored trial {tid} differs from "
              f"the trial the sampler gives now; use another workdir")
      rows = conn.execute("SELECT group_id, static, size, trial_ids, status "
                          "FROM groups ORDER BY group_id").fetchall()
    plan = [Group(gid, StaticConfig(**json.loads(static)),
                  tuple(by_id[i] for i in json.loads(ids)), size)
            for gid, static, size, ids, _ in rows]
    todo = [g for g, row in zip(plan, rows) if row[4] != "done"]
    if growing:
      new = plan_groups(trials[n_old:], max_group_size)
      first = max((g.group_id for g in plan), default=-1) + 1
      new = [dataclasses.replace(g, group_id=first + i)
             for i, g in enumerate(new)]
      with self._connect() as conn:
        self._insert_plan(conn, trials[n_old:], new)
        conn.execute("UPDATE sweep SET value=? WHERE key='num_trials'",
                     (json.dumps(len(trials)),))
      todo += new
    return todo

  def _create(self, settings, trials, plan) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    tmp = f"{self.db_path}.tmp{os.getpid()}"
    for leftover in (tmp, tmp + "-journal"):
      if os.path.exists(leftover):
        os.remove(leftover)
    conn = sqlite3.connect(tmp)
    try:
      conn.executescript(_SCHEMA)
      with conn:
        conn.executemany("INSERT INTO sweep VALUES (?, ?)",
                         [(k, json.dumps(_clean(v))) for k, v in
                          settings.items()])
        self._insert_plan(conn, trials, plan)
      conn.execute("PRAGMA journal_mode=WAL")
    finally:
      conn.close()
    os.replace(tmp, self.db_path)

  @staticmethod
  def _insert_plan(conn, trials, plan) -> None:
    group_of = {t.trial_id: g.group_id for g in plan for t in g.trials}
    now = time.time()
    Store._insert_groups(conn, plan)
    conn.executemany(
        "INSERT INTO trials (trial_id, params, seed, group_id, status, metric,"
        " updated_at) VALUES (?, ?, ?, ?, 'pending', '', ?)",
        [(t.trial_id, json.dumps(_clean(dict(t.params))), t.seed,
          group_of[t.trial_id], now) for t in trials])

  @staticmethod
  def _insert_groups(conn, groups: Sequence[Group]) -> None:
    conn.executemany(
        "INSERT INTO groups VALUES (?, ?, ?, ?, 'pending', NULL)",
        [(g.group_id, json.dumps(dataclasses.asdict(g.static)), g.size,
          json.dumps([t.trial_id for t in g.trials])) for g in groups])

  # -- progress of groups -----------------------------------------------------

  def mark_running(self, group: Group) -> None:
    with self._connect() as conn:
      conn.execute("UPDATE groups SET status='running' WHERE group_id=?",
                   (group.group_id,))
      conn.execute("UPDATE trials SET status='running', updated_at=? "
                   "WHERE group_id=?", (time.time(), group.group_id))

  def mark_failed(self, group: Group, error: str) -> None:
    """A group that raised: its trials are ``failed`` (retried on resume)."""
    with self._connect() as conn:
      conn.execute("UPDATE groups SET status='failed', error=? "
                   "WHERE group_id=?", (error, group.group_id))
      conn.execute("UPDATE trials SET status='failed', updated_at=? "
                   "WHERE group_id=?", (time.time(), group.group_id))

  def split(self, group: Group) -> list[Group]:
    """Replaces ``group`` in the plan by two halves (new ids at the end of
    the plan), atomically; returns them."""
    with self._connect() as conn:
      first = conn.execute("SELECT MAX(group_id) FROM groups").fetchone()[0]
      parts = split_group(group, first + 1)
      conn.execute("DELETE FROM groups WHERE group_id=?", (group.group_id,))
      self._insert_groups(conn, parts)
      conn.executemany(
          "UPDATE trials SET group_id=?, status='pending', updated_at=? "
          "WHERE trial_id=?", [(g.group_id, time.time(), t.trial_id)
                               for g in parts for t in g.trials])
    return parts

  def record(self, group: Group, results: Sequence[TrialResult]) -> None:
    """Writes one group's finished trials and marks it done, atomically."""
    now = time.time()
    with self._connect() as conn:
      conn.executemany(
          "UPDATE trials SET status=?, metric=?, best_value=?, best_step=?, "
          "final_metrics=?, curves=?, diverged_step=?, wall_time_s=?, "
          "test_metrics=?, updated_at=? WHERE trial_id=?",
          [(r.status, r.metric, _json_float(r.best_value), r.best_step,
            json.dumps(_clean(dict(r.final_metrics))),
            json.dumps(_clean(dict(r.curves))), r.diverged_step,
            r.wall_time_s, json.dumps(_clean(dict(r.test_metrics))), now,
            r.trial_id) for r in results])
      conn.execute("UPDATE groups SET status='done', error=NULL "
                   "WHERE group_id=?", (group.group_id,))
      faults.point("store_write")

  # -- reading ------------------------------------------------------------------

  def settings(self) -> dict[str, Any]:
    with self._connect() as conn:
      return {k: json.loads(v)
              for k, v in conn.execute("SELECT key, value FROM sweep")}

  def status_counts(self) -> dict[str, int]:
    with self._connect() as conn:
      return dict(conn.execute(
          "SELECT status, COUNT(*) FROM trials GROUP BY status"))

  def unfinished_trials(self) -> list[tuple[int, dict[str, Any], str]]:
    """``(trial_id, params, status)`` of trials not finished yet (pending,
    running or failed)."""
    with self._connect() as conn:
      return [(tid, json.loads(p), status) for tid, p, status in conn.execute(
          "SELECT trial_id, params, status FROM trials WHERE status NOT IN "
          "('completed', 'diverged', 'pruned') ORDER BY trial_id")]

  def results(self) -> list[TrialResult]:
    """Every finished trial, in id order."""
    with self._connect() as conn:
      rows = conn.execute(
          "SELECT trial_id, params, seed, status, group_id, metric, "
          "best_value, best_step, final_metrics, curves, diverged_step, "
          "wall_time_s, test_metrics FROM trials WHERE status IN "
          "('completed', 'diverged', 'pruned') ORDER BY trial_id").fetchall()
    out = []
    nan_for_null = lambda d: {k: (math.nan if v is None else v)
                              for k, v in json.loads(d or "{}").items()}
    for (tid, params, seed, status, gid, metric, best, best_step, final,
         curves, dstep, wall, test) in rows:
      curves = {k: _unnull(v) for k, v in json.loads(curves).items()}
      out.append(TrialResult(tid, json.loads(params), seed, status, gid,
                             metric, best, best_step, nan_for_null(final),
                             curves, dstep, wall, nan_for_null(test)))
    return out

  def write_csv(self, metric: str) -> None:
    """Regenerates ``results.csv`` (one row per trial) atomically."""
    with self._connect() as conn:
      rows = conn.execute(
          "SELECT trial_id, status, best_value, best_step, params, seed, "
          "group_id, diverged_step, wall_time_s, test_metrics FROM trials "
          "ORDER BY trial_id").fetchall()
    names = [n for n in space_lib.PARAMS if n != "seed"]
    header = (["trial_id", "status", f"best_val_{metric}", "best_step",
               f"test_{metric}"] + names +
              ["seed", "group_id", "diverged_step", "wall_time_s"])
    tmp = self.csv_path + f".tmp{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(header)
      for (tid, status, best, best_step, params, seed, gid, dstep,
           wall, test) in rows:
        p = json.loads(params)
        test = json.loads(test or "{}").get(metric)
        w.writerow([tid, status, "" if best is None else repr(best),
                    "" if best_step is None else best_step,
                    "" if test is None else repr(test)] +
                   [p.get(n, "") for n in names] +
                   [seed, "" if gid is None else gid,
                    "" if dstep is None else dstep,
                    "" if wall is None else f"{wall:.3f}"])
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.csv_path)


def _short(v: Any) -> str:
  text = json.dumps(_clean(v), sort_keys=True)
  return text if len(text) <= 80 else text[:77] + "..."
