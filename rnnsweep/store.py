"""Results on disk: an SQLite file is the source of truth, plus a CSV view.

``results.db`` holds a ``sweep`` table (settings, search space, versions)
and a ``trials`` table with one row per trial: params, seed, group, status,
best validation metric, curves. Every write is one transaction, so a reader
never sees half a group. ``results.csv`` is regenerated from the database
after each group, written to a temporary file and renamed into place.
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

from rnnsweep import space as space_lib

DB_NAME = "results.db"
CSV_NAME = "results.csv"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
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
    workdir: folder holding ``results.db`` and ``results.csv``; created if
      missing.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.db_path = os.path.join(workdir, DB_NAME)
    self.csv_path = os.path.join(workdir, CSV_NAME)

  @staticmethod
  def check_fresh(workdir: str) -> None:
    """Raises ``ValueError`` if ``workdir`` already holds a sweep's results
    (never overwrite finished trials)."""
    path = os.path.join(workdir, DB_NAME)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ValueError(f"workdir {workdir!r} exists and is not a directory")
    if os.path.exists(path):
      raise ValueError(
          f"workdir {workdir!r} already holds a sweep ({path}); choose a new "
          f"or empty workdir so no finished results are overwritten")

  @contextlib.contextmanager
  def _connect(self) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(self.db_path, timeout=30.0)
    try:
      with conn:  # one transaction: commit on success, roll back on error
        yield conn
    finally:
      conn.close()

  def create(self, settings: Mapping[str, Any], trials: Sequence[Any],
             metric: str) -> None:
    """Writes the sweep's settings and every trial as ``pending``."""
    os.makedirs(self.workdir, exist_ok=True)
    now = time.time()
    with self._connect() as conn:
      conn.executescript(_SCHEMA)
      conn.executemany("INSERT INTO sweep VALUES (?, ?)",
                       [(k, json.dumps(_clean(v))) for k, v in
                        settings.items()])
      conn.executemany(
          "INSERT INTO trials (trial_id, params, seed, status, metric, "
          "updated_at) VALUES (?, ?, ?, 'pending', ?, ?)",
          [(t.trial_id, json.dumps(dict(t.params)), t.seed, metric, now)
           for t in trials])

  def record(self, results: Sequence[TrialResult]) -> None:
    """Writes one group's finished trials in one transaction."""
    now = time.time()
    with self._connect() as conn:
      conn.executemany(
          "UPDATE trials SET group_id=?, status=?, best_value=?, best_step=?, "
          "final_metrics=?, curves=?, diverged_step=?, wall_time_s=?, "
          "updated_at=? WHERE trial_id=?",
          [(r.group_id, r.status, _json_float(r.best_value), r.best_step,
            json.dumps(_clean(dict(r.final_metrics))),
            json.dumps(_clean(dict(r.curves))), r.diverged_step,
            r.wall_time_s, now, r.trial_id) for r in results])

  def settings(self) -> dict[str, Any]:
    with self._connect() as conn:
      return {k: json.loads(v)
              for k, v in conn.execute("SELECT key, value FROM sweep")}

  def status_counts(self) -> dict[str, int]:
    with self._connect() as conn:
      return dict(conn.execute(
          "SELECT status, COUNT(*) FROM trials GROUP BY status"))

  def results(self) -> list[TrialResult]:
    """Every finished trial (pending ones are left out), in id order."""
    with self._connect() as conn:
      rows = conn.execute(
          "SELECT trial_id, params, seed, status, group_id, metric, "
          "best_value, best_step, final_metrics, curves, diverged_step, "
          "wall_time_s FROM trials WHERE status != 'pending' "
          "ORDER BY trial_id").fetchall()
    out = []
    for (tid, params, seed, status, gid, metric, best, best_step, final,
         curves, dstep, wall) in rows:
      curves = {k: _unnull(v) for k, v in json.loads(curves).items()}
      final = {k: (math.nan if v is None else v)
               for k, v in json.loads(final).items()}
      out.append(TrialResult(tid, json.loads(params), seed, status, gid,
                             metric, best, best_step, final, curves, dstep,
                             wall))
    return out

  def write_csv(self) -> None:
    """Regenerates ``results.csv`` (one row per trial) atomically."""
    with self._connect() as conn:
      rows = conn.execute(
          "SELECT trial_id, status, metric, best_value, best_step, params, "
          "seed, group_id, diverged_step, wall_time_s FROM trials "
          "ORDER BY trial_id").fetchall()
    metric = rows[0][2] if rows else "metric"
    names = [n for n in space_lib.PARAMS if n != "seed"]
    header = (["trial_id", "status", f"best_val_{metric}", "best_step"] +
              names + ["seed", "group_id", "diverged_step", "wall_time_s"])
    tmp = self.csv_path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(header)
      for (tid, status, _, best, best_step, params, seed, gid, dstep,
           wall) in rows:
        p = json.loads(params)
        w.writerow([tid, status, "" if best is None else repr(best),
                    "" if best_step is None else best_step] +
                   [p.get(n, "") for n in names] +
                   [seed, "" if gid is None else gid,
                    "" if dstep is None else dstep,
                    "" if wall is None else f"{wall:.3f}"])
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.csv_path)
