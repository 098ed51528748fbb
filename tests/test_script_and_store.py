"""The sweep script end to end, its errors, and what lands in the workdir."""

import csv
import dataclasses
import json
import math
import os
import shlex
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import rnnsweep as rs
from conftest import ROOT, TINY, subprocess_env

SCRIPT = os.path.join(ROOT, "experiments", "sweep.py")
TINY_SPACE = json.dumps({"hidden_size": 8, "batch_size": 4, "embed_size": 4})


def run_script(*args, cwd=None):
  env = subprocess_env()
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.fixture(scope="module")
def forked_script(forks):
  """``run_script`` for many short runs (conftest.ForkServer)."""
  return forks(SCRIPT)


def test_script_runs_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  out = run_script("--task=adding", "--seq_len=8", "--num_trials=3",
                   "--steps=4", "--eval_every=2", "--max_group_size=2",
                   f"--space={TINY_SPACE}", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "val mse" in out.stdout and "best: trial" in out.stdout
  with open(workdir / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["trial_id"]) for r in rows] == [0, 1, 2]
  assert all(r["status"] == "completed" for r in rows)
  assert all(float(r["best_val_mse"]) > 0 for r in rows)
  assert {r["hidden_size"] for r in rows} == {"8"}
  assert len({r["learning_rate"] for r in rows}) == 3
  with sqlite3.connect(workdir / "results.db") as conn:
    n, = conn.execute("SELECT COUNT(*) FROM trials WHERE status = "
                      "'completed'").fetchone()
    settings = dict(conn.execute("SELECT key, value FROM sweep"))
  assert n == 3
  assert json.loads(settings["task"]) == "adding"
  assert json.loads(settings["space"])["hidden_size"] == 8
  assert json.loads(settings["space"])["truncation"] == 8  # task default


@pytest.mark.parametrize("args, words", [
    (["--space={\"learning_rat\": 0.1}"], ["unknown parameter",
                                           "'learning_rat'"]),
    (["--space={\"learning_rate\": {\"log_uniform\": [0, 1]}}"],
     ["'learning_rate'", "lo > 0"]),
    (["--space={\"input_dropout\": 1.5}"], ["'input_dropout'", "[0, 1)"]),
    (["--space={\"hidden_size\": 10.5}"], ["'hidden_size'", "integer"]),
    (["--space={\"cell\": []}"], ["Choice", "at least one"]),
    (["--space={bad json"], ["not valid JSON"]),
    (["--space=missing.json"], ["'missing.json'", "neither"]),
    (["--preset=nope"], ["preset 'nope'"]),
    (["--sampler=grid"], ["grid search", "Choice"]),
    (["--sampler=grid", "--preset=cells", "--num_trials=3"],
     ["--num_trials", "grid"]),
    (["--task=nope"], ["--task"]),
    (["--steps=0"], ["--steps"]),
    (["--sampler=bayes"], ["--sampler"]),
    (["--max_group_size=big"], ["--max_group_size", "'auto'", "'big'"]),
    (["--trial_chunk=-2"], ["--trial_chunk", "'auto' or an integer >= 0",
                            "'-2'"]),
    (["--unroll=0"], ["--unroll", "'auto' or a positive integer", "'0'"]),
    (["--precision=float16"], ["--precision", "<auto|float32|bfloat16>"]),
    (["stray"], ["unexpected arguments"]),
    (["--space=adir"], ["'adir'", "Is a directory"]),
    (["--space=latin1.json"], ["'latin1.json'", "not UTF-8"]),
    (["--task=classify", "--data_path=classes.npz"],
     ["classes.npz", "'num_classes'", "one positive integer"]),
    (["--seed=2147483648"], ["--seed"]),
    (["--scheduler=asha", "--min_steps=30"],
     ["min_steps must be a positive multiple of eval_every (100)", "30"]),
    (["--pbt_interval=200"], ["--pbt_interval", "--scheduler=pbt",
                              "--scheduler=none"]),
    (["--scheduler=median", "--reduction_factor=2"],
     ["--reduction_factor", "--scheduler=median"]),
    (["--scheduler=asha", "--reduction_factor=1"], ["reduction_factor",
                                                    ">= 2"]),
    (["--scheduler=asha", "--steps=100"], ["min_steps (100)",
                                           "below steps (100)"]),
    (["--scheduler=bohb"], ["--scheduler"]),
    (["--trials=nope.csv"], ["trials file 'nope.csv'", "does not exist"]),
    (["--trials=bad.csv"], ["bad.csv", "trial 0", "'learning_rat'"]),
    (["--trials=ragged.csv"], ["ragged.csv", "row 3", "header has 2"]),
    (["--trials=ragged.csv", "--num_trials=3"],
     ["--num_trials", "--sampler=trials"]),
    (["--sampler=around"], ["--around"]),
    (["--around=[1]"], ["--around", "JSON object"]),
    (["--around={\"learning_rate\": 0.1}", "--rounds=2"],
     ["--rounds", "--sampler=around"]),
    (["--sampler=optuna:nope"], ["optuna:nope", "no sampler 'nope'"]),
    (["--sampler=optuna:tpe", '--space={"seed": [1, 2]}'],
     ["'seed' varies", "optuna:tpe", "--seeds=N"]),
    (['--space={"seed": [1, 2]}', "--seeds=3"], ["'seed' varies", "seeds=3"]),
    (["--seeds=0"], ["--seeds", "positive integer"]),
    (["--space={\"lr_schedule\": \"linear\"}"], ["'lr_schedule'",
                                                   "warmup_cosine"]),
    (["--coordinator_address=localhost"], ["--coordinator_address",
                                           "host:port", "'localhost'"]),
    (["--num_processes=2", "--process_id=1"],
     ["--coordinator_address is needed with num_processes, process_id"]),
    (["--cpu_devices=0"], ["--cpu_devices", "'auto' or a positive integer",
                           "got 0"]),
    (["--cpu_devices=many"], ["--cpu_devices", "got 'many'"]),
])
def test_script_bad_input_gives_one_clear_error(tmp_path, args, words,
                                                forked_script):
  workdir = tmp_path / "run"
  (tmp_path / "adir").mkdir()
  (tmp_path / "latin1.json").write_bytes('{"cell": "lstm"} # é'.encode(
      "latin-1"))
  (tmp_path / "bad.csv").write_text("learning_rat,cell\n0.1,lstm\n")
  (tmp_path / "ragged.csv").write_text("learning_rate,cell\n0.1,lstm\n"
                                       "0.2,gru,extra\n")
  np.savez(tmp_path / "classes.npz", x=np.zeros((30, 4, 2)),
           y=np.arange(30) % 2, num_classes=np.array([2, 3]))
  out = forked_script(*args, f"--workdir={workdir}", cwd=tmp_path)
  assert out.returncode != 0
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert "Traceback" not in out.stderr
  assert 1 <= len(lines) <= 2, out.stderr  # absl adds a "--helpshort" hint
  for w in words:
    assert w in lines[0]
  assert not workdir.exists()  # nothing written half-way


def test_pbt_sweep_says_what_its_best_trial_ran_with_at_its_best(
    tmp_path, forked_script):
  # The script's and the report's "best" lines, read against the exploits
  # the store recorded for the best trial.
  workdir = tmp_path / "pbt"
  out = forked_script(
      "--task=adding", "--seq_len=6", "--num_trials=4", "--steps=12",
      "--eval_every=2", "--scheduler=pbt", "--pbt_interval=2",
      "--pbt_fraction=0.5", '--space={"hidden_size": 4, "batch_size": 2, '
      '"cell": "gru", "learning_rate": {"log_uniform": [0.001, 0.3]}}',
      f"--workdir={workdir}", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  at = next(i for i, l in enumerate(lines) if l.startswith("best: trial "))
  tid = int(lines[at].split()[2].rstrip(","))
  store = rs.Store(str(workdir))
  best = next(r for r in store.results() if r.trial_id == tid)
  exploits = [d for d in store.decisions()
              if d["kind"] == "exploit" and d["trial_id"] == tid]
  assert exploits, "the best trial never exploited: no PBT line to check"
  before = [d for d in exploits if d["step"] < best.best_step]
  if before:
    rate = before[-1]["detail"]["hp"]["learning_rate"]
    want = (f"  (PBT: these are its starting values; at its best step, "
            f"{best.best_step}, it ran with learning_rate={rate:.4g}, set "
            f"at step {before[-1]['step']} when it took trial "
            f"{before[-1]['detail']['parent']}'s weights)")
  else:
    want = (f"  (PBT: it reached its best on these, its starting values; "
            f"its first exploit came after, at step {exploits[0]['step']})")
  assert lines[at + 1] == want, out.stdout
  text = rs.report.write_report(str(workdir), plots=False).text
  assert want in text
  assert "Seed noise" not in text  # a PBT row holds only starting values


def test_seed_replicates_print_their_mean(tmp_path, forked_script):
  workdir = tmp_path / "seeds"
  out = forked_script(
      "--task=adding", "--seq_len=6", "--sampler=grid", "--steps=4",
      "--eval_every=2", '--space={"hidden_size": 4, "batch_size": 2, '
      '"cell": "gru", "learning_rate": [0.003, 0.03], "seed": [1, 2]}',
      f"--workdir={workdir}", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert sorted((r["learning_rate"], r["seed"]) for r in rows) == [
      ("0.003", "1"), ("0.003", "2"), ("0.03", "1"), ("0.03", "2")]
  lines = out.stdout.splitlines()
  at = next(i for i, l in enumerate(lines)
            if l.startswith("Configurations trained with several seeds (2)"))
  means = {}
  for rate in ("0.003", "0.03"):
    vals = [float(r["best_val_mse"]) for r in rows if r["learning_rate"] == rate]
    means[rate] = sum(vals) / 2
  table = [l.split() for l in lines[at + 3:at + 5]]
  assert [row[-1] for row in table] == sorted(means, key=means.get)
  for row in table:
    assert row[1] == "2" and math.isclose(float(row[2]), means[row[-1]],
                                          rel_tol=1e-3)
  # The same four trials again from their results.csv, with two seeds
  # each: every row's first run repeats it (the other group size changes
  # only rounding), the second adds a seed, so each rate has four.
  again = tmp_path / "again"
  out = forked_script("--task=adding", "--seq_len=6", "--steps=4",
                      "--eval_every=2", f"--trials={workdir / 'results.csv'}",
                      "--seeds=2", f"--workdir={again}", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(again / "results.csv", newline="") as f:
    rows2 = list(csv.DictReader(f))
  assert len(rows2) == 8
  for row, first, second in zip(rows, rows2[0::2], rows2[1::2]):
    assert (first["learning_rate"], first["seed"]) == (
        row["learning_rate"], row["seed"])
    assert math.isclose(float(first["best_val_mse"]),
                        float(row["best_val_mse"]), rel_tol=1e-5)
    assert second["learning_rate"] == row["learning_rate"]
    assert second["seed"] == str(rs.samplers.replica_seed(int(row["seed"]), 1))
  lines = out.stdout.splitlines()
  assert lines[1].split()[-1] == "seed"  # the leaderboard shows the seeds
  at = next(i for i, l in enumerate(lines)
            if l.startswith("Configurations trained with several seeds (2)"))
  assert [l.split()[1] for l in lines[at + 3:at + 5]] == ["4", "4"]
  # A random sweep: --num_trials counts configurations.
  out = forked_script("--task=adding", "--seq_len=6", "--steps=2",
                      "--eval_every=2", "--num_trials=2", "--seeds=2",
                      f"--space={TINY_SPACE}", f"--workdir={tmp_path / 'r'}",
                      cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "r" / "results.csv", newline="") as f:
    seeds = [int(r["seed"]) for r in csv.DictReader(f)]
  first = [rs.samplers.derive_seed(0, i) for i in (0, 1)]
  assert seeds == [first[0], rs.samplers.replica_seed(first[0], 1),
                   first[1], rs.samplers.replica_seed(first[1], 1)]
  assert out.stdout.splitlines()[1].split()[-1] == "seed"


def test_report_says_how_to_tell_the_top_trials_from_seed_noise(
    tmp_path, forked_script):
  # A random sweep with one seed per configuration, on another data stream
  # (--seed=4): the report's command, run as printed, trains the top three
  # again with three seeds each, and each one's first run repeats it.
  workdir = tmp_path / "one"
  out = forked_script(
      "--task=adding", "--seq_len=6", "--num_trials=4", "--steps=4",
      "--eval_every=2", "--seed=4", '--space={"hidden_size": 4, '
      '"batch_size": 2, "cell": "gru"}', f"--workdir={workdir}",
      cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "4 trials, 1 group to run on 1 device" in out.stderr
  lines = rs.report.write_report(str(workdir), plots=False).text.splitlines()
  assert lines[-2].startswith("Seed noise: each configuration ran with one "
                              "seed, so the top trials' order may be luck.")
  awk, command = lines[-1].strip().split(" && ")
  words = shlex.split(command)
  assert words[:2] == ["python", "experiments/sweep.py"]
  assert "--seed=4" in words and "--seeds=3" in words
  subprocess.run(awk, shell=True, cwd=tmp_path, check=True)
  out = forked_script(*words[2:], f"--workdir={tmp_path / 'again'}",
                      cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "results.csv", newline="") as f:
    before = list(csv.DictReader(f))
  with open(tmp_path / "again" / "results.csv", newline="") as f:
    after = list(csv.DictReader(f))
  ranked = sorted(before, key=lambda r: float(r["best_val_mse"]))[:3]
  top = sorted(ranked, key=lambda r: int(r["trial_id"]))  # the file's order
  assert len(after) == 9
  for row, first in zip(top, after[0::3]):
    assert (first["learning_rate"], first["seed"]) == (
        row["learning_rate"], row["seed"])
    assert math.isclose(float(first["best_val_mse"]),
                        float(row["best_val_mse"]), rel_tol=1e-5)
  # ... and that sweep's report has its means, and no such advice.
  text = rs.report.write_report(str(tmp_path / "again"), plots=False).text
  assert "Configurations trained with several seeds (3)" in text
  assert "Seed noise" not in text


def test_forked_runs_are_runs_of_the_script(tmp_path, forked_script):
  # The bad-input cases above run forked: each must give what a process of
  # its own gives (exit status, both outputs), for absl's flag errors and
  # the script's own.
  for args in (["--steps=0"], ["--task=nope"], ["--sampler=grid"],
               ["--space=missing.json"], ["stray"]):
    args = [*args, f"--workdir={tmp_path / 'run'}"]
    real = run_script(*args, cwd=tmp_path)
    forked = forked_script(*args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        real.returncode, real.stdout, real.stderr), args
    assert real.stderr or real.stdout
  assert not (tmp_path / "run").exists()


def test_cpu_devices_splits_the_cpu_to_the_same_numbers(tmp_path,
                                                        forked_script):
  args = ["--task=adding", "--seq_len=8", "--num_trials=2", "--steps=2",
          "--eval_every=2", "--max_group_size=2", f"--space={TINY_SPACE}"]
  run = lambda name, *a: forked_script(*args, f"--workdir={tmp_path / name}",
                                       *a, cwd=tmp_path)
  one, split = run("one"), run("split", "--cpu_devices=auto")
  assert one.returncode == 0, one.stderr[-2000:]
  assert split.returncode == 0, split.stderr[-2000:]
  # 'auto': a device per usable core, at most one per trial.
  n = min(rs.placement.usable_cores(), 2)
  assert "on 1 device (cpu) in 1 process" in one.stderr
  assert f"on {n} device{'s' * (n > 1)} (cpu) in 1 process" in split.stderr
  assert "hint:" not in split.stderr
  assert ("hint:" in one.stderr) == (n > 1)
  def rows(name):  # every column but the wall time
    with open(tmp_path / name / "results.csv", newline="") as f:
      return [{k: v for k, v in r.items() if k != "wall_time_s"}
              for r in csv.DictReader(f)]
  assert rows("split") == rows("one") and len(rows("one")) == 2


def test_script_rerun_continues_and_other_settings_are_refused(
    tmp_path, forked_script):
  workdir = tmp_path / "run"
  args = ["--task=adding", "--seq_len=8", "--num_trials=2", "--steps=2",
          "--eval_every=2", f"--space={TINY_SPACE}", f"--workdir={workdir}"]
  run = lambda *a: forked_script(*a, cwd=tmp_path)
  first = run(*args)
  assert first.returncode == 0, first.stderr[-2000:]
  before = (workdir / "results.csv").read_text()
  again = run(*args)  # the same command: nothing left to run
  assert again.returncode == 0, again.stderr[-2000:]
  assert "0 groups to run" in again.stderr
  assert (workdir / "results.csv").read_text() == before
  board = lambda out: out.stdout[:out.stdout.index("results:")]
  assert board(again) == board(first)
  other = run(*args[:-2], "--steps=4", args[-2], args[-1])
  assert other.returncode != 0
  assert "other settings: steps: stored 2, now 4" in other.stderr
  more = run(*[a for a in args if "num_trials" not in a],
             "--num_trials=3")
  assert more.returncode != 0 and "--extend" in more.stderr
  extended = run(*[a for a in args if "num_trials" not in a],
                 "--num_trials=3", "--extend")
  assert extended.returncode == 0, extended.stderr[-2000:]
  with open(workdir / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
  assert all(r["status"] == "completed" for r in rows)
  # The first two trials were not run again.
  assert [r for r in rows[:2]] == list(csv.DictReader(before.splitlines()))


def test_store_holds_what_the_api_returns(tmp_path, tiny_adding):
  configs = [dict(TINY, cell="gru", learning_rate=lr)
             for lr in (1e-3, 3e-3, 1e-2)]
  configs.append(dict(TINY, cell="gru", learning_rate=1e35, grad_clip=0.0))
  result = rs.run_trials(tiny_adding, configs, steps=16, eval_every=8,
                         max_group_size=4, workdir=str(tmp_path))
  stored = rs.Store(str(tmp_path)).results()
  assert len(stored) == len(result.trials) == 4
  for a, b in zip(result.trials, stored):
    assert a.trial_id == b.trial_id and a.status == b.status
    assert a.params == b.params and a.seed == b.seed
    assert a.best_value == b.best_value and a.best_step == b.best_step
    for k in a.curves:
      assert len(a.curves[k]) == len(b.curves[k])
      for x, y in zip(a.curves[k], b.curves[k]):
        assert (math.isnan(x) and math.isnan(y)) or x == y
  assert rs.Store(str(tmp_path)).status_counts() == {"completed": 3,
                                                     "diverged": 1}
  assert result.best.trial_id in (0, 1, 2)
  board = result.leaderboard()
  assert "3 completed" in board and "1 diverged" in board
  with open(tmp_path / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["completed"] * 3 + ["diverged"]
  assert rows[3]["diverged_step"] != ""
  # Running it again continues a finished sweep: nothing to train.
  with rs.engine.count_compiles() as compiles:
    again = rs.run_trials(tiny_adding, configs, steps=16, eval_every=8,
                          max_group_size=4, workdir=str(tmp_path))
  assert compiles.count == 0
  assert [r.curves["train_loss"][:1] for r in again.trials[:3]] == [
      r.curves["train_loss"][:1] for r in result.trials[:3]]
  with pytest.raises(ValueError, match="other settings: steps"):
    rs.run_trials(tiny_adding, configs, steps=24, eval_every=8,
                  max_group_size=4, workdir=str(tmp_path))
  # With seeds, the trial counts are told apart from configurations.
  with pytest.raises(ValueError) as e:
    rs.run_trials(tiny_adding, configs, steps=16, eval_every=8,
                  max_group_size=4, workdir=str(tmp_path), seeds=2)
  assert ("other settings: num_trials: stored 4, now 8; "
          "sampler_options.seeds: only now 2 (4 = 4 configurations x 1 seed, "
          "8 = 4 configurations x 2 seeds); use another workdir") in str(e.value)


def test_bad_run_settings_write_nothing(tmp_path, tiny_adding):
  for kwargs, word in [(dict(steps=0), "steps"), (dict(eval_every=-1),
                                                  "eval_every"),
                       (dict(max_group_size=0), "max_group_size")]:
    args = dict(dict(steps=4, eval_every=2), **kwargs)
    with pytest.raises(ValueError, match=word):
      rs.run_trials(tiny_adding, [TINY], workdir=str(tmp_path / "w"), **args)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_short_lm_sweep_learns():
  """The real corpus: the best trial ends far below the uniform baseline."""
  task = rs.make_task("lm", seq_len=64)
  space = rs.Space({"hidden_size": 64, "cell": rs.Choice(["lstm", "gru"]),
                    "learning_rate": rs.Choice([1e-2])})
  result = rs.sweep(task, space, sampler="grid", steps=150, eval_every=75)
  uniform_bits = math.log2(task.vocab_size)  # ~6.7 bits for 103 characters
  assert result.best is not None
  assert result.best.best_value < uniform_bits - 2.5
  for t in result.trials:  # and every trial improved with training
    curve = t.curves["val/bits_per_char"]
    assert curve[-1] < curve[0] < uniform_bits


def test_workdir_that_is_a_file_is_one_error_before_any_work(tmp_path):
  path = tmp_path / "afile"
  path.write_text("mine")
  out = run_script("--task=adding", "--seq_len=8", "--num_trials=1",
                   "--steps=1", f"--space={TINY_SPACE}", f"--workdir={path}")
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "is a file, not a folder" in out.stderr
  assert "auto group size" not in out.stderr  # refused before compiling
  assert path.read_text() == "mine"


def test_changed_setting_names_the_differing_entry(tmp_path, tiny_adding):
  """A changed range deep inside the space is named, not cut off."""
  space = lambda hi: rs.Space({**TINY, "learning_rate": rs.LogUniform(1e-3,
                                                                      hi)})
  rs.sweep(tiny_adding, space(1e-2), num_trials=1, steps=1, eval_every=1,
           max_group_size=1, workdir=str(tmp_path))
  with pytest.raises(ValueError) as e:
    rs.sweep(tiny_adding, space(2e-2), num_trials=1, steps=1, eval_every=1,
             max_group_size=1, workdir=str(tmp_path))
  text = str(e.value)
  assert "space.learning_rate" in text and "0.01" in text and "0.02" in text
  assert "\n" not in text


def test_locked_store_says_in_use_not_corrupt(tmp_path, tiny_adding):
  rs.run_trials(tiny_adding, [TINY], steps=1, eval_every=1,
                max_group_size=1, workdir=str(tmp_path))
  store = rs.Store(str(tmp_path), timeout=0.2)
  groups = rs.resume.prepare(store, store.settings(), rs.make_trials(
      [{**tiny_adding.base_params(), **TINY}]), 1)
  assert groups == []
  other = sqlite3.connect(tmp_path / "results.db", isolation_level=None)
  other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
  try:
    group = rs.plan_groups(rs.make_trials([TINY]), 1)[0]
    with pytest.raises(ValueError) as e:
      store.claim(group, rs.store.Owner.this_process())
  finally:
    other.execute("ROLLBACK")
    other.close()
  assert "in use by another process" in str(e.value)
  assert "cannot be read" not in str(e.value)


def test_leftover_temporary_files_are_removed(tmp_path, tiny_adding):
  dead = 2**22 + 12345  # above any PID this machine hands out
  for name in (f"results.db.tmp{dead}", f"results.db.tmp{dead}-journal",
               f"results.csv.tmp{dead}"):
    (tmp_path / name).write_text("half")
  rs.run_trials(tiny_adding, [TINY], steps=1, eval_every=1,
                max_group_size=1, workdir=str(tmp_path))
  assert (tmp_path / "results.db").exists()
  assert not any(".tmp" in n for n in os.listdir(tmp_path))


def _make_read_only(path):
  """Makes a folder unwritable even for root (``chattr +i``), or by mode
  bits for others; returns an undo function, or None if neither works."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    return lambda: os.chmod(path, 0o755)
  done = subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                        check=False)
  if done.returncode != 0:
    return None
  return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_archived_sweep_on_read_only_storage(tmp_path, tiny_adding):
  """Reporting works (figures elsewhere, or one line saying they could
  not be written); a new or continued sweep there is one clear line."""
  workdir = tmp_path / "archive"
  rs.run_trials(tiny_adding, [TINY, dict(TINY, learning_rate=3e-3)], steps=2,
                eval_every=1, max_group_size=2, workdir=str(workdir))
  # An archived copy: the database checkpointed, no WAL side files.
  sqlite3.connect(workdir / "results.db").execute(
      "PRAGMA wal_checkpoint(TRUNCATE)").close()
  for side in ("results.db-wal", "results.db-shm"):
    if (workdir / side).exists():
      os.remove(workdir / side)
  undo = _make_read_only(workdir)
  if undo is None:
    pytest.skip("cannot make a folder read-only here (no chattr as root)")
  try:
    assert not os.access(workdir, os.W_OK)
    report = rs.report.write_report(str(workdir))
    assert "Figures not written" in report.text and "--out_dir" in report.text
    assert "Best: trial" in report.text
    elsewhere = rs.report.write_report(str(workdir),
                                       out_dir=str(tmp_path / "figs"))
    assert (tmp_path / "figs" / "curves.png").exists()
    assert elsewhere.figures
    with pytest.raises(ValueError, match="read-only"):
      rs.run_trials(tiny_adding, [TINY, dict(TINY, learning_rate=3e-3)],
                    steps=2, eval_every=1, max_group_size=2,
                    workdir=str(workdir))
    with pytest.raises(ValueError, match="read-only"):
      rs.run_trials(tiny_adding, [TINY], steps=2, eval_every=1,
                    workdir=str(workdir / "new"))
  finally:
    undo()


def test_workdir_name_resume_and_store_use_one_settings_value(tiny_adding):
  """Every setting resume compares is in the default workdir's hash (the
  hoisting lever once was not): changing any one changes the name."""
  base = rs.SweepSettings.make(
      tiny_adding, sampler="random", space=rs.Space({"hidden_size": 4}),
      num_trials=3, steps=4, eval_every=2, max_group_size="auto", seed=0)
  changed = {
      "task": "copy", "task_config": {"seq_len": 9}, "sampler": "grid",
      "space": {"hidden_size": 8}, "num_trials": 4, "steps": 5,
      "eval_every": 3, "max_group_size": 2, "seed": 1,
      "engine": rs.EngineOptions(hoist_input=True),
      "selection_metric": "mae", "selection_mode": "max",
      "scheduler": rs.SchedulerSettings("asha", min_steps=2),
      "sampler_options": {"base": {"learning_rate": 0.01},
                          "points_per_axis": 3}}
  assert set(changed) == set(rs.settings.COMPARED)
  digests = {base.digest()}
  for name, value in changed.items():
    other = dataclasses.replace(base, **{name: value})
    assert other.record()[name] != base.record()[name]
    digests.add(other.digest())
  assert len(digests) == 1 + len(changed)


def test_script_default_workdir_follows_the_engine_options(tmp_path):
  args = ["--task=adding", "--seq_len=8", "--num_trials=1", "--steps=1",
          "--eval_every=1", "--max_group_size=1", f"--space={TINY_SPACE}"]
  plain = run_script(*args, cwd=tmp_path)
  hoisted = run_script(*args, "--hoist_input", cwd=tmp_path)
  assert plain.returncode == 0 and hoisted.returncode == 0, hoisted.stderr
  assert len(os.listdir(tmp_path / "runs")) == 2


def test_a_sweep_stored_before_schedulers_continues(tmp_path):
  """A workdir written before schedulers and learning rate schedules
  existed (no scheduler setting, no decisions table, no sampler options,
  trials and groups without the schedule parameters) continues as a sweep
  without them."""
  task = rs.Adding(seq_len=6, num_val=8)
  configs = [{"hidden_size": 4, "batch_size": 2, "learning_rate": lr}
             for lr in (1e-3, 2e-3)]
  first = rs.run_trials(task, configs, steps=4, eval_every=2,
                        workdir=str(tmp_path))
  with sqlite3.connect(tmp_path / "results.db") as conn:
    conn.execute("DELETE FROM sweep WHERE key IN ('scheduler', "
                 "'sampler_options')")
    conn.execute("DROP TABLE decisions")
    # ... and before the fused recurrence and trial chunks (engine
    # options without them).
    engine_options, = conn.execute(
        "SELECT value FROM sweep WHERE key = 'engine'").fetchone()
    engine_options = json.loads(engine_options)
    assert engine_options.pop("recurrence") == "xla"
    assert engine_options.pop("trial_chunk") == "auto"
    conn.execute("UPDATE sweep SET value = ? WHERE key = 'engine'",
                 (json.dumps(engine_options),))
    new = ("lr_schedule", "warmup_steps_fraction", "final_lr_fraction",
           "decay_rate")
    for table, key, column in (("trials", "trial_id", "params"),
                               ("groups", "group_id", "static")):
      for row_id, text in conn.execute(
          f"SELECT {key}, {column} FROM {table}").fetchall():
        old = {k: v for k, v in json.loads(text).items() if k not in new}
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                     (json.dumps(old), row_id))
    # ... and was interrupted before its group was recorded.
    conn.execute("UPDATE groups SET status = 'pending'")
    conn.execute("UPDATE trials SET status = 'pending'")
  again = rs.run_trials(task, configs, steps=4, eval_every=2,
                        workdir=str(tmp_path))
  assert [r.curves for r in again.trials] == [r.curves for r in first.trials]
  # ... as a sweep without one: another scheduler is another sweep.
  with pytest.raises(ValueError, match=r"other settings: scheduler\."):
    rs.run_trials(task, configs, steps=4, eval_every=2, scheduler="asha",
                  workdir=str(tmp_path))
