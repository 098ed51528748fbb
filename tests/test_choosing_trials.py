"""Choosing trials: quasi-random, trials files, one factor at a time, the
seed grid, Optuna in batches, learning rate schedules, and the report's
diagnosis of curves."""

import csv
import json
import math
import shlex

import jax
import numpy as np
import pytest
from scipy.stats import qmc

import rnnsweep as rs
from rnnsweep import batch_search
from rnnsweep import diagnosis
from rnnsweep import engine
from rnnsweep import samplers
from rnnsweep.store import TrialResult

# ---------------------------------------------------------------------------
# Quasi-random search
# ---------------------------------------------------------------------------

QSPACE = rs.Space({"learning_rate": rs.LogUniform(1e-5, 1e-1),
                   "output_dropout": rs.Uniform(0.0, 0.5),
                   "cell": rs.Choice(["simple", "lstm", "gru", "lstm"]),
                   "num_layers": rs.IntUniform(1, 4),
                   "hidden_size": 32})


def test_quasirandom_is_reproducible_in_bounds_and_extends():
  a = rs.quasirandom(QSPACE, 64, seed=3)
  assert [t.params for t in a] == [t.params
                                   for t in rs.quasirandom(QSPACE, 64, seed=3)]
  assert [t.params for t in a] != [t.params
                                   for t in rs.quasirandom(QSPACE, 64, seed=4)]
  # Trial i depends on (seed, i) only: more trials extend, never reshuffle.
  assert [t.params for t in rs.quasirandom(QSPACE, 10, seed=3)] == [
      t.params for t in a[:10]]
  for t in a:
    p = t.params
    assert 1e-5 <= p["learning_rate"] < 1e-1
    assert 0.0 <= p["output_dropout"] < 0.5
    assert p["num_layers"] in (1, 2, 3, 4) and isinstance(p["num_layers"], int)
    assert p["hidden_size"] == 32
    assert t.seed == samplers.derive_seed(3, t.trial_id)


def test_quasirandom_spreads_log_integer_and_choice_parameters_evenly():
  """Sobol's first 2^m points put exactly 2^(m-k) points in each dyadic
  slice of every axis: 64 points give exactly 16 per quarter. So each
  decade pair of the log range, each integer and each choice slot gets
  exactly 16 (a linear mapping of the log axis would put 48 in the top
  quarter)."""
  trials = rs.quasirandom(QSPACE, 64, seed=11)
  logs = np.array([math.log10(t.params["learning_rate"]) for t in trials])
  quarters = np.floor((logs + 5) / 1.0).astype(int)  # 4 decades
  assert np.bincount(quarters, minlength=4).tolist() == [16] * 4
  layers = [t.params["num_layers"] for t in trials]
  assert [layers.count(k) for k in (1, 2, 3, 4)] == [16] * 4
  cells = [t.params["cell"] for t in trials]
  # "lstm" is listed twice: it owns two of the four slots.
  assert (cells.count("simple"), cells.count("lstm"), cells.count("gru")) == (
      16, 32, 16)


@pytest.mark.parametrize("dims", [2, 4])
def test_quasirandom_covers_better_than_random(dims):
  """Star discrepancy (scipy's L2-star) of 64 points mapped through the
  sampler, averaged over seeds: quasi-random below random."""
  names = ["input_dropout", "output_dropout", "recurrent_dropout",
           "momentum"][:dims]
  space = rs.Space({n: rs.Uniform(0.0, 0.8) for n in names})

  def disc(trials):
    pts = np.array([[t.params[n] / 0.8 for n in names] for t in trials])
    return qmc.discrepancy(pts, method="L2-star")
  seeds = range(8)
  quasi = np.mean([disc(rs.quasirandom(space, 64, seed=s)) for s in seeds])
  rand = np.mean([disc(rs.random(space, 64, seed=s)) for s in seeds])
  assert quasi < 0.5 * rand, (quasi, rand)


# ---------------------------------------------------------------------------
# Trials files, one factor at a time, the seed grid
# ---------------------------------------------------------------------------

CONFIGS = [
    {"learning_rate": 0.001, "hidden_size": 128, "cell": "lstm",
     "output_dropout": 0.25},
    {"learning_rate": 3.0e-05, "hidden_size": 50, "cell": "gru",
     "output_dropout": 0.0},
    {"learning_rate": 0.1, "hidden_size": 7, "cell": "simple",
     "output_dropout": 0.123456789012345},
]


def _types(configs):
  return [{k: type(v).__name__ for k, v in c.items()} for c in configs]


def test_trials_file_round_trips_json_and_csv(tmp_path):
  (tmp_path / "t.json").write_text(json.dumps(CONFIGS))
  with open(tmp_path / "t.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(CONFIGS[0]))
    w.writeheader()
    w.writerows(CONFIGS)
  for name in ("t.json", "t.csv"):
    loaded = rs.load_trials(str(tmp_path / name))
    assert loaded == CONFIGS, name  # values and order
    assert _types(loaded) == _types(CONFIGS), name  # 128 stays an int
  # A CSV may leave a cell empty: that parameter keeps its default.
  (tmp_path / "gaps.csv").write_text("learning_rate,cell\n,gru\n0.5,\n")
  assert rs.load_trials(str(tmp_path / "gaps.csv")) == [
      {"cell": "gru"}, {"learning_rate": 0.5}]


@pytest.mark.parametrize("text, words", [
    ('{"learning_rate": 0.1}', ["one object"]),
    ('[{"learning_rate": -1}]', ["trial 0", "'learning_rate'", "> 0"]),
    ("[]", ["no trials"]),
    ("cell\n", ["no trials"]),
    ("cell,cell\nlstm,gru\n", ["header", "once"]),
    ("[1, 2]", ["list of objects"]),
])
def test_bad_trials_files(tmp_path, text, words):
  path = tmp_path / "bad.txt"
  path.write_text(text)
  with pytest.raises(ValueError) as e:
    rs.load_trials(str(path))
  assert "bad.txt" in str(e.value) and "\n" not in str(e.value)
  for w in words:
    assert w in str(e.value)


def test_around_is_exactly_one_factor_at_a_time():
  space = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-2),
                    "output_dropout": rs.Uniform(0.0, 0.4),
                    "cell": rs.Choice(["lstm", "gru"]),
                    "hidden_size": 64})
  base = {"learning_rate": 1e-3, "output_dropout": 0.1, "cell": "lstm"}
  configs = samplers.around_configs(space, base, 3)
  start = {**base, "hidden_size": 64}
  assert configs[0] == start
  expected = {("learning_rate", 1e-4), ("learning_rate", 1e-2),
              ("output_dropout", 0.0), ("output_dropout", 0.2),
              ("output_dropout", 0.4), ("cell", "gru")}
  got = []
  for c in configs[1:]:
    changed = [k for k in c if c[k] != start[k]]
    assert len(changed) == 1, c  # one factor, the rest at the base
    got.append((changed[0], c[changed[0]]))
  assert len(got) == len(expected)  # nothing twice (1e-3 is the base)
  for (name, value), (ename, evalue) in zip(
      sorted(got, key=str), sorted(expected, key=str)):
    assert name == ename and (value == evalue or math.isclose(value, evalue))
  # A tuned parameter the base leaves out sits mid-range (log middle).
  centred = samplers.around_configs(space, {"cell": "gru"}, 3)[0]
  assert math.isclose(centred["learning_rate"], 1e-3)
  assert math.isclose(centred["output_dropout"], 0.2)
  with pytest.raises(ValueError, match="points_per_axis"):
    samplers.around_configs(space, base, 1)


def test_around_runs_every_configuration_with_each_seed_of_a_choice():
  space = rs.Space({"learning_rate": rs.Choice([0.01, 0.1]),
                    "cell": rs.Choice(["lstm", "gru"]),
                    "seed": rs.Choice([7, 8, 9])})
  configs = samplers.around_configs(space, {"learning_rate": 0.01,
                                            "cell": "lstm"}, 3)
  # The base, then one factor at a time; each with seeds 7, 8 and 9.
  assert [(c["learning_rate"], c["cell"], c["seed"]) for c in configs] == [
      (0.01, "lstm", 7), (0.01, "lstm", 8), (0.01, "lstm", 9),
      (0.1, "lstm", 7), (0.1, "lstm", 8), (0.1, "lstm", 9),
      (0.01, "gru", 7), (0.01, "gru", 8), (0.01, "gru", 9)]
  # A base that names its seed varies the seed as any other axis.
  pinned = samplers.around_configs(space, {"learning_rate": 0.01,
                                           "cell": "lstm", "seed": 7}, 3)
  assert [(c["learning_rate"], c["cell"], c["seed"]) for c in pinned] == [
      (0.01, "lstm", 7), (0.1, "lstm", 7), (0.01, "gru", 7),
      (0.01, "lstm", 8), (0.01, "lstm", 9)]


def test_seed_grid_preset_is_twelve_models_in_four_programs(tiny_adding):
  settings, trials, _ = rs.sweep_settings(
      tiny_adding, tiny_adding.preset("seed_grid"), sampler="grid",
      max_group_size=16)
  assert len(trials) == 12 and settings.num_trials == 12
  combos = {(t.params["learning_rate"], t.params["batch_size"],
             t.params["hidden_size"]) for t in trials}
  assert combos == {(lr, b, h) for lr in (0.01, 0.001, 0.0001)
                    for b in (32, 64) for h in (50, 100)}
  groups = rs.plan_groups(trials, 16)
  assert len(groups) == 4 and all(len(g.trials) == 3 for g in groups)


# ---------------------------------------------------------------------------
# Learning rate schedules
# ---------------------------------------------------------------------------


def reference_lr(schedule, t, *, lr, horizon, warmup=0.0, final=0.0,
                 decay=0.1):
  """The schedules as written in the docs, in plain Python floats."""
  if schedule == "constant":
    return lr
  if schedule in ("cosine", "warmup_cosine"):
    w = warmup * horizon if schedule == "warmup_cosine" else 0.0
    if t < w:
      return lr * min(1.0, (t + 1) / max(w, 1.0))
    p = min(1.0, max(0.0, (t - w) / max(horizon - w, 1.0)))
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p)))
  if schedule == "exponential":
    return lr * decay ** (t / horizon)
  if schedule == "step":
    return lr * decay ** ((t >= horizon / 2) + (t >= 3 * horizon / 4))
  raise AssertionError(schedule)


@pytest.mark.parametrize("schedule", rs.space.LR_SCHEDULES)
def test_schedule_values_equal_a_float_reference(schedule):
  values = dict(lr=0.02, horizon=200, warmup=0.15, final=0.05, decay=0.3)
  hp = {"learning_rate": np.float32(values["lr"]),
        engine.HORIZON: np.float32(values["horizon"]),
        "warmup_steps_fraction": np.float32(values["warmup"]),
        "final_lr_fraction": np.float32(values["final"]),
        "decay_rate": np.float32(values["decay"])}
  for t in (0, 1, 14, 29, 30, 31, 99, 100, 149, 150, 151, 199, 250):
    got = float(engine.learning_rate(schedule, hp, np.int32(t)))
    want = reference_lr(schedule, t, **values)
    assert got == pytest.approx(want, rel=2e-6, abs=1e-12), (schedule, t)


@pytest.mark.parametrize("schedule", ["warmup_cosine", "step"])
def test_schedule_scales_the_update_it_is_given(tiny_adding, schedule):
  """Plain SGD: the update at step t under a schedule is the constant
  schedule's update times lr_t / lr (same state, same gradients)."""
  base = {"hidden_size": 4, "batch_size": 2, "optimizer": "sgd",
          "learning_rate": 0.05, "grad_clip": 0.0,
          "warmup_steps_fraction": 0.4, "decay_rate": 0.2}
  data = tiny_adding.data()
  key = engine.data_key(0)
  deltas = {}
  for name in ("constant", schedule):
    params = rs.space.resolve_params({**tiny_adding.base_params(), **base,
                                      "lr_schedule": name, "seed": 5})
    one = engine.OneTrial(rs.StaticConfig.from_params(params), tiny_adding)
    hp = engine.trial_hparams(params, horizon=10)
    state = one.init(np.int32(5), hp)
    update = jax.jit(one.update)
    deltas[name] = []
    for t in range(10):
      new, _, _ = update(state.replace(step=np.int32(t)), data.train, key)
      deltas[name].append(np.concatenate([
          np.ravel(a - b) for a, b in zip(
              jax_leaves(new.params), jax_leaves(state.params))]))
  for t in range(10):
    ratio = reference_lr(schedule, t, lr=0.05, horizon=10, warmup=0.4,
                         decay=0.2) / 0.05
    # atol: new - old params rounds at float32 eps of the params (~1).
    np.testing.assert_allclose(deltas[schedule][t],
                               ratio * deltas["constant"][t], rtol=1e-4,
                               atol=2e-7)


def jax_leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_scheduled_trials_in_one_group_equal_each_alone(tiny_adding):
  configs = [{"hidden_size": 4, "batch_size": 2, "lr_schedule": "cosine",
              "learning_rate": 0.02, "final_lr_fraction": f}
             for f in (0.0, 0.5)] + [
                 {"hidden_size": 4, "batch_size": 2, "lr_schedule": "cosine",
                  "learning_rate": 0.005, "final_lr_fraction": 0.2}]
  together = rs.run_trials(tiny_adding, configs, steps=6, eval_every=3,
                           max_group_size=3)
  alone = rs.run_trials(tiny_adding, configs, steps=6, eval_every=3,
                        max_group_size=1)
  for a, b in zip(together.trials, alone.trials):
    np.testing.assert_allclose(a.curves["val/mse"], b.curves["val/mse"],
                               rtol=1e-5)
  # The schedule values matter: the two final fractions trained apart.
  assert together.trials[0].curves["val/mse"] != together.trials[1].curves[
      "val/mse"]


# ---------------------------------------------------------------------------
# Optuna in batches
# ---------------------------------------------------------------------------

OSPACE = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-1),
                   "cell": rs.Choice(["lstm", "gru"]),
                   "num_layers": rs.IntUniform(1, 3), "hidden_size": 8})


def fake_result(tid, params, status, value):
  curve = [value + 1.0, value] if value is not None else [math.nan] * 2
  return TrialResult(
      trial_id=tid, params=params, seed=0, status=status, group_id=0,
      metric="mse", best_value=value if status != "diverged" else None,
      best_step=2, final_metrics={}, curves={"step": [1, 2],
                                             "train_loss": [1.0, 0.5],
                                             "val/mse": curve},
      diverged_step=1 if status == "diverged" else None, wall_time_s=0.0)


def fake_train(log):
  """Trains nothing: trial i's value is a function of its params; every
  fifth trial is pruned and every seventh diverges; trial ids already
  trained are not trained again."""
  def train(configs, round_index):
    results = []
    for tid, c in enumerate(configs):
      status = ("diverged" if tid % 7 == 6 else "pruned" if tid % 5 == 4
                else "completed")
      value = abs(math.log10(c["learning_rate"]) + 2.5) + c["num_layers"]
      results.append(fake_result(tid, c, status, value))
      log.append((round_index, tid))
    return None, results, {}, "val/mse"
  return train


def open_study(storage, seed=0, batch=5):
  return batch_search.BatchStudy.open(OSPACE, "optuna:tpe", seed=seed,
                                      mode="min", storage=storage,
                                      batch=batch)


def test_batch_study_tells_every_ask_once_and_resumes(tmp_path):
  optuna = pytest.importorskip("optuna", reason="optuna is not installed")
  storage = f"sqlite:///{tmp_path}/a.db"
  study = open_study(storage)
  told = []
  real_tell = study.study.tell
  study.study.tell = lambda *a, **k: (told.append(a[0]), real_tell(*a, **k))
  log = []
  batch_search.run_rounds(study, rounds=3, first_round=0,
                          train=fake_train(log), log=lambda _: None)
  trials = optuna.load_study(study_name="rnnsweep",
                             storage=storage).get_trials()
  assert [t.number for t in trials] == list(range(15))
  assert sorted(told) == list(range(15))  # each exactly once
  state = optuna.trial.TrialState
  assert [t.state for t in trials] == [
      state.FAIL if i % 7 == 6 else state.PRUNED if i % 5 == 4
      else state.COMPLETE for i in range(15)]
  assert all(t.intermediate_values for t in trials if t.state != state.FAIL)
  assert trials[0].value == pytest.approx(
      abs(math.log10(trials[0].params["learning_rate"]) + 2.5)
      + trials[0].params["num_layers"])

  # Interrupted after round 2 asked its trials, before it trained them:
  other = f"sqlite:///{tmp_path}/b.db"
  first = open_study(other)
  batch_search.run_rounds(first, rounds=1, first_round=0,
                          train=fake_train([]), log=lambda _: None)
  first.configs(10, 1)  # asked, never trained or told
  resumed = open_study(other)
  batch_search.run_rounds(resumed, rounds=3, first_round=1,
                          train=fake_train([]), log=lambda _: None)
  again = optuna.load_study(study_name="rnnsweep", storage=other).get_trials()
  assert len(again) == 15  # round 2's asks were not asked again
  # ... and a round's asks depend on the seed and the told history only:
  # the resumed study asked what the uninterrupted one did.
  assert [t.params for t in again] == [t.params for t in trials]
  assert [t.state for t in again] == [t.state for t in trials]


def test_batch_study_tells_each_configuration_the_mean_of_its_seeds(
    tmp_path):
  optuna = pytest.importorskip("optuna", reason="optuna is not installed")
  study = open_study(f"sqlite:///{tmp_path}/s.db", batch=4)
  configs = study.configs(4, 0)
  # Two runs per asked configuration: trials 2n and 2n + 1.
  runs = [fake_result(0, configs[0], "completed", 1.0),
          fake_result(1, configs[0], "completed", 3.0),
          fake_result(2, configs[1], "completed", 1.0),
          fake_result(3, configs[1], "pruned", 2.0),
          fake_result(4, configs[2], "diverged", None),
          fake_result(5, configs[2], "completed", 1.0),
          fake_result(6, configs[3], "completed", 1.0)]  # 7 still to run
  runs[1].curves["val/mse"][0] = math.nan  # no mean at step 1
  assert study.tell(runs, {}, "val/mse", seeds=2) == 3
  state = optuna.trial.TrialState
  trials = study.study.get_trials()
  assert [t.state for t in trials] == [state.COMPLETE, state.PRUNED,
                                       state.FAIL, state.RUNNING]
  assert trials[0].value == 2.0  # (1 + 3) / 2
  # Curves 2, 1 and nan, 3: a mean at step 2 only.
  assert trials[0].intermediate_values == {2: 2.0}
  assert trials[1].intermediate_values == {1: 2.5, 2: 1.5}
  # Its second run's group failed: the configuration fails, told once.
  assert study.tell(runs, {7: "boom"}, "val/mse", seeds=2) == 1
  assert study.study.get_trials()[3].state == state.FAIL
  assert study.tell(runs, {7: "boom"}, "val/mse", seeds=2) == 0


@pytest.mark.parametrize("name", ["optuna:tpe", "optuna:cmaes", "optuna:qmc",
                                  "optuna:random", "optuna:NSGAIISampler"])
def test_each_optuna_sampler_runs_in_batches(tmp_path, name):
  optuna = pytest.importorskip("optuna", reason="optuna is not installed")
  study = batch_search.BatchStudy.open(
      OSPACE, name, seed=1, mode="min", storage=f"sqlite:///{tmp_path}/s.db",
      batch=4)
  batch_search.run_rounds(study, rounds=4, first_round=0,
                          train=fake_train([]), log=lambda _: None)
  trials = study.study.get_trials()
  assert len(trials) == 16
  assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
  for t in trials:
    assert 1e-4 <= t.params["learning_rate"] <= 1e-1
    assert t.params["cell"] in ("lstm", "gru")
    assert t.params["num_layers"] in (1, 2, 3)


def test_batch_study_refuses_another_space_or_direction(tmp_path):
  pytest.importorskip("optuna", reason="optuna is not installed")
  storage = f"sqlite:///{tmp_path}/a.db"
  batch_search.run_rounds(open_study(storage, batch=2), rounds=1,
                          first_round=0, train=fake_train([]),
                          log=lambda _: None)
  with pytest.raises(ValueError, match="tunes"):
    batch_search.BatchStudy.open(OSPACE.updated({"cell": "lstm"}),
                                 "optuna:tpe", seed=0, mode="min",
                                 storage=storage, batch=2)
  with pytest.raises(ValueError, match="maximize"):
    batch_search.BatchStudy.open(OSPACE, "optuna:tpe", seed=0, mode="max",
                                 storage=storage, batch=2)


def test_optuna_sweep_end_to_end_and_rerun(tmp_path, tiny_adding):
  optuna = pytest.importorskip("optuna", reason="optuna is not installed")
  space = rs.Space({"learning_rate": rs.LogUniform(1e-3, 1e-1),
                    "hidden_size": 4, "batch_size": 2})
  kwargs = dict(sampler="optuna:tpe", steps=4, eval_every=2,
                max_group_size=4, workdir=str(tmp_path),
                sampler_options={"rounds": 2, "batch_size_trials": 3})
  first = rs.sweep(tiny_adding, space, **kwargs)
  study = optuna.load_study(study_name="rnnsweep",
                            storage=f"sqlite:///{tmp_path}/optuna.db")
  assert len(first.trials) == 6 and len(study.trials) == 6
  for t, r in zip(study.trials, first.trials):
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.value == pytest.approx(r.best_value)
    assert t.params["learning_rate"] == r.params["learning_rate"]
  assert rs.Store(str(tmp_path)).settings()["sampler_options"] == {
      "rounds": 2, "batch_size_trials": 3, "storage": None}
  with engine.count_compiles() as compiles:
    again = rs.sweep(tiny_adding, space, **kwargs)
  assert compiles.count == 0  # nothing trained again
  assert [r.curves for r in again.trials] == [r.curves for r in first.trials]
  assert len(optuna.load_study(
      study_name="rnnsweep",
      storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 6
  # Two seeds per asked configuration: the study holds one trial each,
  # told the mean of its two runs (the first on the seed it would have
  # had alone).
  seeded = rs.sweep(tiny_adding, space, **{**kwargs, "seeds": 2,
                                           "workdir": str(tmp_path / "s")})
  study = optuna.load_study(study_name="rnnsweep",
                            storage=f"sqlite:///{tmp_path}/s/optuna.db")
  assert len(seeded.trials) == 12 and len(study.trials) == 6
  planned, _, _ = rs.sweep_settings(tiny_adding, space, seeds=2, **{
      k: v for k, v in kwargs.items() if k != "workdir"})
  assert planned.num_trials == 12  # 2 rounds x 3 configurations x 2 seeds
  for t in study.trials:
    a, b = seeded.trials[2 * t.number:2 * t.number + 2]
    assert a.params["learning_rate"] == b.params["learning_rate"] == (
        t.params["learning_rate"])
    assert a.seed == samplers.derive_seed(0, t.number)
    assert b.seed == samplers.replica_seed(a.seed, 1)
    assert t.value == pytest.approx((a.best_value + b.best_value) / 2)
    assert t.intermediate_values == pytest.approx(
        {s: (x + y) / 2 for s, x, y in zip(a.curves["step"],
                                           a.curves["val/mse"],
                                           b.curves["val/mse"])})
  # The first round's asks do not depend on the seeds (nothing told yet).
  assert [t.params for t in study.trials[:3]] == [
      {"learning_rate": r.params["learning_rate"]} for r in first.trials[:3]]
  assert "Configurations trained with several seeds (6)" in (
      rs.report.write_report(str(tmp_path / "s"), plots=False).text)
  with engine.count_compiles() as compiles:  # run again: all there
    rs.sweep(tiny_adding, space, **{**kwargs, "seeds": 2,
                                    "workdir": str(tmp_path / "s")})
  assert compiles.count == 0 and len(optuna.load_study(
      study_name="rnnsweep",
      storage=f"sqlite:///{tmp_path}/s/optuna.db").trials) == 6
  # A workdir holding another sweep: refused before a study is made.
  other = tmp_path / "other"
  rs.sweep(tiny_adding, space, num_trials=2, steps=4, eval_every=2,
           max_group_size=4, workdir=str(other))
  with pytest.raises(ValueError, match="other settings: sampler: stored"):
    rs.sweep(tiny_adding, space, **{**kwargs, "workdir": str(other)})
  assert not (other / "optuna.db").exists()
  # Bad input: one error, no study written.
  fresh = tmp_path / "fresh"
  np.savez(tmp_path / "few.npz", x=np.zeros((30, 4, 2)), y=np.arange(30) % 2,
           num_classes=2)
  few = rs.Classify(data_path=str(tmp_path / "few.npz"))
  with pytest.raises(ValueError, match="fewer than one batch"):
    rs.sweep(few, space.updated({"batch_size": rs.Choice([2, 64])}),
             **{**kwargs, "workdir": str(fresh)})
  assert not fresh.exists()


# ---------------------------------------------------------------------------
# The report's diagnosis, and one factor at a time end to end
# ---------------------------------------------------------------------------


def curve_result(val, train, status="completed", tid=0, **params):
  steps = [10 * (i + 1) for i in range(len(val))]
  p = rs.space.resolve_params({"hidden_size": 64, **params})
  finite = [v for v in val if v is not None and math.isfinite(v)]
  return TrialResult(
      trial_id=tid, params=p, seed=0, status=status, group_id=0,
      metric="mse",
      best_value=min(finite) if finite else None, best_step=None,
      final_metrics={}, curves={"step": steps, "train_loss": train,
                                "val/mse": val},
      diverged_step=20 if status == "diverged" else None, wall_time_s=0.0)


@pytest.mark.parametrize("val, train, status, kind", [
    # Validation worsens while training improves (the end gap is 20%).
    ([1.0, 0.6, 0.5, 0.55, 0.6], [1.2, 0.8, 0.6, 0.55, 0.5], "completed",
     "overfits"),
    # ... the same validation with training worsening too is no overfit.
    ([1.0, 0.6, 0.5, 0.55, 0.6], [1.2, 0.8, 0.5, 0.55, 0.6], "completed",
     "fits"),
    # A wide gap between validation and training loss.
    ([1.0, 0.9, 0.85, 0.84, 0.84], [0.9, 0.6, 0.5, 0.45, 0.4], "completed",
     "overfits"),
    ([1.0, 0.8, 0.6, 0.45, 0.35], [1.1, 0.9, 0.7, 0.5, 0.4], "completed",
     "underfits"),
    ([1.0, 0.5, 0.45, 0.45, 0.449], [1.0, 0.5, 0.45, 0.44, 0.44],
     "completed", "fits"),
    ([1.0, math.nan], [1.0, math.nan], "diverged", "diverged"),
])
def test_diagnosis_reads_planted_curves(val, train, status, kind):
  r = curve_result(val, train, status)
  assert diagnosis.diagnose(r, "min").kind == kind


def test_diagnosis_says_when_the_curves_show_no_clear_trend():
  # Validation 0.5 -> 0.4 over the last third (steps 40-50: 20% better),
  # best at the end, while training loss rose 0.5 -> 0.55: neither underfit
  # nor levelling off.
  d = diagnosis.diagnose(curve_result([1.0, 0.8, 0.6, 0.5, 0.4],
                                      [1.0, 0.7, 0.5, 0.5, 0.55]), "min")
  assert (d.kind, d.reason) == ("fits", (
      "no clear trend: validation mse 20.0% better over steps 40-50 while "
      "training loss rose from 0.5 to 0.55; a longer run would tell"))


ADVICE_SETTINGS = {"task": "adding", "task_config": {"seq_len": 12},
                   "steps": 50, "eval_every": 10, "selection_mode": "min",
                   "space": {"learning_rate": {"log_uniform": [1e-4, 1e-1]},
                             "output_dropout": {"uniform": [0.0, 0.5]},
                             "truncation": 12}}


def command_flags(command):
  """``--name=value`` flags of a ``python experiments/sweep.py --task=...
  --seq_len=...`` command, past those four words."""
  return dict(w[2:].split("=", 1) for w in shlex.split(command)[4:])


def test_next_move_is_a_ready_around_command():
  over = curve_result([1.0, 0.6, 0.5, 0.6, 0.7], [1.0, 0.7, 0.5, 0.3, 0.2],
                      output_dropout=0.1, learning_rate=0.003)
  settings = ADVICE_SETTINGS
  lines = diagnosis.advice_lines([over], [over], settings,
                                 ["learning_rate", "output_dropout"])
  words = shlex.split(lines[-1])
  assert words[:4] == ["python", "experiments/sweep.py", "--task=adding",
                       "--seq_len=12"]
  flags = command_flags(lines[-1])
  assert json.loads(flags["around"]) == {
      "learning_rate": 0.003, "output_dropout": 0.3, "recurrent_dropout": 0.1}
  assert flags["space"] == json.dumps(settings["space"])  # the same axes
  assert rs.load_space(flags["space"]).tuned_names() == [
      "learning_rate", "output_dropout"]
  assert flags["steps"] == "50" and flags["eval_every"] == "10"
  under = curve_result([1.0, 0.8, 0.6, 0.45, 0.35], [1.1, 0.9, 0.7, 0.5, 0.4],
                       hidden_size=32)
  changes, steps, _ = diagnosis.next_move(
      under, diagnosis.diagnose(under, "min"), 50)
  assert changes == {"hidden_size": 64} and steps == 100
  div = curve_result([1.0, math.nan], [1.0, math.nan], "diverged",
                     learning_rate=0.1, grad_clip=0.0)
  changes, _, _ = diagnosis.next_move(div, diagnosis.diagnose(div, "min"), 50)
  assert changes == {"learning_rate": 0.03, "grad_clip": 1.0}


def test_ofat_panel_draws_a_value_run_with_several_seeds_at_their_mean():
  points = [(0.01, 0.5, False), (0.01, 0.7, False), (0.1, 0.2, True),
            (0.1, None, True), (0.3, None, False), (1.0, 0.9, False)]
  means = diagnosis.ofat_means(points)
  assert [(v, b) for v, _, _, b in means] == [
      (0.01, False), (0.1, True), (0.3, False), (1.0, False)]
  # (0.5 + 0.7) / 2; a seed with no number is left out of the mean.
  assert [m for _, m, _, _ in means][:2] == pytest.approx([0.6, 0.2])
  assert math.isnan(means[2][1]) and means[3][1] == 0.9
  assert [len(ys) for _, _, ys, _ in means] == [2, 2, 1, 1]


def test_next_commands_train_like_the_sweep():
  # The engine's recorded options and their defaults as a sweep records
  # them off a GPU, as the commands read them (diagnosis does not import
  # the engine).
  recorded = engine.EngineOptions().resolved("cpu").record()
  assert {k: d for k, (_, d) in diagnosis.ENGINE_FLAGS.items()} == recorded
  plain = dict(ADVICE_SETTINGS, seed=0, engine=recorded)
  assert diagnosis.sweep_flags(plain) == ["--task=adding", "--seq_len=12"]
  tuned = dict(plain, seed=7, engine=engine.EngineOptions(
      compute_dtype="bfloat16", unroll=4, donate=True, trial_chunk=0
  ).resolved("cpu").record())
  assert diagnosis.sweep_flags(tuned) == [
      "--task=adding", "--seq_len=12", "--seed=7", "--precision=bfloat16",
      "--unroll=4", "--donate", "--trial_chunk=0"]
  off = dict(plain, engine={**plain["engine"], "donate": False,
                            "hoist_input": True})
  assert diagnosis.sweep_flags(off)[2:] == ["--hoist_input"]
  fit = curve_result([1.0, 0.5, 0.45, 0.45, 0.449],
                     [1.0, 0.5, 0.45, 0.44, 0.44], learning_rate=0.01)
  line = diagnosis.advice_lines([fit], [fit], tuned, ["learning_rate"])[-1]
  assert shlex.split(line)[2:9] == diagnosis.sweep_flags(tuned)


def test_next_move_widens_a_range_its_best_trial_sat_at_the_edge():
  fit = curve_result([1.0, 0.5, 0.45, 0.45, 0.449],
                     [1.0, 0.5, 0.45, 0.44, 0.44],
                     output_dropout=0.0, learning_rate=0.09)
  settings = ADVICE_SETTINGS
  lines = diagnosis.advice_lines(
      [fit], [fit], settings, ["learning_rate", "output_dropout"],
      edges=[("learning_rate", "high"), ("output_dropout", "low")])
  assert lines[-2] == (
      "  next: vary one factor at a time around the best trial's values; "
      "learning_rate's range widened to [0.0001, 1.0] (the best trial sat "
      "at its high edge):")
  flags = command_flags(lines[-1])
  # Half of 3 decades past 1e-1, capped at a factor of 10; a dropout
  # rate at 0 stays there.
  assert json.loads(flags["space"]) == {
      "learning_rate": {"log_uniform": [1e-4, 1.0]},
      "output_dropout": {"uniform": [0.0, 0.5]}, "truncation": 12}
  # The command's one-factor-at-a-time axis now reaches past the old edge.
  trials = rs.samplers.around(rs.load_space(flags["space"]),
                              json.loads(flags["around"]), 5)
  rates = sorted({t.params["learning_rate"] for t in trials})
  assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
  assert 0.09 in rates  # the base
  # No edge, no change: the sweep's own space.
  plain = diagnosis.advice_lines([fit], [fit], settings,
                                 ["learning_rate", "output_dropout"])
  assert json.loads(command_flags(plain[-1])["space"]) == settings["space"]
  assert "widened" not in plain[-2]
  # Underfit: the move doubles the units, so an edge of hidden_size (read
  # off runs the move says to change) widens nothing; the rate still does.
  under = curve_result([1.0, 0.8, 0.6, 0.45, 0.35], [1.1, 0.9, 0.7, 0.5, 0.4],
                       hidden_size=32, learning_rate=0.09)
  space = {**settings["space"], "hidden_size": [32, 64]}
  lines = diagnosis.advice_lines(
      [under], [under], {**settings, "space": space},
      ["learning_rate", "hidden_size"],
      edges=[("hidden_size", "low"), ("learning_rate", "high")])
  flags = command_flags(lines[-1])
  assert json.loads(flags["space"])["hidden_size"] == [32, 64]
  assert json.loads(flags["space"])["learning_rate"] == {
      "log_uniform": [1e-4, 1.0]}
  assert json.loads(flags["around"])["hidden_size"] == 64
  assert "hidden_size's range" not in lines[-2]


def test_around_sweep_report_draws_ofat_and_advises(tmp_path, tiny_adding):
  space = rs.Space({"learning_rate": rs.LogUniform(1e-3, 1e-1),
                    "output_dropout": rs.Uniform(0.0, 0.4),
                    "hidden_size": 4, "batch_size": 2})
  base = {"learning_rate": 0.01, "output_dropout": 0.1}
  result = rs.sweep(tiny_adding, space, sampler="around", steps=4,
                    eval_every=2, max_group_size=8, workdir=str(tmp_path),
                    sampler_options={"base": base, "points_per_axis": 3})
  assert len(result.trials) == 6  # 0.01 is the log axis's middle point
  settings = rs.Store(str(tmp_path)).settings()
  assert settings["sampler"] == "around"
  assert settings["sampler_options"]["points_per_axis"] == 3
  assert settings["sampler_options"]["base"]["learning_rate"] == 0.01
  panels = diagnosis.ofat_panels(result.trials,
                                 settings["sampler_options"]["base"],
                                 ["learning_rate", "output_dropout"])
  assert [len(p) for p in panels.values()] == [3, 4]  # base in each
  assert [sum(b for _, _, b in p) for p in panels.values()] == [1, 1]
  rep = rs.report.write_report(str(tmp_path))
  assert (tmp_path / "ofat.png").stat().st_size > 5000
  assert "Diagnosis" in rep.text and "--around='" in rep.text
  # Rows of the sweep's own results.csv (trials 1 and 4) run again as a
  # trials file, with two seeds each: the first run has the row's
  # parameters and seed, so in a group of other size it trains to the same
  # numbers; the second, another seed.
  lines = (tmp_path / "results.csv").read_text().splitlines()
  (tmp_path / "two.csv").write_text("\n".join([lines[0], lines[2], lines[5]]))
  configs = rs.load_trials(str(tmp_path / "two.csv"))
  again = rs.run_trials(tiny_adding, configs, steps=4, eval_every=2,
                        max_group_size=8, seeds=2,
                        workdir=str(tmp_path / "again"))
  assert len(again.trials) == 4 and "seed" in again.tuned
  for before, after, other in zip([result.trials[1], result.trials[4]],
                                  again.trials[0::2], again.trials[1::2]):
    assert (after.params, after.seed) == (before.params, before.seed)
    np.testing.assert_allclose(after.curves["val/mse"],
                               before.curves["val/mse"], rtol=1e-5)
    assert after.best_step == before.best_step
    assert other.seed == samplers.replica_seed(before.seed, 1)
    assert {**other.params, "seed": before.seed} == before.params
    assert not np.allclose(other.curves["val/mse"], before.curves["val/mse"])
  means = sorted(
      (r.best_value + o.best_value) / 2
      for r, o in zip(again.trials[0::2], again.trials[1::2]))
  assert [c.mean for c in again.replicated()] == pytest.approx(means)
  rep = rs.report.write_report(str(tmp_path / "again"), plots=False)
  assert "Configurations trained with several seeds (2)" in rep.text
  header = next(l for l in rep.text.splitlines() if l.startswith("rank  trial"))
  assert header.split()[-1] == "seed"
  assert "every configuration ran with several seeds" in rep.text
  assert command_flags(rep.text.splitlines()[-1])["seeds"] == "2"
