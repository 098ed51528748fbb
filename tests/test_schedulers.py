"""Schedulers: ASHA, Hyperband, median stopping and PBT, and the slot
operations under them (a refilled slot, a PBT exploit)."""

import math

import jax
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import schedulers as sch
from conftest import TINY, group_state

# Same static config for every trial: one queued group. Good trials learn;
# hopeless ones (a learning rate of 1e-7) stay where they started, near
# uniform predictions (the LM's untrained values hardly depend on the seed).
GOOD = [dict(TINY, cell="gru", learning_rate=lr) for lr in (1e-2, 3e-2)]
HOPELESS = [dict(TINY, cell="gru", learning_rate=1e-7 * (1 + i / 10))
            for i in range(7)]
# Trial 0 is good and meets two hopeless ones at the first rung; trial 8 is
# good and arrives late, when the first rung already holds many values.
PLANTED = [GOOD[0]] + HOPELESS + [GOOD[1]]
ASHA = rs.SchedulerSettings("asha", min_steps=3, reduction_factor=3)
STEPS, EVAL = 27, 3


@pytest.fixture(scope="module")
def asha_run(tiny_lm, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("asha"))
  traces = engine.trace_counts()
  with engine.count_compiles() as compiles:
    result = rs.run_trials(tiny_lm, PLANTED, steps=STEPS,
                           eval_every=EVAL, max_group_size=3,
                           scheduler=ASHA, workdir=workdir)
  after = engine.trace_counts()
  new_traces = {k: after[k] - traces.get(k, 0) for k in after}
  return result, rs.Store(workdir), new_traces, compiles.count


def test_asha_keeps_the_good_trials_and_prunes_at_rungs(asha_run):
  result, _, _, _ = asha_run
  status = {r.trial_id: r.status for r in result.trials}
  assert len(status) == len(PLANTED)
  assert status[0] == status[8] == "completed"
  assert all(status[i] == "pruned" for i in range(1, 8)), status
  rungs = [3, 9]  # 3 * 3**k below 27
  for r in result.trials:
    if r.status == "pruned":
      assert r.stopped_step in rungs
      assert r.curves["step"][-1] == r.stopped_step
    else:
      assert r.stopped_step is None and r.curves["step"][-1] == STEPS
  assert result.best.trial_id in (0, 8)


def test_asha_rung_counts_follow_the_schedule(asha_run):
  result, store, _, _ = asha_run
  decisions = store.decisions()
  reached = lambda step: {r.trial_id for r in result.trials
                          if r.curves["step"][-1] >= step}
  for step in (3, 9):
    at_rung = {d["trial_id"] for d in decisions
               if d["kind"] == "rung" and d["step"] == step}
    assert at_rung == reached(step)
    continued = {d["trial_id"] for d in decisions if d["kind"] == "rung"
                 and d["step"] == step and d["detail"]["continue"]}
    pruned_here = {r.trial_id for r in result.trials
                   if r.stopped_step == step}
    assert continued | pruned_here == at_rung and not continued & pruned_here
    # Never more than 1/eta of a rung (at least one) continues.
    assert all(d["detail"]["keep"] == max(1, d["detail"]["recorded"] // 3)
               for d in decisions if d["kind"] == "rung")
  assert not any(d["kind"] == "rung" and d["step"] >= STEPS
                 for d in decisions)


def test_refilled_slots_get_fresh_trials_and_compile_nothing(asha_run):
  result, store, new_traces, _ = asha_run
  starts = [d for d in store.decisions() if d["kind"] == "start"]
  assert sorted(d["trial_id"] for d in starts) == list(range(len(PLANTED)))
  assert all(d["step"] == 0 for d in starts)
  assert {d["detail"]["slot"] for d in starts} == {0, 1, 2}
  # Fresh ids and seeds: each trial trained with its own seed from step 1.
  seeds = [t.seed for t in rs.make_trials(PLANTED)]
  assert [r.seed for r in result.trials] == seeds
  assert all(r.curves["step"][0] == EVAL for r in result.trials)
  # Six refills, one compile of the refill program; at the end the last
  # trial runs alone in a group shrunk to K=1 (one more segment program).
  assert new_traces.get("reset_slot", 0) <= 1
  assert new_traces.get("segment", 0) <= 2
  assert new_traces.get("compact", 0) <= 1


def test_a_second_asha_sweep_compiles_nothing(asha_run, tiny_lm):
  other = [dict(c, learning_rate=c["learning_rate"] * 0.9)
           for c in PLANTED[::-1]]
  with engine.count_compiles() as compiles:
    rs.run_trials(tiny_lm, other, steps=STEPS, eval_every=EVAL,
                  max_group_size=3, scheduler=ASHA)
  assert compiles.count == 0


def test_stopped_trials_match_the_same_trials_without_a_scheduler(
    asha_run, tiny_lm):
  """Up to the step a trial stops, its numbers are those of the trial
  trained alone (refilled slots included: they start from step 0)."""
  result, _, _, _ = asha_run
  alone = rs.run_trials(tiny_lm, PLANTED, steps=STEPS, eval_every=EVAL,
                        max_group_size=1)
  for a, b in zip(result.trials, alone.trials):
    n = len(a.curves["step"])
    assert a.curves["step"] == b.curves["step"][:n]
    for k in a.curves:
      np.testing.assert_allclose(a.curves[k], b.curves[k][:n], rtol=1e-5,
                                 err_msg=f"trial {a.trial_id} {k}")


# ---------------------------------------------------------------------------
# Slot operations in the engine
# ---------------------------------------------------------------------------


def _slot(state, i):
  return jax.tree_util.tree_map(lambda a: np.asarray(a[i]), state.trials)


# The ASHA sweep's static configuration, task and K=3 for every slot test:
# the programs it compiled (segment, reset, shrink) serve these too.
THREE = [dict(TINY, cell="gru", learning_rate=lr, output_dropout=0.2)
         for lr in (1e-2, 2e-2, 3e-2)]


def _trained(task, steps):
  prog, _, state = group_state(task, THREE)
  state, _ = prog.segment(state, task.data().train, engine.data_key(0),
                          num_steps=steps)
  return prog, state


def _reset(task, steps_before, slot, **newcomer):
  """The group trained ``steps_before`` steps, then a new trial (``THREE[0]``
  with ``newcomer``'s values) written into ``slot``."""
  prog, state = _trained(task, steps_before)
  trial = rs.make_trials([dict(THREE[0], **newcomer)], seed=9)[0]
  reset = prog.reset_slot(state, np.int32(slot), np.int32(trial.seed),
                          engine.trial_hparams(trial.params))
  return prog, state, reset, trial


def test_reset_slot_writes_a_fresh_trial_and_leaves_the_others(tiny_lm):
  _, before, reset, newcomer = _reset(tiny_lm, 4, 1, learning_rate=5e-3,
                                      recurrent_dropout=0.3)
  _, _, fresh = group_state(tiny_lm, [newcomer.params])
  jax.tree_util.tree_map(np.testing.assert_array_equal, _slot(reset, 1),
                         _slot(fresh, 0))
  for i in (0, 2):
    jax.tree_util.tree_map(np.testing.assert_array_equal, _slot(reset, i),
                           _slot(before, i))
  assert np.asarray(reset.step).tolist() == [4, 0, 4]


def test_a_reset_slot_trains_like_a_fresh_group(tiny_lm):
  prog, _, state, newcomer = _reset(tiny_lm, 5, 2, learning_rate=7e-3,
                                    input_dropout=0.2)
  data, key = tiny_lm.data(), engine.data_key(0)
  # Slot 2 trains 6 steps from 0 while the others go from 5 to 11.
  state, seg = prog.segment(state, data.train, key, num_steps=6)
  alone_prog, _, alone = group_state(tiny_lm, [newcomer.params])
  alone, alone_seg = alone_prog.segment(alone, data.train, key, num_steps=6)
  np.testing.assert_allclose(seg.train_loss[2], alone_seg.train_loss[0],
                             rtol=1e-5)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      _slot(state, 2).params, _slot(alone, 0).params)


def test_stop_at_holds_a_slot_still(tiny_lm):
  prog, _, state = group_state(tiny_lm, THREE)
  moved, seg = prog.segment(state, tiny_lm.data().train,
                            engine.data_key(0), num_steps=3,
                            stop_at=[3, 0, 3])
  jax.tree_util.tree_map(np.testing.assert_array_equal, _slot(moved, 1),
                         _slot(state, 1))
  assert np.asarray(moved.step).tolist() == [3, 0, 3]
  assert np.asarray(seg.windows_with_targets)[1] == 0


def test_a_spent_queue_shrinks_to_its_running_trials(tiny_lm):
  prog, state = _trained(tiny_lm, 2)
  same, slots = rs.runner._shrink(prog, state, [0, -1, 2])
  assert slots == [0, -1, 2] and same is state  # 2 of 3: no gain
  for held in (1, 2):
    one, slots = rs.runner._shrink(
        prog, state, [held if s == held else -1 for s in range(3)])
    assert slots == [held] and np.shape(one.step) == (1,)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _slot(one, 0),
                           _slot(state, held))


def test_exploit_copies_weights_and_optimizer_state_bit_for_bit(tiny_lm):
  prog, state = _trained(tiny_lm, 4)
  hp = {k: np.asarray(v) for k, v in state.trials.hp.items()}
  hp["learning_rate"] = np.array([1e-2, 2e-2, 1.25 * 2e-2], np.float32)
  sources = np.array([0, 1, 1], np.int32)
  after = prog.exploit(state, sources, hp)
  src, dst, before = _slot(state, 1), _slot(after, 2), _slot(state, 2)
  for field in ("params", "opt_state", "carry"):
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           getattr(dst, field), getattr(src, field))
  # Its own identity and history stay: key, step, best-so-far.
  for field in ("key", "step", "best_value"):
    np.testing.assert_array_equal(getattr(dst, field), getattr(before, field))
  assert dst.hp["learning_rate"] == np.float32(1.25 * 2e-2)
  for i in range(2):
    jax.tree_util.tree_map(np.testing.assert_array_equal, _slot(after, i),
                           _slot(state, i))


# ---------------------------------------------------------------------------
# Decisions on planted values (no training)
# ---------------------------------------------------------------------------

SPACE = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-1),
                  "output_dropout": rs.Uniform(0.0, 0.5),
                  "weight_decay": rs.Choice([0.0, 1e-4, 1e-3]),
                  "beta1": 0.85})


def _hp(**over):
  hp = {n: float(rs.space.PARAMS[n].default) for n in rs.space.VECTOR_NAMES}
  hp.update(over)
  return hp


def _scheduler(name, steps=100, **options):
  settings = rs.SchedulerSettings(name, **options).checked(steps=steps,
                                                           eval_every=10)
  return sch.Scheduler(settings, steps=steps, mode="min", space=SPACE,
                       seed=0)


def test_median_stops_the_worse_half_after_warm_up():
  s = _scheduler("median", min_steps=20)
  arrive = lambda step, values: s.decide([
      sch.Arrival(i, i, step, v, _hp()) for i, v in enumerate(values)])
  assert not arrive(10, [5.0, 1.0, 2.0, 3.0, 1.5]).pruned  # warm-up
  out = arrive(20, [2.6, 1.0, 2.0, 3.0, 2.4])
  # Trial 0: 2.6 vs the others' median 2.2; trial 3: 3.0 vs 2.2; trial 4
  # is worse now (2.4 vs 2.3) but its best so far (1.5) is not.
  assert out.pruned == {0, 3}
  assert all(d.kind == "pruned" for d in out.decisions)


def test_asha_population_is_judged_together_and_in_order():
  s = _scheduler("asha", min_steps=10, reduction_factor=3)
  assert s.rungs(0) == [10, 30, 90]
  out = s.decide([sch.Arrival(i, i, 10, v, _hp())
                  for i, v in enumerate([3.0, 1.0, 2.0])])
  assert out.pruned == {0, 2}  # top 1/3 of the three that arrived together
  # A later arrival joins the records: 4 values, keep 1; it is better.
  assert s.decide([sch.Arrival(0, 7, 10, 0.5, _hp())]).pruned == set()
  assert s.decide([sch.Arrival(0, 8, 10, 0.7, _hp())]).pruned == {8}
  # Off-rung steps decide nothing.
  assert s.decide([sch.Arrival(0, 7, 20, 9.0, _hp())]).decisions == []


def test_hyperband_brackets_are_deterministic_and_all_used():
  s = _scheduler("hyperband", steps=270, min_steps=10, reduction_factor=3)
  assert s.num_brackets() == 4  # budgets 10, 30, 90, 270
  brackets = [s.bracket(t) for t in range(400)]
  assert brackets == [_scheduler("hyperband", steps=270, min_steps=10
                                 ).bracket(t) for t in range(400)]
  counts = np.bincount(brackets, minlength=4)
  assert (counts > 0).all()
  # Hyperband's allocation n_s ~ (s_max+1)/(s+1) * eta**s: 8%, 12%, 24%
  # and 55% of the trials, the most in the most aggressive bracket.
  np.testing.assert_allclose(counts / 400, [0.08, 0.12, 0.24, 0.55],
                             atol=0.05)
  firsts = {s.bracket(t): s.rungs(t)[0] if s.rungs(t) else None
            for t in range(400)}
  assert firsts == {3: 10, 2: 30, 1: 90, 0: None}


def test_pbt_explore_moves_by_the_factors_within_bounds():
  s = _scheduler("pbt", pbt_resample_probability=0.0)
  rng = np.random.default_rng(0)
  for lr in (1e-4, 3e-3, 1e-1):
    hp = _hp(learning_rate=lr, output_dropout=0.45, weight_decay=1e-4)
    for _ in range(20):
      new = s.explore(hp, rng)
      expected = {np.float32(min(1e-1, max(1e-4, lr * f)))
                  for f in sch.PBT_FACTORS}
      assert np.float32(new["learning_rate"]) in expected
      assert 0.0 <= new["output_dropout"] <= 0.5
      assert new["weight_decay"] in (0.0, np.float32(1e-3))  # a neighbour
      f32 = np.float32
      assert f32(new["beta1"]) == f32(hp["beta1"])  # fixed by the space
      assert f32(new["grad_clip"]) == f32(hp["grad_clip"])  # not in it
  resampling = _scheduler("pbt", pbt_resample_probability=1.0)
  drawn = [resampling.explore(_hp(), rng)["learning_rate"] for _ in range(50)]
  assert all(1e-4 <= v < 1e-1 for v in drawn) and len(set(drawn)) == 50


def _simulate(use_pbt, seed):
  """A planted problem whose best learning rate changes: until step 50 a
  trial's loss falls by 2*lr per step; afterwards it rises by lr per step
  (only a small rate keeps gaining). ``lr`` is the exploitable value."""
  rng = np.random.default_rng(seed)
  lrs = list(10 ** rng.uniform(-4, -1, 8))
  loss = [1.0] * 8
  best = math.inf
  s = sch.Scheduler(rs.SchedulerSettings("pbt").checked(steps=100,
                                                        eval_every=10),
                    steps=100, mode="min", space=SPACE, seed=seed)
  for step in range(10, 101, 10):
    for i in range(8):
      for t in range(step - 10, step):
        loss[i] += (-2 * lrs[i] if t < 50 else lrs[i] - 2e-3) * 10
    best = min(best, min(loss))
    if use_pbt and step < 100:
      out = s.decide([sch.Arrival(i, i, step, loss[i],
                                  _hp(learning_rate=lrs[i]))
                      for i in range(8)])
      for e in out.exploits:
        loss[e.slot] = loss[e.source]
        lrs[e.slot] = e.hp["learning_rate"]
  return min(loss)


def test_pbt_beats_the_same_population_without_it_on_a_planted_task():
  wins = [_simulate(True, seed) < _simulate(False, seed) for seed in range(8)]
  assert all(wins), wins


def test_scheduler_settings_errors_name_the_option():
  check = lambda **kw: rs.SchedulerSettings(**kw).checked(steps=100,
                                                          eval_every=10)
  with pytest.raises(ValueError, match="min_steps must be a positive multiple"):
    check(name="asha", min_steps=15)
  with pytest.raises(ValueError, match="reduction_factor"):
    check(name="asha", reduction_factor=1)
  with pytest.raises(ValueError, match="scheduler must be one of"):
    check(name="bohb")
  with pytest.raises(ValueError, match="pbt_fraction"):
    check(name="pbt", pbt_fraction=0.8)
  with pytest.raises(ValueError, match="min_steps .* must be below steps"):
    check(name="median", min_steps=100)


def test_pbt_records_lineage(tiny_lm, tmp_path):
  space = rs.Space({**{k: v for k, v in TINY.items()}, "cell": "gru",
                    "learning_rate": rs.LogUniform(1e-4, 3e-2)})
  result = rs.sweep(tiny_lm, space, num_trials=3, steps=9, eval_every=3,
                    max_group_size=3, scheduler="pbt", workdir=str(tmp_path))
  exploited = [r for r in result.trials if r.lineage]
  # Every exploit step (at 3 and 6) the worst of three copies the best.
  assert sum(len(r.lineage) for r in result.trials) == 2
  for r in exploited:
    for event in r.lineage:
      assert event["parent"] != r.trial_id and event["step"] in (3, 6)
      assert 1e-4 <= event["hp"]["learning_rate"] <= 3e-2
  # Without a workdir the results carry the same lineage and numbers.
  unstored = rs.sweep(tiny_lm, space, num_trials=3, steps=9,
                      eval_every=3, max_group_size=3, scheduler="pbt")
  for a, b in zip(result.trials, unstored.trials):
    assert a.lineage == b.lineage and a.curves == b.curves
  csv = (tmp_path / "results.csv").read_text().splitlines()
  assert "pbt_parents" in csv[0]
  assert any("@3" in line or "@6" in line for line in csv[1:])


def test_report_and_optuna_export_show_pruned_trials(asha_run, tmp_path):
  optuna = pytest.importorskip("optuna")
  result, store, _, _ = asha_run
  report = rs.report.write_report(store.workdir, plots=False)
  assert "scheduler asha" in report.text
  assert "7 trials pruned (at step 3: 7)" in report.text, report.text
  assert "6 slots refilled" in report.text
  storage = f"sqlite:///{tmp_path / 'optuna.db'}"
  study = rs.interop.export_optuna(store.workdir, storage, study_name="a")
  by_id = {t.user_attrs["rnnsweep_trial_id"]: t for t in study.trials}
  for r in result.trials:
    t = by_id[r.trial_id]
    if r.status == "pruned":
      assert t.state == optuna.trial.TrialState.PRUNED
      assert t.user_attrs["stopped_step"] == r.stopped_step
      assert max(t.intermediate_values) == r.stopped_step
    else:
      assert t.state == optuna.trial.TrialState.COMPLETE


def test_pbt_needs_a_space(tiny_lm):
  with pytest.raises(ValueError, match="'pbt' needs a search space"):
    rs.run_trials(tiny_lm, PLANTED[:2], steps=6, eval_every=3,
                  scheduler="pbt")


@pytest.mark.parametrize("name", ["hyperband", "median"])
def test_hyperband_and_median_stop_trials_where_their_rules_say(
    tiny_lm, name):
  settings = rs.SchedulerSettings(name, min_steps=3, reduction_factor=3)
  result = rs.run_trials(tiny_lm, PLANTED, steps=STEPS, eval_every=EVAL,
                         max_group_size=3, scheduler=settings)
  assert len(result.trials) == len(PLANTED)
  status = {r.trial_id: r.status for r in result.trials}
  assert status[0] == status[8] == "completed"  # the good ones
  pruned = [r for r in result.trials if r.status == "pruned"]
  assert pruned
  checked = settings.checked(steps=STEPS, eval_every=EVAL)
  rules = sch.Scheduler(checked, steps=STEPS, mode="min", space=None, seed=0)
  for r in pruned:
    if name == "hyperband":
      assert r.stopped_step in rules.rungs(r.trial_id)
    else:
      assert 3 <= r.stopped_step < STEPS
