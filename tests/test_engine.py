"""Engine equivalences: vmapped group == trials alone, TBPTT semantics,
divergence isolation, one compile per static configuration."""

import json
import math
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import placement
from rnnsweep.groups import StaticConfig
from conftest import TEST_XLA_FLAGS, TINY, group_state, subprocess_env
import reference

CELLS = ["simple", "lstm", "gru"]

# Six trials that differ in every vectorised knob the invariance must hold
# for: learning rate, all three dropout rates together (up to 0.5), weight
# decay, clipping, Adam's betas (momentum where the family has it).
VARIED = [
    dict(learning_rate=1e-3),
    dict(learning_rate=3e-3, input_dropout=0.5, recurrent_dropout=0.5,
         output_dropout=0.5),
    dict(learning_rate=5e-3, input_dropout=0.1, recurrent_dropout=0.4,
         output_dropout=0.2, beta1=0.8, beta2=0.99),
    dict(learning_rate=2e-3, input_dropout=0.3, recurrent_dropout=0.2,
         output_dropout=0.3, momentum=0.5),
    dict(learning_rate=4e-3, input_dropout=0.2, recurrent_dropout=0.3,
         output_dropout=0.1, weight_decay=1e-3),
    dict(learning_rate=8e-3, grad_clip=0.5, input_dropout=0.25,
         recurrent_dropout=0.25, output_dropout=0.05),
]
# Every cell with Adam, and every other family once.
CELL_OPTIMIZER = [("simple", "adam"), ("lstm", "adam"), ("gru", "adam"),
                  ("gru", "adamw"), ("lstm", "rmsprop"), ("simple", "sgd")]


def _configs(cell, varied=VARIED, **extra):
  return [{**TINY, "cell": cell, **v, **extra} for v in varied]


def _assert_same_curves(a, b, rtol):
  assert [r.seed for r in a] == [r.seed for r in b]
  for ra, rb in zip(a, b):
    assert ra.status == rb.status
    assert ra.curves.keys() == rb.curves.keys()
    for k in ra.curves:
      np.testing.assert_allclose(ra.curves[k], rb.curves[k], rtol=rtol,
                                 atol=0, err_msg=f"trial {ra.trial_id} {k}")


def test_naive_recurrent_dropout_group_equals_alone(tiny_lm):
  """Naive (per-step) recurrent dropout keeps vmap invariance; at recurrent
  rate 0 it trains as variational mode does (another program: equal up to
  rounding)."""
  configs = _configs("lstm", VARIED[:4], recurrent_dropout_mode="naive")
  configs[0]["input_dropout"] = 0.3  # rate 0 but other dropout on
  together = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                           max_group_size=len(configs))
  alone = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                        max_group_size=1)
  _assert_same_curves(together.trials, alone.trials, rtol=1e-5)
  zero = [c for c in configs if c.get("recurrent_dropout", 0) == 0]
  assert zero == configs[:1]
  variational = rs.run_trials(
      tiny_lm, [dict(c, recurrent_dropout_mode="variational") for c in zero],
      steps=24, eval_every=8, max_group_size=len(zero))
  _assert_same_curves(variational.trials, together.trials[:len(zero)],
                      rtol=1e-5)
  # With recurrent dropout on, the modes train differently.
  other = rs.run_trials(
      tiny_lm, [dict(configs[1], recurrent_dropout_mode="variational",
                     seed=together.trials[1].seed)],
      steps=24, eval_every=8, max_group_size=1)
  a = np.asarray(other.trials[0].curves["train_loss"])
  b = np.asarray(together.trials[1].curves["train_loss"])
  assert np.max(np.abs(a - b) / np.abs(b)) > 1e-3


@pytest.mark.parametrize("cell, optimizer", CELL_OPTIMIZER)
def test_group_equals_trials_alone(tiny_lm, cell, optimizer):
  # SGD needs larger steps to move in 24 updates.
  scale = 20.0 if optimizer == "sgd" else 1.0
  configs = [dict(c, optimizer=optimizer,
                  learning_rate=c["learning_rate"] * scale)
             for c in _configs(cell)]
  together = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                           max_group_size=len(configs))
  alone = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                        max_group_size=1)
  assert {r.group_id for r in together.trials} == {0}
  assert len({r.group_id for r in alone.trials}) == len(configs)
  _assert_same_curves(together.trials, alone.trials, rtol=1e-5)
  # The knobs really differ: otherwise the check above would be vacuous.
  finals = {round(r.curves["train_loss"][-1], 5) for r in together.trials}
  assert len(finals) == len(configs)


_DEFAULT_LEVEL_SCRIPT = """
import json, sys
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import rnnsweep as rs
from rnnsweep import engine
from rnnsweep.tasks.lm import python_docs_text
configs = json.loads(sys.argv[1])
task = rs.CharLM(seq_len=16, text=python_docs_text()[:40_000])
with engine.count_compiles() as log:
  out = rs.run_trials(task, configs, steps=24, eval_every=8,
                      max_group_size=len(configs))
print(json.dumps({"compiled": log.count,
                  "curves": [r.curves for r in out.trials]}))
"""


def test_suite_compile_level_changes_no_numbers(tiny_lm, tmp_path):
  """The suite compiles at LLVM -O1 (conftest.TEST_XLA_FLAGS) to save time;
  a sweep compiled at XLA's default level, as users run it, trains to the
  same numbers bit for bit."""
  configs = _configs("lstm")
  here = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                       max_group_size=len(configs))
  env = subprocess_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path))
  env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(TEST_XLA_FLAGS, "").strip()
  assert "optimization_level" not in env["XLA_FLAGS"]
  out = subprocess.run(
      [sys.executable, "-c", _DEFAULT_LEVEL_SCRIPT, json.dumps(configs)],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  child = json.loads(out.stdout.strip().splitlines()[-1])
  assert child["compiled"] >= 2  # its own programs, not the suite's
  for mine, theirs in zip(here.trials, child["curves"], strict=True):
    assert mine.curves.keys() == theirs.keys()
    for name in theirs:
      np.testing.assert_array_equal(mine.curves[name], theirs[name],
                                    err_msg=f"trial {mine.trial_id} {name}")


def test_padding_changes_nothing(tiny_lm):
  # 5 trials, at most 3 per group: groups of 3 and of 2 + 1 padding slot.
  configs = _configs("lstm")[:5]
  one_group = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                            max_group_size=5)
  padded = rs.run_trials(tiny_lm, configs, steps=24, eval_every=8,
                         max_group_size=3)
  plan = rs.plan_groups(rs.make_trials(configs), 3)
  assert [g.size for g in plan] == [3, 3] and plan[1].num_padding == 1
  _assert_same_curves(one_group.trials, padded.trials, rtol=1e-5)


def test_common_random_numbers_across_groups(tiny_lm):
  """Same params and seed in two different groups: identical numbers."""
  a = dict(TINY, cell="gru", learning_rate=3e-3, seed=7)
  b = dict(TINY, cell="gru", learning_rate=9e-3, seed=8)
  # Groups of at most two: the copies of a land in different groups.
  r = rs.run_trials(tiny_lm, [a, b, a], steps=16, eval_every=8,
                    max_group_size=2)
  assert r.trials[0].group_id != r.trials[2].group_id
  assert r.trials[0].curves == r.trials[2].curves
  assert r.trials[0].curves != r.trials[1].curves


def test_divergent_trial_is_frozen_and_isolated(tiny_adding):
  # On the adding task a huge step sends the output, hence the squared
  # error, past float32's range: the loss is inf.
  # Explicit seeds: the same trials keep their seeds under other ids.
  good = [dict(c, seed=10 + i) for i, c in enumerate(_configs("lstm")[:4])]
  bad = dict(TINY, cell="lstm", learning_rate=1e35, grad_clip=0.0)
  ordinary = dict(TINY, cell="lstm", learning_rate=2e-3)
  with_bad = rs.run_trials(tiny_adding, good[:2] + [bad] + good[2:],
                           steps=24, eval_every=8, max_group_size=5)
  without = rs.run_trials(tiny_adding, good[:2] + [ordinary] + good[2:],
                          steps=24, eval_every=8, max_group_size=5)
  statuses = [r.status for r in with_bad.trials]
  assert statuses == ["completed"] * 2 + ["diverged"] + ["completed"] * 2
  diverged = with_bad.trials[2]
  assert diverged.diverged_step is not None
  assert math.isnan(diverged.curves["val/mse"][-1])
  # Group-mates: bit-for-bit what they are beside an ordinary trial.
  for i in (0, 1, 3, 4):
    assert with_bad.trials[i].curves == without.trials[i].curves
  # ... and equal (to float tolerance) to a run of only the good trials.
  alone = rs.run_trials(tiny_adding, good, steps=24, eval_every=8,
                        max_group_size=1)
  _assert_same_curves([with_bad.trials[i] for i in (0, 1, 3, 4)],
                      alone.trials, rtol=1e-5)
  assert with_bad.best.status == "completed"


def _one_group(task, configs):
  """``(program, hp, data, data_key, initial state)`` of one group."""
  prog, trials, state = group_state(task, configs)
  hp = engine.hparam_arrays([t.params for t in trials])
  return prog, hp, task.data(), jax.random.PRNGKey(0), state


def test_diverged_parameters_stay_frozen(tiny_adding):
  configs = [dict(TINY, cell="simple", learning_rate=1e-3),
             dict(TINY, cell="simple", learning_rate=1e35, grad_clip=0.0)]
  prog, hp, data, key, state = _one_group(tiny_adding, configs)
  state, _ = prog.segment(state, data.train, key, num_steps=8)
  assert bool(state.trials.diverged[1]) and not bool(state.trials.diverged[0])
  frozen = jax.tree_util.tree_map(lambda x: np.asarray(x[1]),
                                  state.trials.params)
  healthy = jax.tree_util.tree_map(lambda x: np.asarray(x[0]),
                                   state.trials.params)
  state, seg = prog.segment(state, data.train, key, num_steps=8)
  assert math.isnan(float(seg.train_loss[1]))
  assert math.isfinite(float(seg.train_loss[0]))
  after = jax.tree_util.tree_map(lambda x: np.asarray(x[1]),
                                 state.trials.params)
  moved = jax.tree_util.tree_map(lambda x: np.asarray(x[0]),
                                 state.trials.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, after)
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(after))
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(healthy), jax.tree_util.tree_leaves(moved)))


def test_one_executable_serves_every_segment_length(tiny_lm):
  prog, hp, data, key, start = _one_group(tiny_lm,
                                          _configs("gru", VARIED[:3]))
  whole, _ = prog.segment(start, data.train, key, num_steps=8)
  traces = engine.trace_counts()
  with engine.count_compiles() as compiles:
    part, first = prog.segment(start, data.train, key, num_steps=3)
    part, rest = prog.segment(part, data.train, key, num_steps=5)
    same, empty = prog.segment(part, data.train, key, num_steps=0)
  assert compiles.count == 0 and engine.trace_counts() == traces
  # 3 + 5 updates are the 8 updates, bit for bit; 0 updates change nothing.
  jax.tree_util.tree_map(np.testing.assert_array_equal, whole, part)
  jax.tree_util.tree_map(np.testing.assert_array_equal, part, same)
  assert (np.asarray(part.step) == 8).all()
  assert (np.asarray(first.windows_with_targets) == 3).all()
  assert (np.asarray(rest.windows_with_targets) == 5).all()
  assert np.isnan(np.asarray(empty.train_loss)).all()


#: The threads Program.prepare compiles a group's programs in, one each
#: (:func:`_prepared`).
PREPARE_THREADS = {f"rnnsweep-compile-{name}" for name in
                   ("init", "segment", "validation", "test", "keep_best")}
#: The two passes share one program: whichever thread comes first compiles
#: it, the other waits for it.
EVALUATION_THREADS = {"rnnsweep-compile-validation", "rnnsweep-compile-test"}


def _prepared(threads):
  """Whether ``threads`` are the threads of one prepare: each program's,
  and one of the two evaluation passes'."""
  return (threads - EVALUATION_THREADS == PREPARE_THREADS - EVALUATION_THREADS
          and len(threads & EVALUATION_THREADS) == 1)


def _compile_threads():
  """A listener for jax.monitoring and the names of the threads it saw
  compile."""
  threads = set()

  def listener(event, duration, **_):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      threads.add(threading.current_thread().name)
  return listener, threads


def test_prepare_compiles_a_groups_programs_at_once_for_its_run(tiny_lm):
  trials = rs.make_trials(_configs("gru", VARIED[:3]))
  # A Program of its own: none of its executables exists yet.
  prog = engine.Program(StaticConfig.from_params(trials[0].params), tiny_lm)
  seeds = engine.seed_array([t.seed for t in trials])
  hp = engine.hparam_arrays([t.params for t in trials])
  data, key = tiny_lm.data(), engine.data_key(0)
  listener, threads = _compile_threads()
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    with engine.count_compiles() as compiles:
      for future in prog.prepare(seeds, hp, data, key):
        future.result()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  # init, segment, evaluation (the validation split's of the current
  # parameters and the test split's of the best ones: one program, the
  # splits having one shape), the best-parameter update: each in a thread
  # of its own.
  assert np.shape(data.val.inputs) == np.shape(data.test.inputs)
  assert compiles.requests == 4 and _prepared(threads)
  assert compiles.names["jit(_evaluate)"] == 1
  # A group's whole run then uses them: nothing more is compiled.
  with engine.count_compiles() as again:
    state = prog.init(seeds, hp)
    state, _ = prog.segment(state, data.train, key, num_steps=2)
    metrics = prog.evaluate(state, data.val)
    value = np.asarray(metrics[tiny_lm.selection_metric], np.float32)
    state = prog.keep_best(state, value)
    prog.evaluate(state, data.test, best=True)
  assert again.requests == 0


@pytest.mark.parametrize("at_once,group_size", [(False, 3), (True, 3),
                                                 (True, "auto")])
def test_a_run_compiles_its_groups_programs_at_once_when_told(
    tiny_lm, monkeypatch, at_once, group_size):
  monkeypatch.setattr(engine, "_PROGRAMS", type(engine._PROGRAMS)())  # pylint: disable=protected-access
  listener, threads = _compile_threads()
  jax.monitoring.register_event_duration_secs_listener(listener)
  options = rs.EngineOptions(compile_at_once=at_once)
  try:
    # auto: the group size's memory check compiles them (at once too).
    with engine.count_compiles() as compiles:
      r = rs.run_trials(tiny_lm, _configs("gru", VARIED[:3]), steps=16,
                        eval_every=8, max_group_size=group_size,
                        options=options)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert [t.status for t in r.trials] == ["completed"] * 3
  main = threading.current_thread().name
  assert (_prepared(threads - {main}) if at_once else
          threads - {main} == set())
  # Validation and test ran one evaluation program.
  assert compiles.names["jit(_evaluate)"] == 1
  # When programs compile is not part of the sweep a resume must match.
  record = lambda o: rs.settings.SweepSettings.make(
      tiny_lm, sampler="trials", space=None, num_trials=3, steps=16,
      eval_every=8, max_group_size=3, seed=0, options=o).record()
  assert record(options) == record(rs.EngineOptions())


def test_a_fresh_group_compiles_its_segment_while_an_accelerator_inits(
    tiny_lm, monkeypatch):
  """On an accelerator nothing reads the device between a fresh group's
  init and its first segment's dispatch, so the host compiles the segment
  while the device runs init, and the best-parameter update is compiled
  before the evaluation is read; on a CPU the steps are read first (the
  compiles and runs would share the cores). The numbers are the same
  either way."""
  calls, runs, watched = [], {}, set()
  real = engine.get_program

  def get_program(*args, **kwargs):
    prog = real(*args, **kwargs)
    if id(prog) not in watched:  # the runner asks for it more than once
      watched.add(id(prog))
      for name in ("init", "segment", "to_host", "compiled_keep_best"):
        method = getattr(prog, name)
        monkeypatch.setattr(prog, name, lambda *a, method=method, name=name,
                            **k: calls.append(name) or method(*a, **k))
    monkeypatch.setattr(prog, "platform", platform)
    return prog

  monkeypatch.setattr(engine, "get_program", get_program)
  for platform in ("cpu", "gpu"):
    calls.clear()
    runs[platform] = rs.run_trials(tiny_lm, _configs("gru", VARIED[:3]),
                                   steps=16, eval_every=8, max_group_size=3)
    assert calls[:4] == (
        ["init", "segment", "compiled_keep_best", "to_host"]
        if platform == "gpu" else
        ["init", "to_host", "segment", "to_host"]), platform
    # Later segments read where each slot stands.
    assert calls.count("segment") == 2 and calls[calls.index("segment", 2)
                                                 - 1] == "to_host"
  assert [t.curves for t in runs["gpu"].trials] == [
      t.curves for t in runs["cpu"].trials]


def test_a_failed_compile_raises_and_is_compiled_anew_next_time(
    tiny_lm, monkeypatch):
  trials = rs.make_trials(_configs("gru", VARIED[:3]))
  prog = engine.Program(StaticConfig.from_params(trials[0].params), tiny_lm)
  seeds = engine.seed_array([t.seed for t in trials])
  hp = engine.hparam_arrays([t.params for t in trials])
  real = prog._init_jit.lower  # pylint: disable=protected-access
  calls = []

  def lower(*args):
    calls.append(1)
    if len(calls) == 1:
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory compiling")
    return real(*args)
  monkeypatch.setattr(prog._init_jit, "lower", lower)  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    prog.init(seeds, hp)
  state = prog.init(seeds, hp)  # compiled anew, not the failure kept
  assert len(calls) == 2 and np.shape(state.trials.step) == (3,)


def test_second_group_compiles_nothing(tiny_lm):
  first = _configs("gru", VARIED[:3])
  rs.run_trials(tiny_lm, first, steps=16, eval_every=8, max_group_size=3)
  traces = engine.trace_counts()
  # New values of every vectorised knob, and two groups of the same K.
  second = _configs("gru", VARIED[3:] + VARIED[:3], weight_decay=1e-3)
  with engine.count_compiles() as compiles:
    r = rs.run_trials(tiny_lm, second, steps=16, eval_every=8,
                      max_group_size=3)
  assert len({t.group_id for t in r.trials}) == 2
  assert compiles.count == 0
  assert engine.trace_counts() == traces


def test_compile_counter_sees_new_shapes(tiny_lm):
  # The counter itself must be able to fail: a shape no other test uses
  # compiles.
  with engine.count_compiles() as compiles:
    rs.run_trials(tiny_lm, _configs("gru", VARIED[:2], hidden_size=12),
                  steps=8, eval_every=8, max_group_size=2)
  assert compiles.count >= 1


# ---------------------------------------------------------------------------
# Truncated BPTT
# ---------------------------------------------------------------------------


def _one_trial(task, cell, truncation, mode="variational", **hp_over):
  static = StaticConfig(cell=cell, hidden_size=8, num_layers=2, batch_size=3,
                        truncation=truncation, embed_size=5, optimizer="sgd",
                        recurrent_dropout_mode=mode)
  params = rs.space.resolve_params(dict(
      static.__dict__, learning_rate=1.0, grad_clip=0.0, input_dropout=0.2,
      recurrent_dropout=0.3, output_dropout=0.1, **hp_over))
  hp = {k: v[0] for k, v in engine.hparam_arrays([params]).items()}
  one = engine.OneTrial(static, task)
  state = one.init(jnp.int32(3), hp)
  return one, state, hp


def _reference_loss(prog, params, carry, window, masks):
  """The window's weighted loss via the independent reference model."""
  new_carry, out = reference.forward(prog.static.cell, params, carry,
                                     window.inputs, masks)
  per_step = prog.task.loss(out, window.targets)
  return jnp.sum(per_step * window.weights) / jnp.sum(window.weights), new_carry


@pytest.mark.parametrize("cell", CELLS)
def test_full_window_tbptt_is_full_bptt(tiny_adding, cell):
  """window = sequence length: the update is exactly full BPTT's gradient."""
  prog, state, hp = _one_trial(tiny_adding, cell, tiny_adding.seq_len)
  data = tiny_adding.data()
  key = jax.random.PRNGKey(5)
  step = jnp.int32(0)
  window, seq_batch, index = prog.train_window(data.train, key, step)
  assert window.inputs.shape[1] == tiny_adding.seq_len and int(index) == 0
  new_state, _, _ = prog.update(state, data.train, key)
  assert int(new_state.step) == 1
  masks = prog.masks(state.key, hp, seq_batch)
  grads = jax.grad(lambda p: _reference_loss(
      prog, p, prog.zero_carry(3), window, masks)[0])(state.params)
  # SGD with learning rate 1 and no clipping: new = old - grad.
  expected = optax.apply_updates(
      state.params, jax.tree_util.tree_map(lambda g: -g, grads))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      new_state.params, expected)


@pytest.mark.parametrize("cell, mode", [
    *((c, "variational") for c in CELLS), ("lstm", "naive"), ("gru", "naive")])
def test_short_window_truncates_gradient(tiny_lm, cell, mode):
  """Two windows per sequence: the second update sees the first window's
  final state as a constant, and the carry does cross the boundary. With
  naive recurrent dropout each window trains with its own per-step masks."""
  prog, state, hp = _one_trial(tiny_lm, cell, tiny_lm.seq_len // 2, mode)
  data = tiny_lm.data()
  key = jax.random.PRNGKey(5)
  s = state
  for step in range(2):
    window, seq_batch, index = prog.train_window(data.train, key,
                                                 jnp.int32(step))
    assert int(index) == step and int(seq_batch) == 0
    s, _, _ = prog.update(s, data.train, key)

  # Reference, by hand.
  full = tiny_lm.train_batch(data.train, jax.random.fold_in(key, 0), 3)
  w = tiny_lm.seq_len // 2
  win = [jax.tree_util.tree_map(lambda a: a[:, i * w:(i + 1) * w], full)
         for i in range(2)]
  masks = [prog.masks(state.key, hp, jnp.int32(0), jnp.int32(i))
           for i in range(2)]
  if mode == "naive":
    assert masks[0].recurrent[0].shape == (3, w, 8)
    assert not np.array_equal(masks[0].recurrent[0], masks[1].recurrent[0])
  sgd = lambda p, g: jax.tree_util.tree_map(lambda a, b: a - b, p, g)
  p0, c0 = state.params, prog.zero_carry(3)
  g0, c1 = jax.grad(lambda p: _reference_loss(prog, p, c0, win[0], masks[0]),
                    has_aux=True)(p0)
  p1 = sgd(p0, g0)
  g1 = jax.grad(lambda p: _reference_loss(prog, p, c1, win[1], masks[1])[0])(
      p1)
  p2 = sgd(p1, g1)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      s.params, p2)
  # Starting the second window from zeros instead gives other parameters:
  # the carry really crosses the boundary.
  g1_reset = jax.grad(lambda p: _reference_loss(
      prog, p, c0, win[1], masks[1])[0])(p1)
  assert not np.allclose(
      jax.tree_util.tree_leaves(sgd(p1, g1_reset))[0],
      jax.tree_util.tree_leaves(p2)[0], atol=1e-7)


def test_carry_handoff_blocks_gradient():
  x = jnp.arange(1.0, 4.0)
  through = jax.grad(lambda v: jnp.sum(engine.carry_handoff(
      (v * 2.0,), jnp.asarray(False))[0] ** 2))(x)
  np.testing.assert_array_equal(through, np.zeros(3))
  # Control: without the handoff the same expression has a gradient.
  assert np.all(jax.grad(lambda v: jnp.sum((v * 2.0) ** 2))(x) != 0)
  reset = engine.carry_handoff((x,), jnp.asarray(True))[0]
  np.testing.assert_array_equal(reset, np.zeros(3))
  kept = engine.carry_handoff((x,), jnp.asarray(False))[0]
  np.testing.assert_array_equal(kept, x)


# ---------------------------------------------------------------------------
# The init path that deadlocks jaxlib 0.10.2 when vmapped
# ---------------------------------------------------------------------------

_INIT_SCRIPT = """
import jax, rnnsweep as rs
from rnnsweep import engine
task = rs.Adding(seq_len=6, num_val=8)
for cell in ("simple", "lstm", "gru"):
    trials = rs.make_trials([dict(cell=cell, hidden_size=32, learning_rate=lr)
                             for lr in (1e-3, 2e-3, 3e-3, 4e-3)])
    g = rs.plan_groups(trials, 4)[0]
    prog = engine.get_program(g.static, task)
    st = prog.init(engine.seed_array([t.seed for t in trials]),
                   engine.hparam_arrays([t.params for t in trials]))
    jax.block_until_ready(st)
print("ok")
"""


def test_group_init_does_not_hang():
  """Group init of every cell finishes (a batched-QR regression hangs)."""
  env = subprocess_env()
  out = subprocess.run([sys.executable, "-c", _INIT_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=180, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------
# Key streams
# ---------------------------------------------------------------------------


def test_trial_and_data_streams_are_disjoint():
  """A trial whose seed equals the sweep seed draws no key the shared data
  stream draws (init, dropout for many batches, data batches)."""
  for seed in (0, 7, 2**31 - 1):
    trial = engine.trial_key(jnp.int32(seed))
    data = engine.data_key(seed)
    trial_keys = [engine.init_key(trial)] + [
        engine.dropout_key(trial, jnp.int32(b)) for b in range(64)]
    data_keys = [engine.batch_key(data, jnp.int32(b)) for b in range(64)]
    as_tuples = lambda ks: {tuple(np.asarray(k).tolist()) for k in ks}
    assert len(as_tuples(trial_keys) | as_tuples(data_keys)) == 129


def test_the_engine_draws_from_those_streams(tiny_lm):
  """init and masks use the keys the stream functions name (so the
  disjointness above is about the keys really used)."""
  static = StaticConfig(cell="gru", hidden_size=8, num_layers=1,
                        batch_size=4, truncation=4, embed_size=8,
                        optimizer="adam")
  prog = engine.OneTrial(static, tiny_lm)
  hp = {k: jnp.float32(v) for k, v in rs.space.resolve_params(
      {"recurrent_dropout": 0.5}).items() if k in rs.space.VECTOR_NAMES}
  state = prog.init(jnp.int32(3), hp)
  np.testing.assert_array_equal(state.key, engine.trial_key(jnp.int32(3)))
  masks = prog.masks(state.key, hp, jnp.int32(2))
  expected = rs.models.dropout_masks(
      engine.dropout_key(state.key, jnp.int32(2)), batch_size=4,
      input_size=8, hidden_size=8, num_layers=1, input_rate=hp["input_dropout"],
      recurrent_rate=hp["recurrent_dropout"], output_rate=hp["output_dropout"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, masks, expected)


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32 + 3, 1.5, True])
def test_sweep_seed_out_of_range_is_an_error(tiny_adding, seed):
  with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*31\)"):
    rs.run_trials(tiny_adding, [dict(TINY)], steps=1, eval_every=1,
                  seed=seed)


def test_program_cache_keeps_the_most_recently_used(tiny_lm, monkeypatch):
  """Each compiled program holds memory mappings of its code; a process
  that cached every program it ever built ran out of them (the suite
  crashed compiling). The cache keeps the most recently used few."""
  monkeypatch.setattr(engine, "MAX_CACHED_PROGRAMS", 2)
  monkeypatch.setattr(engine, "_PROGRAMS", type(engine._PROGRAMS)())
  statics = [StaticConfig(cell="lstm", hidden_size=h, num_layers=1,
                          batch_size=4, truncation=8, embed_size=8,
                          optimizer="adam") for h in (5, 6, 7)]
  a = engine.get_program(statics[0], tiny_lm)
  b = engine.get_program(statics[1], tiny_lm)
  assert engine.get_program(statics[0], tiny_lm) is a  # a: used last
  engine.get_program(statics[2], tiny_lm)  # drops b, the least recent
  assert len(engine._PROGRAMS) == 2
  assert engine.get_program(statics[0], tiny_lm) is a
  assert engine.get_program(statics[1], tiny_lm) is not b


# ---------------------------------------------------------------------------
# Trial chunks (EngineOptions.trial_chunk)
# ---------------------------------------------------------------------------


def _dot_batch_sizes(jaxpr) -> set:
  """The batch sizes of every batched ``dot_general`` in ``jaxpr`` and the
  jaxprs nested in it (loops, maps, custom derivatives)."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
      if lhs_batch:
        found.add(math.prod(eqn.invars[0].aval.shape[d] for d in lhs_batch))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found |= _dot_batch_sizes(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found |= _dot_batch_sizes(sub)
  return found


@pytest.mark.parametrize("chunk, batched", [(0, {6}), (1, set()),
                                            (2, {2}), (4, {3})])
def test_trial_chunk_sets_how_many_trials_share_a_matmul(tiny_lm, chunk,
                                                         batched):
  """Chunks of ``trial_chunk`` slots (the largest divisor of K at most
  that) run one after another: their per-trial matmuls are batched over
  the chunk only, in training and in evaluation; 0 batches the group."""
  configs = _configs("gru")
  trials = rs.make_trials(configs)
  static = rs.plan_groups(trials, len(trials))[0].static
  prog = engine.Program(static, tiny_lm,
                        engine.EngineOptions(trial_chunk=chunk))
  state = engine.state_shape(prog, engine.seed_array([t.seed for t in trials]),
                             engine.hparam_arrays([t.params for t in trials]))
  data = tiny_lm.data()
  segment = jax.make_jaxpr(prog._segment)(
      state, data.train, engine.data_key(0), np.zeros(6, np.int32),
      np.int32(1))
  evaluate = jax.make_jaxpr(prog._evaluate)(state.trials.params, data.val)
  assert _dot_batch_sizes(segment.jaxpr) == batched
  assert _dot_batch_sizes(evaluate.jaxpr) == batched


def test_trial_chunks_train_as_the_whole_group(tiny_lm):
  """One trial at a time, or chunks of a size that does not divide K (4 of
  6: chunks of 3), train every trial as the whole vmapped group does,
  validation and test included."""
  configs = _configs("lstm")
  runs = {chunk: rs.run_trials(
      tiny_lm, configs, steps=16, eval_every=8, max_group_size=6,
      options=rs.EngineOptions(trial_chunk=chunk)) for chunk in (0, 1, 4)}
  for chunk in (1, 4):
    _assert_same_curves(runs[0].trials, runs[chunk].trials, rtol=1e-5)
    np.testing.assert_allclose([r.test_value for r in runs[chunk].trials],
                               [r.test_value for r in runs[0].trials],
                               rtol=1e-5)
  finals = {round(r.curves["train_loss"][-1], 5) for r in runs[1].trials}
  assert len(finals) == len(configs)


def test_a_cpu_group_runs_in_pieces_side_by_side_as_one_call(tiny_lm,
                                                              monkeypatch):
  """A group training its trials one at a time on a CPU is cut into one
  piece a core, each run from a thread of its own: the same numbers bit
  for bit as the whole group in one call, validation and test included."""
  configs = _configs("lstm")  # 6 trials
  one_at_a_time = rs.EngineOptions(trial_chunk=1)
  static = StaticConfig.from_params(rs.make_trials(configs)[0].params)
  monkeypatch.setattr(placement, "usable_cores", lambda: 3)
  prog = engine.Program(static, tiny_lm, one_at_a_time)
  assert [prog.parts(k) for k in (6, 5, 4, 2, 1)] == [3, 1, 2, 2, 1]
  # A CPU split into devices: each device's share of the cores.
  real_count = jax.local_device_count
  monkeypatch.setattr(jax, "local_device_count",
                      lambda backend=None: 3 if backend == "cpu" else 1)
  assert prog.parts(6) == 1
  monkeypatch.setattr(placement, "usable_cores", lambda: 8)
  assert prog.parts(6) == 2
  monkeypatch.setattr(jax, "local_device_count", real_count)
  monkeypatch.setattr(placement, "usable_cores", lambda: 3)
  # Vmapped whole (tiny trials' chunk) or chunks of 4 of 6 (3): no more
  # pieces than chunks.
  assert engine.Program(static, tiny_lm, rs.EngineOptions(
      trial_chunk=0)).parts(6) == 1
  assert engine.Program(static, tiny_lm, rs.EngineOptions(
      trial_chunk=4)).parts(6) == 2
  trials = rs.make_trials(configs)
  state = prog.init(engine.seed_array([t.seed for t in trials]),
                    engine.hparam_arrays([t.params for t in trials]))
  data = tiny_lm.data()
  exe = prog.compiled_segment(state, data.train, engine.data_key(0))
  assert exe.executable.args_info[0][0].trials.step.shape == (2,)  # a piece
  called = []

  def runs():
    monkeypatch.setattr(engine, "_PROGRAMS", type(engine._PROGRAMS)())  # pylint: disable=protected-access
    return rs.run_trials(tiny_lm, configs, steps=16, eval_every=8,
                         max_group_size=6, options=one_at_a_time)

  real_split = engine._split_slots  # pylint: disable=protected-access

  def split(p):
    called.append(p)
    return real_split(p)

  monkeypatch.setattr(engine, "_split_slots", split)
  pieces = runs()
  # Both segments, both validations and the test ran in 3 pieces.
  assert called == [3] * 5
  monkeypatch.setattr(engine.Program, "parts", lambda self, k: 1)
  whole = runs()
  for a, b in zip(pieces.trials, whole.trials, strict=True):
    assert a.curves == b.curves and a.test_value == b.test_value


def test_trial_chunk_for_a_group():
  opts = engine.EngineOptions
  assert opts(trial_chunk=0).chunk_for(6, "cpu") == 6
  assert opts(trial_chunk=4).chunk_for(6, "cpu") == 3
  assert opts(trial_chunk=5).chunk_for(7, "gpu") == 1
  assert opts(trial_chunk=8).chunk_for(6, "cpu") == 6
  # auto: the whole group on an accelerator; on a CPU, chunks whose
  # batched recurrent matmul has about engine.CPU_CHUNK_MACS multiply-adds.
  assert opts().chunk_for(64, "gpu", step_macs=10**9) == 64
  lstm128 = 32 * 4 * 128**2  # batch 32
  assert opts().chunk_for(32, "cpu", step_macs=lstm128) == 1
  lstm32 = 32 * 4 * 32**2
  assert engine.CPU_CHUNK_MACS // lstm32 == 7
  assert opts().chunk_for(32, "cpu", step_macs=lstm32) == 4
  assert opts().chunk_for(30, "cpu", step_macs=lstm32) == 6
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(ValueError, match="trial_chunk must be 'auto' or an "
                       "integer >= 0"):
      opts(trial_chunk=bad)
  assert engine.parse_trial_chunk("3") == 3
  assert engine.parse_trial_chunk("auto") == "auto"
  with pytest.raises(ValueError, match="--trial_chunk must be"):
    engine.parse_trial_chunk("three", "--trial_chunk")
