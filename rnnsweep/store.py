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
import glob
import json
import math
import os
import re
import socket
import sqlite3
import threading
import time
import urllib.parse
import uuid
from typing import Any, Iterator, Mapping, Sequence

from rnnsweep import faults
from rnnsweep import space as space_lib
from rnnsweep.groups import Group, StaticConfig, split_group

#: results.csv's columns that are outcomes, not parameters: those before
#: the parameters (``{metric}``: the selection metric's name) and those
#: after them and the seed. A trials file made of a results.csv's rows
#: leaves them out (:func:`rnnsweep.samplers.parse_trials`).
RESULTS_BEFORE_PARAMS = ("trial_id", "status", "best_val_{metric}",
                         "best_step", "test_{metric}")
RESULTS_AFTER_PARAMS = ("group_id", "diverged_step", "stopped_step",
                        "pbt_parents", "wall_time_s")

DB_NAME = "results.db"
CSV_NAME = "results.csv"

FINISHED = ("completed", "diverged", "pruned")
_UNFINISHED = "status NOT IN ('completed', 'diverged', 'pruned')"

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

# Which live process trains which group (older stores get it on first use).
_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
  group_id INTEGER PRIMARY KEY,
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  token TEXT NOT NULL,
  since REAL NOT NULL,
  heartbeat REAL NOT NULL
);
"""

# Scheduler decisions (rungs, stops, PBT exploits, slot starts), each written
# with the metrics it read (older stores get it on first use).
_DECISIONS = """
CREATE TABLE IF NOT EXISTS decisions (
  group_id INTEGER NOT NULL,
  trial_id INTEGER NOT NULL,
  step INTEGER NOT NULL,
  kind TEXT NOT NULL,
  value REAL,
  detail TEXT NOT NULL,
  PRIMARY KEY (trial_id, step, kind)
);
"""

#: A claim whose heartbeat is older than this belongs to a dead process.
STALE_SECONDS = 120.0
#: How often a running sweep refreshes its claims.
HEARTBEAT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Owner:
  """The process that trains groups (one per :func:`~rnnsweep.execute` run).

  Attributes:
    pid, host: where it runs.
    token: unique per run, so a reused PID is not mistaken for it.
  """

  pid: int
  host: str
  token: str

  @classmethod
  def this_process(cls) -> "Owner":
    return cls(os.getpid(), socket.gethostname(), uuid.uuid4().hex)


@dataclasses.dataclass(frozen=True)
class Claim:
  """A group held by a live process."""

  group_id: int
  pid: int
  host: str
  since: float

  def describe(self) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
    return f"process {self.pid} on host {self.host} since {when}"


def pid_alive(pid: int) -> bool:
  """Whether a process of this host with that PID exists."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's process, but alive
  except OSError:
    return False
  return True


#: One ``results.csv`` writer at a time in a process (its lanes share the
#: temporary file's name), and how often one writes again when the store
#: changed under it (another writer records after each change it makes).
_CSV_LOCK = threading.Lock()
CSV_REWRITES = 5


def _decisions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
  """Every scheduler decision, read on ``conn`` (see
  :meth:`Store.decisions`)."""
  if not conn.execute("SELECT name FROM sqlite_master WHERE "
                      "name='decisions'").fetchone():
    return []  # a store from before schedulers
  rows = conn.execute(
      "SELECT group_id, trial_id, step, kind, value, detail FROM "
      "decisions ORDER BY trial_id, step, kind").fetchall()
  return [{"group_id": g, "trial_id": t, "step": st, "kind": k,
           "value": math.nan if v is None else v,
           "detail": json.loads(d)} for g, t, st, k, v, d in rows]


def left_by_dead_process(path: str) -> bool:
  """Whether ``path`` is a temporary file (``<name>.tmp<pid>``, with
  SQLite's side-file suffixes) whose writer on this host has died."""
  m = re.search(r"\.tmp(\d+)(-journal|-wal|-shm)?$", path)
  return m is not None and not pid_alive(int(m.group(1)))


def _claim_alive(pid: int, host: str, heartbeat: float, now: float) -> bool:
  if now - heartbeat > STALE_SECONDS:
    return False
  if host == socket.gethostname():
    return pid_alive(pid)
  return True  # another host: only its heartbeat tells


@dataclasses.dataclass(frozen=True)
class TrialResult:
  """Everything recorded about one finished trial.

  Attributes:
    trial_id: the trial's stable id.
    params: every hyperparameter, defaults included.
    seed: the trial's seed.
    status: ``completed``, ``diverged`` or ``pruned`` (stopped early by a
      scheduler).
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
    stopped_step: the step a ``pruned`` trial reached, else ``None``.
    lineage: PBT exploits, in order: ``{"step", "parent", "parent_value",
      "old_hp", "hp"}`` each (the trial copied ``parent``'s weights at
      ``step`` and went on with ``hp``).
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
  stopped_step: int | None = None
  lineage: tuple = ()

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


def clean_json(obj):
  if isinstance(obj, dict):
    return {k: clean_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [clean_json(v) for v in obj]
  return _json_float(obj)


def _unnull(xs):
  return [math.nan if v is None else v for v in xs]


class Store:
  """The workdir's SQLite database.

  Args:
    workdir: folder holding ``results.db`` and ``results.csv``.
  """

  def __init__(self, workdir: str, timeout: float = 60.0):
    self.workdir = workdir
    self.timeout = timeout
    self.db_path = os.path.join(workdir, DB_NAME)
    self.csv_path = os.path.join(workdir, CSV_NAME)

  def check_workdir(self) -> None:
    """Fails early, with one line, on a workdir a sweep cannot use."""
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise ValueError(f"workdir {self.workdir!r} is a file, not a folder")
    if os.path.exists(self.db_path) and not os.path.isfile(self.db_path):
      raise ValueError(f"{self.db_path} is not a file")
    existing = self.workdir
    while existing and not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.access(existing or ".", os.W_OK):
      raise ValueError(f"workdir {self.workdir!r} is read-only ({existing!r} "
                       f"cannot be written): a sweep cannot be run or "
                       f"continued there; reports can (figures: --out_dir)")

  def exists(self) -> bool:
    return os.path.exists(self.db_path)

  @contextlib.contextmanager
  def _connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction (``BEGIN IMMEDIATE`` when writing, so a check and
    the write it decides are one step); commit on success, roll back on
    error. Reading a store in a folder this process cannot write (an
    archived sweep) opens it immutable: nothing else can be writing it."""
    try:
      if not write and not os.access(self.workdir, os.W_OK):
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(os.path.abspath(self.db_path))}"
            "?immutable=1", uri=True)
      else:
        conn = sqlite3.connect(self.db_path, timeout=self.timeout,
                               isolation_level=None)
    except sqlite3.Error as e:
      raise self._error(e) from None
    try:
      conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
      yield conn
      conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
      if conn.in_transaction:
        conn.execute("ROLLBACK")
      raise self._error(e) from None
    except BaseException:
      if conn.in_transaction:
        conn.execute("ROLLBACK")
      raise
    finally:
      conn.close()

  def _error(self, e: Exception) -> ValueError:
    """One line for a database error: in use, read-only, or unreadable."""
    text = str(e)
    if "locked" in text or "busy" in text:
      holders = "; ".join(c.describe() for c in self._claims_quietly())
      return ValueError(
          f"{self.db_path} is in use by another process"
          f"{' (' + holders + ')' if holders else ''} and stayed locked "
          f"for {self.timeout:g} s ({text}); try again when it is done")
    if "readonly" in text or not os.access(self.workdir, os.W_OK):
      return ValueError(f"workdir {self.workdir!r} is read-only ({text}): "
                        f"a sweep cannot be run or continued there; reports "
                        f"can (figures: --out_dir)")
    return self.unreadable(e)

  def _claims_quietly(self) -> list[Claim]:
    try:
      conn = sqlite3.connect(self.db_path, timeout=1.0)
      try:
        rows = conn.execute("SELECT group_id, pid, host, since "
                            "FROM claims").fetchall()
      finally:
        conn.close()
    except sqlite3.Error:
      return []
    return [Claim(*r) for r in rows]

  def unreadable(self, e: Any) -> ValueError:
    return ValueError(
        f"{self.db_path} cannot be read as an rnnsweep database ({e}); "
        f"nothing was changed: move it aside to start over, or restore it "
        f"from a copy")

  # -- creating and continuing (the policy is in rnnsweep.resume) ----------------

  def open_for_writing(self) -> None:
    """Checks an existing store can be written, and brings a store made
    before claims existed up to date."""
    if not os.access(self.workdir, os.W_OK):
      raise ValueError(f"workdir {self.workdir!r} is read-only: a sweep "
                       f"cannot be continued there; reports can (figures: "
                       f"--out_dir)")
    with self._connect() as conn:
      conn.execute(_CLAIMS)
      conn.execute(_DECISIONS)

  def stored_trials(self) -> list[tuple[int, Any, int]]:
    """``(trial_id, params, seed)`` of every planned trial."""
    with self._connect(write=False) as conn:
      return [(tid, json.loads(p), seed) for tid, p, seed in conn.execute(
          "SELECT trial_id, params, seed FROM trials ORDER BY trial_id")]

  def plan(self, trials_by_id: Mapping[int, Any]
           ) -> tuple[list[Group], list[str]]:
    """The stored groups (their trials taken from ``trials_by_id``) and
    each one's status, in plan order."""
    with self._connect(write=False) as conn:
      rows = conn.execute("SELECT group_id, static, size, trial_ids, status "
                          "FROM groups ORDER BY group_id").fetchall()
    groups = [Group(gid, StaticConfig(**json.loads(static)),
                    tuple(trials_by_id[i] for i in json.loads(ids)), size)
              for gid, static, size, ids, _ in rows]
    return groups, [row[4] for row in rows]

  def add_trials(self, trials: Sequence[Any], groups: Sequence[Group], *,
                 num_trials: int) -> None:
    """Plans more trials into new groups (a sweep extended), atomically."""
    with self._connect() as conn:
      self._insert_plan(conn, trials, groups)
      conn.execute("UPDATE sweep SET value=? WHERE key='num_trials'",
                   (json.dumps(num_trials),))

  def create(self, settings: Mapping[str, Any], trials: Sequence[Any],
             plan: Sequence[Group]) -> bool:
    """Writes the whole plan under a temporary name and links it into
    place; returns ``False`` if another process created the sweep first
    (the link never replaces an existing file)."""
    try:
      os.makedirs(self.workdir, exist_ok=True)
      if not os.path.isdir(self.workdir):
        raise NotADirectoryError(f"{self.workdir!r} is not a directory")
      tmp = f"{self.db_path}.tmp{os.getpid()}"
      for leftover in (tmp, tmp + "-journal"):
        if os.path.exists(leftover):
          os.remove(leftover)
      conn = sqlite3.connect(tmp)
      try:
        conn.executescript(_SCHEMA + _CLAIMS + _DECISIONS)
        with conn:
          conn.executemany("INSERT INTO sweep VALUES (?, ?)",
                           [(k, json.dumps(clean_json(v))) for k, v in
                            settings.items()])
          self._insert_plan(conn, trials, plan)
        conn.execute("PRAGMA journal_mode=WAL")
      finally:
        conn.close()
      try:
        os.link(tmp, self.db_path)
        return True
      except FileExistsError:
        return False
      except OSError:  # a file system without hard links
        if os.path.exists(self.db_path):
          return False
        os.replace(tmp, self.db_path)
        return True
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
    except (OSError, sqlite3.Error) as e:
      reason = getattr(e, "strerror", None) or str(e)
      raise ValueError(f"cannot create the sweep in workdir "
                       f"{self.workdir!r}: {reason}") from None

  def remove_leftovers(self) -> None:
    """Temporary files of processes that died while writing them."""
    for path in glob.glob(glob.escape(self.db_path) + ".tmp*") + glob.glob(
        glob.escape(self.csv_path) + ".tmp*"):
      if left_by_dead_process(path):
        with contextlib.suppress(OSError):
          os.remove(path)

  @staticmethod
  def _insert_plan(conn, trials, plan) -> None:
    group_of = {t.trial_id: g.group_id for g in plan for t in g.trials}
    now = time.time()
    Store._insert_groups(conn, plan)
    conn.executemany(
        "INSERT INTO trials (trial_id, params, seed, group_id, status, metric,"
        " updated_at) VALUES (?, ?, ?, ?, 'pending', '', ?)",
        [(t.trial_id, json.dumps(clean_json(dict(t.params))), t.seed,
          group_of[t.trial_id], now) for t in trials])

  @staticmethod
  def _insert_groups(conn, groups: Sequence[Group]) -> None:
    conn.executemany(
        "INSERT INTO groups VALUES (?, ?, ?, ?, 'pending', NULL)",
        [(g.group_id, json.dumps(dataclasses.asdict(g.static)), g.size,
          json.dumps([t.trial_id for t in g.trials])) for g in groups])

  # -- progress of groups, under claims -----------------------------------------

  def claim(self, group: Group, owner: Owner) -> Claim | str | None:
    """Takes ``group`` for ``owner`` unless a live process holds it.

    Returns ``None`` when the group is now ``owner``'s (marked running), the
    live holder's :class:`Claim` when another process trains it, or
    ``"done"`` when it was recorded meanwhile. A dead holder's claim (its
    process gone, or no heartbeat for :data:`STALE_SECONDS`) is taken over;
    the group then continues from its last checkpoint.
    """
    now = time.time()
    with self._connect() as conn:
      row = conn.execute("SELECT status FROM groups WHERE group_id=?",
                         (group.group_id,)).fetchone()
      if row is None or row[0] == "done":
        return "done"
      held = conn.execute(
          "SELECT pid, host, token, since, heartbeat FROM claims "
          "WHERE group_id=?", (group.group_id,)).fetchone()
      if held is not None and held[2] != owner.token and _claim_alive(
          held[0], held[1], held[4], now):
        return Claim(group.group_id, held[0], held[1], held[3])
      conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                   (group.group_id, owner.pid, owner.host, owner.token, now,
                    now))
      conn.execute("UPDATE groups SET status='running' WHERE group_id=?",
                   (group.group_id,))
      conn.execute("UPDATE trials SET status='running', updated_at=? "
                   f"WHERE group_id=? AND {_UNFINISHED}",
                   (now, group.group_id))
    return None

  def heartbeat(self, owner: Owner) -> None:
    """Refreshes every claim ``owner`` holds."""
    with self._connect() as conn:
      conn.execute("UPDATE claims SET heartbeat=? WHERE token=?",
                   (time.time(), owner.token))

  def claims(self) -> list[Claim]:
    """Groups held by live processes."""
    now = time.time()
    with self._connect(write=False) as conn:
      rows = conn.execute("SELECT group_id, pid, host, since, heartbeat "
                          "FROM claims").fetchall()
    return [Claim(g, pid, host, since) for g, pid, host, since, beat in rows
            if _claim_alive(pid, host, beat, now)]

  @staticmethod
  def _holds(conn, group: Group, owner: Owner | None) -> bool:
    """Whether ``owner`` may write ``group``'s outcome: it holds the claim
    (or, without an owner, nobody does) and the group is not recorded."""
    status = conn.execute("SELECT status FROM groups WHERE group_id=?",
                          (group.group_id,)).fetchone()
    if status is None or status[0] == "done":
      return False
    token = conn.execute("SELECT token FROM claims WHERE group_id=?",
                         (group.group_id,)).fetchone()
    if owner is None:
      return token is None
    return token is not None and token[0] == owner.token

  def mark_failed(self, group: Group, error: str,
                  owner: Owner | None = None) -> bool:
    """A group that raised: its trials are ``failed`` (retried on resume).
    Never overwrites a recorded group or one another process holds;
    returns whether it wrote."""
    with self._connect() as conn:
      if not self._holds(conn, group, owner):
        return False
      conn.execute("UPDATE groups SET status='failed', error=? "
                   "WHERE group_id=?", (error, group.group_id))
      conn.execute("UPDATE trials SET status='failed', updated_at=? "
                   f"WHERE group_id=? AND {_UNFINISHED}",
                   (time.time(), group.group_id))
      conn.execute("DELETE FROM claims WHERE group_id=?", (group.group_id,))
    return True

  def split(self, group: Group, owner: Owner | None = None) -> list[Group]:
    """Replaces ``group`` in the plan by two halves (new ids at the end of
    the plan), atomically; returns them. The halves are ``owner``'s."""
    now = time.time()
    with self._connect() as conn:
      first = conn.execute("SELECT MAX(group_id) FROM groups").fetchone()[0]
      parts = split_group(group, first + 1)
      conn.execute("DELETE FROM groups WHERE group_id=?", (group.group_id,))
      conn.execute("DELETE FROM claims WHERE group_id=?", (group.group_id,))
      self._insert_groups(conn, parts)
      if group.queued:
        # Fewer slots change which trials meet at a rung: the group starts
        # over, its earlier decisions and stopped trials forgotten.
        conn.execute("DELETE FROM decisions WHERE group_id=?",
                     (group.group_id,))
        conn.execute("UPDATE trials SET status='pending', updated_at=? "
                     "WHERE group_id=?", (now, group.group_id))
      conn.executemany(
          "UPDATE trials SET group_id=? WHERE trial_id=?",
          [(g.group_id, t.trial_id) for g in parts for t in g.trials])
      conn.executemany(
          "UPDATE decisions SET group_id=? WHERE trial_id=?",
          [(g.group_id, t.trial_id) for g in parts for t in g.trials])
      conn.executemany(
          "UPDATE trials SET status='pending', updated_at=? "
          f"WHERE trial_id=? AND {_UNFINISHED}",
          [(now, t.trial_id) for g in parts for t in g.trials])
      if owner is not None:
        conn.executemany(
            "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
            [(g.group_id, owner.pid, owner.host, owner.token, now, now)
             for g in parts])
    return parts

  def record(self, group: Group, results: Sequence[TrialResult],
             owner: Owner | None = None, *,
             decisions: Sequence[Any] = (), done: bool = True) -> bool:
    """Writes finished trials and the scheduler decisions taken on the
    same metrics, atomically; with ``done``, also marks the group done.

    Only while ``owner`` holds the group and it is not recorded yet (a
    recorded group is never overwritten); returns whether it wrote. A
    group resumed from an older checkpoint writes the same rows again
    (same values: the run is deterministic), so replays are harmless.
    """
    now = time.time()
    with self._connect() as conn:
      if not self._holds(conn, group, owner):
        return False
      conn.executemany(
          "UPDATE trials SET status=?, metric=?, best_value=?, best_step=?, "
          "final_metrics=?, curves=?, diverged_step=?, wall_time_s=?, "
          "test_metrics=?, updated_at=? WHERE trial_id=?",
          [(r.status, r.metric, _json_float(r.best_value), r.best_step,
            json.dumps(clean_json(dict(r.final_metrics))),
            json.dumps(clean_json(dict(r.curves))), r.diverged_step,
            r.wall_time_s, json.dumps(clean_json(dict(r.test_metrics))), now,
            r.trial_id) for r in results])
      conn.executemany(
          "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
          [(group.group_id, d.trial_id, d.step, d.kind,
            _json_float(d.value), json.dumps(clean_json(dict(d.detail)),
                                             sort_keys=True))
           for d in decisions])
      if done:
        conn.execute("UPDATE groups SET status='done', error=NULL "
                     "WHERE group_id=?", (group.group_id,))
        conn.execute("DELETE FROM claims WHERE group_id=?",
                     (group.group_id,))
      faults.point("store_write")
    return True

  # -- reading ------------------------------------------------------------------

  def settings(self) -> dict[str, Any]:
    with self._connect(write=False) as conn:
      return {k: json.loads(v)
              for k, v in conn.execute("SELECT key, value FROM sweep")}

  def status_counts(self) -> dict[str, int]:
    with self._connect(write=False) as conn:
      return dict(conn.execute(
          "SELECT status, COUNT(*) FROM trials GROUP BY status"))

  def unfinished_trials(self) -> list[tuple[int, dict[str, Any], str]]:
    """``(trial_id, params, status)`` of trials not finished yet (pending,
    running or failed)."""
    with self._connect(write=False) as conn:
      return [(tid, json.loads(p), status) for tid, p, status in conn.execute(
          "SELECT trial_id, params, status FROM trials WHERE status NOT IN "
          "('completed', 'diverged', 'pruned') ORDER BY trial_id")]

  def decisions(self) -> list[dict[str, Any]]:
    """Every scheduler decision, in (trial, step) order: ``{"group_id",
    "trial_id", "step", "kind", "value", "detail"}``."""
    with self._connect(write=False) as conn:
      return _decisions(conn)

  def _outcomes(self, decisions: Sequence[Mapping[str, Any]] | None = None
                ) -> tuple[dict[int, int], dict[int, list[dict]]]:
    """Where each pruned trial stopped, and each trial's PBT exploits
    (from ``decisions``, default: the store's now)."""
    stopped, lineage = {}, {}
    for d in self.decisions() if decisions is None else decisions:
      if d["kind"] == "pruned":
        stopped[d["trial_id"]] = d["step"]
      elif d["kind"] == "exploit":
        lineage.setdefault(d["trial_id"], []).append(
            dict(d["detail"], step=d["step"]))
    return stopped, lineage

  def results(self) -> list[TrialResult]:
    """Every finished trial, in id order."""
    with self._connect(write=False) as conn:
      rows = conn.execute(
          "SELECT trial_id, params, seed, status, group_id, metric, "
          "best_value, best_step, final_metrics, curves, diverged_step, "
          "wall_time_s, test_metrics FROM trials WHERE status IN "
          "('completed', 'diverged', 'pruned') ORDER BY trial_id").fetchall()
    stopped, lineage = self._outcomes()
    out = []
    nan_for_null = lambda d: {k: (math.nan if v is None else v)
                              for k, v in json.loads(d or "{}").items()}
    for (tid, params, seed, status, gid, metric, best, best_step, final,
         curves, dstep, wall, test) in rows:
      curves = {k: _unnull(v) for k, v in json.loads(curves).items()}
      out.append(TrialResult(
          tid, json.loads(params), seed, status, gid, metric, best, best_step,
          nan_for_null(final), curves, dstep, wall, nan_for_null(test),
          stopped.get(tid) if status == "pruned" else None,
          tuple(lineage.get(tid, ()))))
    return out

  def write_csv(self, metric: str) -> None:
    """Regenerates ``results.csv`` (one row per trial) atomically, from
    one snapshot of the store.

    The lanes of a process (groups trained side by side in threads) write
    it one at a time. A writer that finds the store changed by another
    connection after its snapshot (another lane or process recorded a
    group meanwhile, and may have replaced the file first) writes it
    again, so the file written last holds every write before it.
    """
    with _CSV_LOCK:
      try:
        conn = sqlite3.connect(self.db_path, timeout=self.timeout,
                               isolation_level=None)
        try:
          for _ in range(CSV_REWRITES):
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT trial_id, status, best_value, best_step, params, "
                "seed, group_id, diverged_step, wall_time_s, test_metrics "
                "FROM trials ORDER BY trial_id").fetchall()
            decisions = _decisions(conn)
            conn.execute("COMMIT")
            self._write_rows(metric, rows, decisions)
            if conn.execute("PRAGMA data_version").fetchone()[0] == version:
              return
        finally:
          conn.close()
      except sqlite3.DatabaseError as e:
        raise self._error(e) from None

  def _write_rows(self, metric: str, rows: Sequence[tuple],
                  decisions: Sequence[Mapping[str, Any]]) -> None:
    stopped, lineage = self._outcomes(decisions)
    parents = {t: [f"{e['parent']}@{e['step']}" for e in events]
               for t, events in lineage.items()}
    names = [n for n in space_lib.PARAMS if n != "seed"]
    before, after = RESULTS_BEFORE_PARAMS, RESULTS_AFTER_PARAMS
    header = ([c.format(metric=metric) for c in before] + names + ["seed"] +
              list(after))
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
                    stopped.get(tid, "") if status == "pruned" else "",
                    " ".join(parents.get(tid, ())),
                    "" if wall is None else f"{wall:.3f}"])
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.csv_path)
