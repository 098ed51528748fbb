"""Shared fixtures: tiny tasks, so tests share compiled programs."""

import atexit
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile

# The suite compiles a few hundred distinct tiny programs, and XLA's CPU
# backend spends most of the suite's time compiling them: at LLVM -O1 an
# engine program compiles in about half the time (9 s -> 5 s here) and runs
# the same arithmetic. Set before JAX starts its backend; children inherit
# it (subprocess_env). test_engine.py's
# test_suite_compile_level_changes_no_numbers checks a sweep gives the same
# numbers at XLA's default level, as users run it. (Level 0 is faster still,
# but jaxlib 0.10.2's CPU compiler crashed on a test_models program there.)
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS"), TEST_XLA_FLAGS) if f)

import jax
import pytest

import rnnsweep as rs
from rnnsweep.store import TrialResult

# Equivalence tests compare two computations of the same math. On GPUs the
# default float32 matmul precision is TF32 (about 3 decimal digits), which
# would hide real differences under rounding noise; ask for full float32.
# On CPU this changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")
from rnnsweep.tasks.lm import python_docs_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Child processes (scripts, kill -9 drivers) share one persistent XLA cache
# for the session, so each program compiles once for all of them.
# Under pytest-xdist the workers inherit the first process's folder.
_XLA_CACHE = os.environ.get("RNNSWEEP_TESTS_XLA_CACHE")
if not _XLA_CACHE:
  _XLA_CACHE = os.environ["RNNSWEEP_TESTS_XLA_CACHE"] = tempfile.mkdtemp(
      prefix="rnnsweep-tests-xla-")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
# This process too: a program evicted from the engine's cache, or built again
# for another task object of the same shapes, loads instead of compiling.
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The test files that take longest (measured on 2 cores, 2026-12-01), run
# first: the parallel workers (pyproject.toml) take whole files in
# collection order, so the short ones fill in at the end instead of one
# long file running alone. Files not named keep their order after these.
LONGEST_FILES_FIRST = (
    "test_engine.py", "test_resume.py", "test_models.py",
    "test_script_and_store.py", "test_claims.py", "test_levers.py",
    "test_distributed.py", "test_devices.py", "test_choosing_trials.py",
    "test_data.py", "test_fused.py", "test_benchmarks.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def subprocess_env(**extra):
  """Environment for a child Python running this checkout."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
             os.environ.get("PYTHONPATH", ""),
             JAX_COMPILATION_CACHE_DIR=_XLA_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("RNNSWEEP_KILL_AT", None)
  if "XLA_FLAGS" in extra:  # a child's own flags come on top of the suite's
    extra["XLA_FLAGS"] = f"{env['XLA_FLAGS']} {extra['XLA_FLAGS']}".strip()
  env.update(extra)
  return env


class ForkServer:
  """Runs ``target`` (a script's path, or ``["-c", code]``) many times,
  each run a process forked from one that imported it once
  (tests/script_forks.py): real processes (exit status, ``kill -9``, their
  own output) without Python's and JAX's start-up each time."""

  def __init__(self, target):
    self.errors = tempfile.TemporaryFile("w+")
    target = [target] if isinstance(target, str) else list(target)
    self.proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "script_forks.py"),
         *target], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=self.errors, text=True, env=subprocess_env())

  def __call__(self, *args, cwd=None, env=None, timeout=300):
    """One run: a ``subprocess.CompletedProcess`` (SIGALRM ends a run
    past ``timeout`` seconds)."""
    self.proc.stdin.write(json.dumps({
        "argv": [str(a) for a in args], "cwd": str(cwd or os.getcwd()),
        "env": env or {}, "timeout": timeout}) + "\n")
    self.proc.stdin.flush()
    ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 60)
    line = self.proc.stdout.readline() if ready else ""
    if not line:
      self.errors.seek(0)
      pytest.fail(f"script_forks.py gave no answer: {self.errors.read()}")
    reply = json.loads(line)
    return subprocess.CompletedProcess(list(args), reply["returncode"],
                                       reply["stdout"], reply["stderr"])

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)
    self.errors.close()


@pytest.fixture(scope="session")
def forks():
  """``forks(target)``: the session's :class:`ForkServer` of ``target``."""
  servers = {}

  def get(target):
    key = target if isinstance(target, str) else tuple(target)
    if key not in servers:
      servers[key] = ForkServer(target)
    return servers[key]

  yield get
  for server in servers.values():
    server.close()


# Tiny shapes shared by the engine tests: equal static configs hit the same
# cached program, so most tests compile nothing new.
TINY = {"hidden_size": 16, "embed_size": 8, "batch_size": 4, "truncation": 8}


@pytest.fixture(scope="session")
def small_text():
  return python_docs_text()[:40_000]


@pytest.fixture(scope="session")
def tiny_lm(small_text):
  return rs.CharLM(seq_len=16, text=small_text)


@pytest.fixture(scope="session")
def tiny_adding():
  return rs.Adding(seq_len=12, num_val=64)


def group_state(task, configs):
  """``(program, trials, initial state)`` of one group of ``configs``."""
  from rnnsweep import engine  # pylint: disable=import-outside-toplevel
  trials = rs.make_trials(configs)
  group = rs.plan_groups(trials, len(trials))[0]
  prog = engine.get_program(group.static, task)
  state = prog.init(engine.seed_array([t.seed for t in trials]),
                    engine.hparam_arrays([t.params for t in trials]))
  return prog, trials, state


PLANTED_SPACE = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-1),
                          "output_dropout": rs.Uniform(0.0, 0.5),
                          "cell": rs.Choice(["lstm", "gru"])})


def planted_workdir(path, metric_of, exploit_of=None, space=PLANTED_SPACE,
                    trials=None, **settings):
  """A workdir whose ``trials`` (default: 40 random ones of ``space``) were
  'trained' by ``metric_of(params)`` (and whose sweep ``settings`` are
  updated by ``settings``); with
  ``exploit_of(params)``, each trial it gives a ``(step, hp)`` (or
  ``(step, hp, parent)``) for is recorded as a PBT exploit at that step,
  onto those values (and that trial's weights; default -1)."""
  trials = trials or rs.random(space, 40, seed=0)
  store = rs.Store(str(path))

  def exploits(group):
    out = []
    for t in group.trials:
      exploit = exploit_of(t.params) if exploit_of else None
      if exploit is not None:
        step, hp, parent = (*exploit, -1)[:3]
        out.append(rs.schedulers.Decision(
            t.trial_id, step, "exploit", 0.0,
            {"parent": parent, "parent_value": 0.0, "old_hp": {}, "hp": hp}))
    return out

  groups = rs.resume.prepare(store, {"task": "planted", "sampler": "random",
                          "space": space.to_json(), "steps": 10,
                          "num_trials": len(trials), "selection_mode": "min",
                          "selection_metric": "loss", **settings},
                          trials, 64)
  for g in groups:
    store.record(g, [TrialResult(
        t.trial_id, dict(t.params), t.seed, "completed", g.group_id, "loss",
        metric_of(t.params), 10, {"loss": metric_of(t.params)},
        {"step": [5, 10], "train_loss": [2.0, 1.0],
         "val/loss": [metric_of(t.params) + 1, metric_of(t.params)]},
        None, 1.0) for t in g.trials], decisions=exploits(g))
  return str(path)
