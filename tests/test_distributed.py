"""A sweep run by two processes joined by ``jax.distributed`` on
127.0.0.1 (CPU collectives, 2 CPU devices each): one store, written by
process 0 alone, with the numbers of one process on one device; a process
killed mid-group stops the job, and the sweep continues from its
checkpoint with one process. Plus the checks of the job settings."""

import json
import os
import socket
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import rnnsweep as rs
from conftest import ROOT, subprocess_env
from devices_child import CONFIGS, EVAL_EVERY, STEPS, task
from test_devices import assert_same_curves

CHILD = os.path.join(ROOT, "tests", "distributed_child.py")
DEVICES = "--xla_force_host_platform_device_count={}"
TIMEOUT = 300


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(workdir, configs, pid, nproc, port, kill_at=None, group_size="3",
          devices=2):
  env = subprocess_env(XLA_FLAGS=DEVICES.format(devices), PYTHONPATH=os.pathsep.join(
      [ROOT, os.path.join(ROOT, "tests")]), CHILD_GROUP_SIZE=group_size,
                       **({"RNNSWEEP_KILL_AT": kill_at} if kill_at else {}))
  return subprocess.Popen(
      [sys.executable, CHILD, str(workdir), str(configs), str(pid),
       str(nproc), str(port)], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env=env)


def finish(proc):
  try:
    out, err = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"a process of the job ran past {TIMEOUT} s: {err[-2000:]}")
  return proc.returncode, out, err


def job(workdirs, configs, kill_at=(None, None), group_size="3"):
  """Both processes of a job; ``[(returncode, stdout, stderr)] * 2``."""
  port = free_port()
  procs = [start(workdirs[i], configs, i, 2, port, kill_at[i], group_size)
           for i in range(2)]
  return [finish(p) for p in procs]


def facts_of(run):
  code, out, err = run
  assert code == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device():
  """The sweep of all six configurations, and of the first three (the
  same trials: ids and seeds), on one device in this process (K=3, no
  workdir)."""
  result = rs.run_trials(task(), CONFIGS, steps=STEPS, eval_every=EVAL_EVERY,
                         max_group_size=3, devices=1)
  curves = {str(r.trial_id): r.curves for r in result.trials}
  return {6: curves, 3: {k: curves[k] for k in ("0", "1", "2")}}


def test_two_processes_run_one_sweep(tmp_path, one_device):
  workdir = tmp_path / "w"
  # Begun by one process alone on one device, killed after group 1's
  # first evaluation was checkpointed: the job of two continues it.
  code, _, err = finish(start(workdir, 6, 0, 1, 0, "segment_done:2", "auto",
                              devices=1))
  assert code == -9, err[-2000:]
  # Process 1 is given a workdir that does not exist: it must never
  # touch it (only process 0 writes, and the workdir may live on its host
  # alone).
  elsewhere = tmp_path / "process1-never-written"
  runs = job([workdir, elsewhere], 6, group_size="auto")
  first, second = facts_of(runs[0]), facts_of(runs[1])
  assert (first["process"], first["processes"], first["devices"]) == (0, 2, 4)
  assert (second["process"], second["processes"]) == (1, 2)
  assert "6 trials, 2 groups to run on 4 devices (cpu) in 2 processes" in (
      runs[0][2])
  assert "continuing the sweep" in runs[0][2]
  # Every process received the checkpoint process 0 read.
  assert ("group 1 continues from its checkpoint after evaluation 1 "
          "(3 slots, 4 on 4 devices)") in runs[0][2]
  assert runs[0][2].count("over 4 devices (4 slots)") == 2
  assert "group 1" not in runs[1][2]  # process 0 speaks for the job
  assert not elsewhere.exists()
  # Every process returns the sweep's results, equal to one device's.
  assert_same_curves(first["curves"], one_device[6])
  assert_same_curves(second["curves"], one_device[6])
  stored = rs.Store(str(workdir)).results()
  assert sorted(r.trial_id for r in stored) == list(range(6))
  assert_same_curves({str(r.trial_id): r.curves for r in stored},
                     one_device[6])
  finals = {round(r.curves["val/bits_per_char"][-1], 4) for r in stored}
  assert len(finals) == 6  # the trials really differ


def test_killed_process_stops_the_job_and_one_process_continues(
    tmp_path, one_device):
  workdir = tmp_path / "w"
  # Process 1 dies after the group's second segment (its first
  # evaluation was checkpointed).
  # K chosen by process 0 for both (no speed probe: it would be a program
  # only one process runs): 3 trials, padded to the 4 devices.
  runs = job([workdir, tmp_path / "elsewhere"], 3,
             kill_at=(None, "segment_done:2"), group_size="auto")
  assert runs[1][0] == -9, runs[1][2][-2000:]
  assert ("K=4 for 3 trials (K=4 needs" in runs[0][2] and
          "no speed probe across processes)" in runs[0][2])
  assert runs[0][0] != 0  # the survivor stops instead of hanging
  with sqlite3.connect(workdir / "results.db") as conn:
    # Not marked failed: a lost peer is not the group's fault.
    assert conn.execute("SELECT status FROM groups").fetchall() == [
        ("running",)]
  assert os.listdir(workdir / "checkpoints")
  # Alone now, on its 2 devices, not part of any job.
  code, out, err = finish(start(workdir, 3, 0, 1, 0, group_size="auto"))
  assert code == 0, err[-3000:]
  assert ("group 1 continues from its checkpoint after evaluation 1 "
          "(4 slots)") in err
  assert "on 2 devices (cpu) in 1 process" in err
  facts = json.loads(out.strip().splitlines()[-1])
  assert facts["processes"] == 1
  assert_same_curves(facts["curves"], one_device[3])
  stored = rs.Store(str(workdir)).results()
  assert sorted(r.trial_id for r in stored) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "sometimes"}, "distributed must be one of auto, on, off"),
    ({"coordinator_address": "localhost"}, "coordinator_address must be "
     "host:port"),
    ({"coordinator_address": "h:1", "num_processes": 2},
     "process_id is needed with coordinator_address, num_processes"),
    ({"num_processes": 0}, "num_processes must be a positive integer"),
    ({"num_processes": 2, "process_id": 2}, "process_id must be in"),
    ({"mode": "off", "num_processes": 2}, "num_processes needs distributed"),
])
def test_bad_job_settings_are_one_line_errors(kwargs, message):
  mode = kwargs.pop("mode", "auto")
  with pytest.raises(ValueError, match=message):
    rs.distributed.initialize(mode, **kwargs)


@pytest.mark.parametrize("environ, kind", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, None),  # sbatch, not srun
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, None),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, "slurm"),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1"}, "tpu"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "jax"),
])
def test_jobs_are_detected_from_the_environment(environ, kind):
  assert rs.distributed.cluster_detected(environ) == kind


def test_auto_outside_a_job_stays_one_process(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_ID",
               "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  assert rs.distributed.initialize("auto") is False
  assert not rs.distributed.multi_process() and rs.distributed.is_leader()
  # One process: the helpers are the plain operations.
  assert rs.distributed.broadcast({"a": 1}) == {"a": 1}
  assert rs.distributed.on_leader(lambda: 5) == 5
  np.testing.assert_array_equal(rs.distributed.to_host({"x": np.arange(3)})[
      "x"], np.arange(3))
