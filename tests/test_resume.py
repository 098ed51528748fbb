"""Kill a sweep with SIGKILL at chosen instants, resume it, and compare with
an uninterrupted run: same trials, same numbers, nothing twice, nothing
left pending."""

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import subprocess_env
import rnnsweep as rs


# Five trials of one static config in groups of two: three groups (the last
# padded), four segments each, a checkpoint after every segment.
DRIVER = """
import sys
import rnnsweep as rs
space = rs.Space({"hidden_size": 8, "batch_size": 4, "learning_rate":
                  rs.LogUniform(1e-3, 3e-2), "output_dropout":
                  rs.Uniform(0.0, 0.3)})
rs.sweep(rs.Adding(seq_len=8, num_val=32), space, num_trials=5, steps=16,
         eval_every=4, max_group_size=2, seed=3, workdir=sys.argv[1],
         checkpoint_seconds=0, verbose=True)
print("finished")
"""


def run_code(code, *args, kill_at=None, forks=None):
  """``(returncode, stdout, stderr)`` of ``python -c code args...``: in a
  process of its own, or (``forks``, conftest's fixture) in one forked
  from a process that imported rnnsweep once."""
  env = {"RNNSWEEP_KILL_AT": kill_at} if kill_at else {}
  if forks is not None:
    out = forks(["-c", code])(*args, env=env)
  else:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                         env=subprocess_env(**env), capture_output=True,
                         text=True, timeout=300, check=False)
  return out.returncode, out.stdout, out.stderr


def run_driver(workdir, kill_at=None, forks=None):
  return run_code(DRIVER, workdir, kill_at=kill_at, forks=forks)


def snapshot(workdir):
  """Everything that must match an uninterrupted run."""
  store = rs.Store(str(workdir))
  rows = [(r.trial_id, r.status, r.group_id, r.seed, json.dumps(r.params),
           r.best_value, r.best_step, json.dumps(r.curves),
           json.dumps(r.final_metrics), r.diverged_step,
           json.dumps(r.test_metrics))
          for r in store.results()]
  return rows, store.status_counts()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference") / "run"
  code, out, err = run_driver(workdir)
  assert code == 0 and "finished" in out, err[-2000:]
  rows, counts = snapshot(workdir)
  assert len(rows) == 5 and counts == {"completed": 5}
  # A trial of the last group peaks before its last checkpoint (step 12),
  # so its test number comes from best parameters a checkpoint must carry.
  last_group = max(r[2] for r in rows)
  assert any(r[6] < 12 for r in rows if r[2] == last_group)
  return rows


def assert_resumes_to(reference, workdir, forks=None):
  code, out, err = run_driver(workdir, forks=forks)
  assert code == 0 and "finished" in out, err[-2000:]
  rows, counts = snapshot(workdir)
  assert rows == reference
  assert set(counts) <= {"completed", "diverged"} and sum(
      counts.values()) == 5
  assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  return err


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [
    "segment_start:1",       # first program compiling, nothing trained
    "segment_done:2",        # mid-group, one checkpoint on disk
    "checkpoint_written:2",  # a checkpoint's temporary file complete
    "group_committed:1",     # recorded, its checkpoints not yet deleted
    "group_recorded:1",      # between groups
    "store_write:2",         # inside the second group's transaction
    "segment_start:10",      # the last group's second segment
    "segment_start:12",      # its fourth: best parameters from a checkpoint
])
def test_killed_sweep_resumes_to_the_same_numbers(tmp_path, reference,
                                                  kill_at, forks):
  # The reference ran in a process of its own; these two are forked.
  workdir = tmp_path / "run"
  code, out, _ = run_driver(workdir, kill_at=kill_at, forks=forks)
  assert code == -signal.SIGKILL and "finished" not in out
  assert_resumes_to(reference, workdir, forks)


def _kill_when(workdir, ready, poll_s=0.005):
  """Runs the driver and SIGKILLs it as soon as ``ready(workdir)`` holds:
  an instant chosen by progress, not by a named point. Returns the exit
  code (the caller asserts the kill landed)."""
  proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(workdir)],
                          env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    while proc.poll() is None and not ready(workdir):
      time.sleep(poll_s)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode


def _checkpoint_files(workdir):
  d = workdir / "checkpoints"
  return len(os.listdir(d)) if d.exists() else 0


def _groups_done(workdir):
  try:
    with sqlite3.connect(workdir / "results.db", timeout=1) as conn:
      return conn.execute("SELECT COUNT(*) FROM groups WHERE status='done'"
                          ).fetchone()[0]
  except sqlite3.Error:
    return 0


@pytest.mark.slow
def test_killed_twice_at_arbitrary_times(tmp_path, reference):
  """Killed as soon as the first checkpoint appears (mid-group, wherever
  the process then is), and again as soon as a group is recorded: both
  kills must land, and the result is exact."""
  workdir = tmp_path / "run"
  assert _kill_when(workdir, lambda w: _checkpoint_files(w) > 0) == (
      -signal.SIGKILL)
  assert _groups_done(workdir) < 3
  assert _kill_when(workdir, lambda w: _groups_done(w) >= 1) == (
      -signal.SIGKILL)
  assert _groups_done(workdir) < 3
  assert_resumes_to(reference, workdir)


@pytest.mark.slow
def test_two_processes_on_one_workdir_share_the_work(tmp_path, reference):
  """The same command started twice at once on one workdir, checkpointing
  after every segment, many times: no group is trained twice or
  overwritten, and every trial has the uninterrupted run's numbers."""
  for attempt in range(4):
    workdir = tmp_path / f"run{attempt}"
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(workdir)],
                              env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
      assert p.returncode == 0 and "finished" in out, err[-2000:]
      assert "failed" not in err
    rows, counts = snapshot(workdir)
    assert rows == reference and counts == {"completed": 5}
    assert os.listdir(workdir / "checkpoints") == []
    # Each group was recorded by exactly one of the two.
    recorded = [e.count("trials): ") for _, e in outs]
    assert sum(recorded) == 3, outs


@pytest.mark.slow
def test_corrupt_checkpoints_fall_back(tmp_path, reference, forks):
  workdir = tmp_path / "run"
  code, _, _ = run_driver(workdir, kill_at="segment_done:7", forks=forks)
  assert code == -signal.SIGKILL
  ckpts = sorted(os.listdir(workdir / "checkpoints"))
  assert len(ckpts) == 2  # the second group's two checkpoints
  newest = workdir / "checkpoints" / ckpts[-1]
  newest.write_bytes(newest.read_bytes()[:100])  # truncated
  err = assert_resumes_to(reference, workdir, forks)
  assert err.count("is unusable") == 1 and ckpts[-1] in err

  # Both checkpoints unusable: the group starts over; still exact.
  workdir = tmp_path / "run2"
  code, _, _ = run_driver(workdir, kill_at="segment_done:7", forks=forks)
  for name in os.listdir(workdir / "checkpoints"):
    (workdir / "checkpoints" / name).write_bytes(b"not a zip file")
  err = assert_resumes_to(reference, workdir, forks)
  assert err.count("is unusable") == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_database_is_a_clear_error(tmp_path, damage):
  task = rs.Adding(seq_len=6, num_val=8)
  config = {"hidden_size": 4, "batch_size": 2}
  rs.run_trials(task, [config], steps=2, eval_every=2, workdir=str(tmp_path))
  db = tmp_path / "results.db"
  data = db.read_bytes()
  db.write_bytes(b"x" * 4096 if damage == "garbage" else data[:len(data) // 3])
  damaged = db.read_bytes()
  with pytest.raises(ValueError) as e:
    rs.run_trials(task, [config], steps=2, eval_every=2,
                  workdir=str(tmp_path))
  assert "results.db cannot be read" in str(e.value)
  assert "\n" not in str(e.value)
  assert db.read_bytes() == damaged  # left as it was


def _consistent(db_path):
  """Each group whole or not at all, seen from a fresh connection."""
  with sqlite3.connect(db_path) as conn:
    rows = conn.execute(
        "SELECT t.group_id, t.status, g.status FROM trials t JOIN "
        "groups g USING (group_id)").fetchall()
  for gid, trial_status, group_status in rows:
    done = trial_status in ("completed", "diverged")
    assert done == (group_status == "done"), rows
  return {s for _, _, s in rows}


def test_reader_sees_whole_groups_after_every_commit(tmp_path, monkeypatch):
  """After every transaction the store commits, a second connection sees
  each group all-or-nothing (so no write is ever split in two)."""
  seen, commits = set(), []
  original = rs.Store._connect

  @contextlib.contextmanager
  def checked(self, write=True):
    with original(self, write) as conn:
      yield conn
    if write:
      commits.append(1)
      seen.update(_consistent(self.db_path))

  monkeypatch.setattr(rs.Store, "_connect", checked)
  space = rs.Space({"hidden_size": 4, "batch_size": 2,
                    "learning_rate": rs.LogUniform(1e-3, 3e-2)})
  rs.sweep(rs.Adding(seq_len=6, num_val=8), space, num_trials=5, steps=4,
           eval_every=2, max_group_size=2, workdir=str(tmp_path))
  assert {"running", "done"} <= seen and len(commits) >= 6


def test_results_csv_holds_the_store_as_it_last_was(tmp_path, monkeypatch):
  """Lanes of one process write results.csv one at a time (they share its
  temporary name), and a writer whose snapshot another connection changed
  while it wrote writes the file again."""
  from conftest import planted_workdir  # pylint: disable=import-outside-toplevel
  from rnnsweep import store as store_lib  # pylint: disable=import-outside-toplevel
  store = rs.Store(planted_workdir(tmp_path / "w", lambda p: 1.0))
  real, calls = rs.Store._write_rows, []

  def write(self, metric, rows, decisions):
    assert store_lib._CSV_LOCK.locked()  # pylint: disable=protected-access
    calls.append(len(rows))
    if len(calls) == 1:  # another lane records while this one writes
      with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE trials SET best_value = 0.25 WHERE trial_id = 3")
    real(self, metric, rows, decisions)

  monkeypatch.setattr(rs.Store, "_write_rows", write)
  store.write_csv("loss")
  assert calls == [40, 40]
  with open(store.csv_path, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["best_val_loss"] for r in rows[2:5]] == ["1.0", "0.25", "1.0"]
  calls.clear()
  store.write_csv("loss")  # nothing changed under it: written once
  assert calls == [40]


# ASHA: six trials through two slots (rungs at 4 and 8); PBT: four trials
# exploiting at steps 4, 8 and 12. A checkpoint after every evaluation.
SCHEDULED = """
import sys
import rnnsweep as rs
space = rs.Space({"hidden_size": 8, "batch_size": 4, "learning_rate":
                  rs.LogUniform(1e-3, 3e-2), "output_dropout":
                  rs.Uniform(0.0, 0.3)})
name = sys.argv[2]
scheduler = (rs.SchedulerSettings("asha", min_steps=4, reduction_factor=2)
             if name == "asha" else rs.SchedulerSettings("pbt"))
rs.sweep(rs.Adding(seq_len=8, num_val=32), space,
         num_trials=6 if name == "asha" else 4, steps=16, eval_every=4,
         max_group_size=2 if name == "asha" else 4, seed=5,
         workdir=sys.argv[1], checkpoint_seconds=0, scheduler=scheduler,
         verbose=True)
print("finished")
"""


def _run_scheduled(workdir, name, kill_at=None, forks=None):
  return run_code(SCHEDULED, workdir, name, kill_at=kill_at, forks=forks)


def _scheduled_snapshot(workdir):
  rows, counts = snapshot(workdir)
  decisions = [(d["trial_id"], d["step"], d["kind"], d["value"],
                json.dumps(d["detail"], sort_keys=True))
               for d in rs.Store(str(workdir)).decisions()]
  return rows, counts, decisions


@pytest.fixture(scope="module")
def scheduled_reference(tmp_path_factory):
  out = {}
  for name in ("asha", "pbt"):
    workdir = tmp_path_factory.mktemp(name) / "run"
    code, stdout, err = _run_scheduled(workdir, name)
    assert code == 0 and "finished" in stdout, err[-2000:]
    out[name] = _scheduled_snapshot(workdir)
  _, asha_counts, asha_decisions = out["asha"]
  assert asha_counts.get("pruned", 0) >= 2
  assert sum(1 for d in asha_decisions if d[2] == "start") == 6
  _, _, pbt_decisions = out["pbt"]
  assert sorted(d[1] for d in pbt_decisions if d[2] == "exploit") == [4, 8, 12]
  return out


@pytest.mark.slow
@pytest.mark.parametrize("name, kill_at", [
    ("asha", "tick_recorded:1"),  # first rung decided and written, slots
                                  # not refilled yet
    ("asha", "segment_start:6"),  # resumes a group shrunk to K=1
    ("pbt", "tick_recorded:2"),   # exploit written, not yet applied
])
def test_killed_scheduled_sweep_makes_the_same_decisions(
    tmp_path, scheduled_reference, name, kill_at, forks):
  workdir = tmp_path / "run"
  code, out, _ = _run_scheduled(workdir, name, kill_at, forks)
  assert code == -signal.SIGKILL and "finished" not in out
  code, out, err = _run_scheduled(workdir, name, forks=forks)
  assert code == 0 and "finished" in out, err[-2000:]
  assert "is unusable" not in err  # the newest checkpoint was used
  assert _scheduled_snapshot(workdir) == scheduled_reference[name]
  assert os.listdir(workdir / "checkpoints") == []
