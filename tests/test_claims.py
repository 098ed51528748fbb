"""The claim experiments in quick mode: each writes its tables (expected
columns and rows) and non-empty figures, and their pure pieces compute
what they say."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnsweep as rs

from rnnsweep.claims import (dropout, gated_cells, importance, learning_rate,
                             random_vs_grid, truncation_batch)
from rnnsweep.tasks.lm import python_docs_text
from conftest import ROOT, subprocess_env


def read_csv(path):
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def test_grid_configs_are_cell_centres():
  space = random_vs_grid.search_space(quick=True)
  configs = random_vs_grid.grid_configs(space, 3)
  lrs = sorted({c["learning_rate"] for c in configs})
  drops = sorted({c["output_dropout"] for c in configs})
  assert len(configs) == 9 and len(lrs) == 3 and len(drops) == 3
  # Centres of three equal cells: 1/6, 1/2, 5/6 of each axis (log for lr).
  for got, u in zip(lrs, (1 / 6, 1 / 2, 5 / 6)):
    assert math.log10(got) == pytest.approx(-4 + 3 * u)
  for got, u in zip(drops, (1 / 6, 1 / 2, 5 / 6)):
    assert got == pytest.approx(0.3 * u)
  shifted = random_vs_grid.grid_configs(space, 3, (0.0, 0.25))
  assert math.log10(min(c["learning_rate"] for c in shifted)) == (
      pytest.approx(-4.0))
  assert sorted({c["output_dropout"] for c in shifted}) == pytest.approx(
      [0.3 * 0.25 / 3, 0.3 * 1.25 / 3, 0.3 * 2.25 / 3])
  with pytest.raises(ValueError, match="squares"):
    random_vs_grid.run("unused", quick=True, budgets=[8])


def test_random_vs_grid_quick(tmp_path):
  rows = random_vs_grid.run(str(tmp_path), quick=True, max_group_size=32)
  columns, table = read_csv(tmp_path / "random_vs_grid.csv")
  assert tuple(columns) == random_vs_grid.COLUMNS
  # 2 seeds x 4 methods x budgets (4, 9).
  assert len(table) == len(rows) == 2 * 4 * 2
  for r in table:
    assert float(r["best_val"]) > 0
    expected = (math.isqrt(int(r["budget"])) if r["method"].startswith("grid")
                else int(r["budget"]))
    assert int(r["distinct_learning_rates"]) == expected
  # Random search with budget 4 is the first 4 of its 9: never better.
  by = {(r["seed"], r["method"], r["budget"]): float(r["best_val"])
        for r in table}
  for seed in ("0", "1"):
    for method in ("random", "quasirandom"):
      assert by[(seed, method, "9")] <= by[(seed, method, "4")]
  columns, trials = read_csv(tmp_path / "trials.csv")
  assert tuple(columns) == random_vs_grid.TRIAL_COLUMNS
  assert len(trials) == 2 * (9 + 9 + 9 + 9)
  for name in ("best_vs_budget.png", "grid_vs_random.png"):
    assert (tmp_path / name).stat().st_size > 10_000


def test_stable_ranges_from_a_planted_table():
  rows = []
  for lr, vals in ((1e-5, (3.0, 3.0)), (1e-4, (2.3, 2.4)),
                   (1e-3, (2.0, 2.05)), (1e-2, (1.95, 2.0)),
                   (3e-2, (2.9, 3.5)),  # finite, but worse than untrained
                   (1e-1, (2.5, None)), (1.0, (None, None))):
    for seed, v in enumerate(vals):
      rows.append({"optimizer": "adam", "learning_rate": lr, "seed": seed,
                   "status": "diverged" if v is None else "completed",
                   "final_val": v})
  r = learning_rate.stable_ranges(rows, "adam")
  assert r["best_learning_rate"] == 1e-2
  assert (r["stable_lo"], r["stable_hi"]) == (1e-5, 1e-2)
  assert (r["useful_lo"], r["useful_hi"]) == (1e-3, 1e-2)  # within 5%
  assert r["unstable_from"] == 3e-2
  assert r["nonfinite_from"] == 1e-1


def run_script(name, *args):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", name), *args],
      capture_output=True, text=True, env=subprocess_env(), timeout=600,
      check=False)


def test_learning_rate_script_quick(tmp_path):
  out = run_script("learning_rate.py", f"--workdir={tmp_path}", "--quick",
                   "--max_group_size=8")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "adam" in out.stdout and "sgd" in out.stdout
  columns, table = read_csv(tmp_path / "learning_rate.csv")
  assert tuple(columns) == learning_rate.COLUMNS
  assert len(table) == 2 * 5  # optimizers x rates, one seed
  assert {r["optimizer"] for r in table} == {"adam", "sgd"}
  columns, ranges = read_csv(tmp_path / "ranges.csv")
  assert tuple(columns) == learning_rate.RANGE_COLUMNS and len(ranges) == 2
  assert (tmp_path / "learning_rate.png").stat().st_size > 10_000
  bad = run_script("random_vs_grid.py", f"--workdir={tmp_path / 'x'}",
                   "--budgets=5")
  assert bad.returncode == 2 and "squares" in bad.stderr
  assert "Traceback" not in bad.stderr
  bad = run_script("gated_cells.py", f"--workdir={tmp_path / 'y'}",
                   "--lags=10,abc")
  assert bad.returncode == 2 and "--lags must be integers" in bad.stderr
  assert not (tmp_path / "y").exists()


def test_eta_squared_finds_the_parameter_that_matters():
  rng = np.random.default_rng(0)
  x1, x2 = rng.uniform(size=200), rng.uniform(size=200)
  cells = rng.choice(["lstm", "gru"], size=200).tolist()
  y = 3.0 * x1 + 0.01 * rng.normal(size=200)
  # Linear in a uniform x: 4 equal-count bins keep all but the within-bin
  # variance, 1 - 1/4**2 = 0.9375 of it.
  assert importance.eta_squared(x1.tolist(), y) == pytest.approx(0.9375,
                                                                 abs=0.02)
  assert importance.eta_squared(x2.tolist(), y) < 0.05
  assert importance.eta_squared(cells, y) < 0.05
  by_cell = [3.0 if c == "gru" else 1.0 for c in cells]
  assert importance.eta_squared(cells, by_cell) == pytest.approx(1.0)
  assert importance.eta_squared(x1.tolist(), [5.0] * 200) == 0.0


def test_importance_quick(tmp_path):
  pytest.importorskip("optuna", reason="optuna is not installed")
  # Quick mode on one of its two tasks (the other is the same code).
  rows = importance.run(str(tmp_path), quick=True, task_names=["lm"],
                        max_group_size=16)
  columns, table = read_csv(tmp_path / "importance.csv")
  assert tuple(columns) == importance.COLUMNS
  tuned = {"cell", "learning_rate", "output_dropout", "recurrent_dropout",
           "grad_clip", "beta1", "weight_decay"}
  for task in ("lm",):
    mine = [r for r in table if r["task"] == task]
    assert {r["parameter"] for r in mine} == tuned
    fanova = [float(r["fanova"]) for r in mine]
    assert sum(fanova) == pytest.approx(1.0, abs=1e-6)  # Optuna normalises
    assert all(0.0 <= float(r["eta_squared"]) <= 1.0 for r in mine)
  assert len(rows) == len(table) == 7
  with pytest.raises(ValueError, match="tasks must be among"):
    importance.run(str(tmp_path / "x"), quick=True, task_names=["nope"])
  assert (tmp_path / "importance.png").stat().st_size > 10_000


def test_gated_cells_quick(tmp_path):
  # Quick mode at one lag, on one of its two tasks (each task, lag and cell
  # is its own program; the other task is the same code).
  rows = gated_cells.run(str(tmp_path), quick=True, lags=[5],
                         max_group_size=16, task_names=["copy"])
  columns, table = read_csv(tmp_path / "gated_cells.csv")
  assert tuple(columns) == gated_cells.COLUMNS
  # 1 task x 1 lag x 3 cells, 3 trials each.
  assert len(table) == len(rows) == 3
  assert {(r["task"], r["lag"], r["cell"]) for r in table} == {
      ("copy", "5", c) for c in gated_cells.CELLS}
  for r in table:
    assert r["trials"] == "3"
    assert float(r["success_rate"]) == pytest.approx(int(r["succeeded"]) / 3)
  assert (tmp_path / "gated_cells.png").stat().st_size > 10_000
  with pytest.raises(ValueError, match="tasks must be among"):
    gated_cells.run(str(tmp_path / "x"), quick=True, task_names=["nope"])
  assert not (tmp_path / "x").exists()


def test_truncation_batch_quick(tmp_path):
  rows = truncation_batch.run(str(tmp_path), quick=True)
  columns, table = read_csv(tmp_path / "truncation_batch.csv")
  assert tuple(columns) == truncation_batch.COLUMNS
  assert [(r["axis"], r["truncation"], r["batch_size"]) for r in table] == [
      ("truncation", "4", "4"), ("truncation", "8", "4"),
      ("batch_size", "8", "2"), ("batch_size", "8", "4")]
  for r in rows:
    assert r["updates_per_s"] > 0 and r["steps"] >= 4
    assert r["chars_per_s_per_trial"] == pytest.approx(
        r["updates_per_s"] * r["truncation"] * r["batch_size"])
    assert r["best_val"] is not None
  assert (tmp_path / "truncation_batch.png").stat().st_size > 10_000


def test_train_probe_task_tests_on_the_training_text():
  text = python_docs_text()[:3000]
  task = dropout.TrainProbeLM(seq_len=10, text=text)
  plain = rs.CharLM(seq_len=10, text=text)
  data, ref = task.data(), plain.data()
  # Validation is the plain task's; "test" is the training text's start,
  # as many sequences as validation, next characters as targets.
  for a, b in zip(data.val, ref.val):
    np.testing.assert_array_equal(a, b)
  n = int(np.sum(np.asarray(ref.val.weights)))
  assert int(np.sum(np.asarray(data.test.weights))) == n
  keep = np.asarray(data.test.weights).reshape(-1, 10)[:, 0] > 0
  seqs = np.asarray(data.test.inputs).reshape(-1, 10)[keep]
  targets = np.asarray(data.test.targets).reshape(-1, 10)[keep]
  chars = sorted(set(text))
  decode = lambda ids: "".join(chars[i] for i in ids.reshape(-1))
  assert decode(seqs) == text[:n]
  assert decode(targets) == text[1:n + 1]
  assert task.cache_key() != plain.cache_key()


def test_dropout_configurations_and_summary():
  configs = dropout.configurations([0.0, 0.2, 0.4])
  assert configs[0] == {"kind": "none", "mode": "variational", "rate": 0.0}
  assert len(configs) == 1 + 3 * 2 + 2
  assert dropout.params_of({"kind": "recurrent", "mode": "naive",
                            "rate": 0.4}) == {
      "recurrent_dropout_mode": "naive", "recurrent_dropout": 0.4}
  assert dropout.params_of(configs[0]) == {
      "recurrent_dropout_mode": "variational"}
  rows = [{"kind": "input", "mode": "variational", "rate": 0.2, "seed": s,
           "best_val": v, "train_probe": v - 1.0, "gap": 1.0,
           "final_val": v + 0.5, "rise_after_best": 0.5}
          for s, v in enumerate((2.0, 3.0, 10.0))]
  rows.append(dict(rows[0], seed=3, best_val=None, train_probe=None,
                   gap=None, final_val=None,
                   rise_after_best=None))  # diverged
  (summary,) = dropout.summarise(rows)
  assert summary["seeds"] == 4 and summary["best_val"] == 3.0
  assert summary["train_probe"] == 2.0 and summary["final_val"] == 3.5


def test_dropout_quick(tmp_path):
  summary = dropout.run(str(tmp_path), quick=True, max_group_size=8)
  columns, table = read_csv(tmp_path / "dropout.csv")
  assert tuple(columns) == dropout.COLUMNS
  assert [(r["kind"], r["mode"], r["rate"]) for r in table] == [
      ("none", "variational", "0.0"), ("input", "variational", "0.5"),
      ("recurrent", "variational", "0.5"), ("output", "variational", "0.5"),
      ("recurrent", "naive", "0.5")]
  for r in table:
    best, probe, final = (float(r[c]) for c in ("best_val", "train_probe",
                                                "final_val"))
    assert float(r["gap"]) == pytest.approx(best - probe)
    assert float(r["rise_after_best"]) == pytest.approx(final - best)
    assert final >= best
  # Paired: every configuration of a repetition shares one trial seed, and
  # each row is its own trial's (the dropout each set changes the numbers).
  stored = sorted(rs.Store(str(tmp_path / "seed0")).results(),
                  key=lambda r: r.trial_id)
  assert len({r.seed for r in stored}) == 1
  for r, t in zip(table, stored):
    assert dropout.params_of({**r, "rate": float(r["rate"])}).items() <= (
        t.params.items())
    assert float(r["best_val"]) == pytest.approx(t.best_value)
  assert len({r["best_val"] for r in table}) == len(table)
  columns, rows = read_csv(tmp_path / "dropout_summary.csv")
  assert tuple(columns) == dropout.SUMMARY_COLUMNS and len(rows) == 5
  assert len(summary) == 5
  for name in ("dropout.png", "naive_vs_variational.png"):
    assert (tmp_path / name).stat().st_size > 10_000
