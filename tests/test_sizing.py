"""max_group_size=auto and the split-and-retry on out-of-memory.

No wall-clock time is asserted: the speed probe is checked for following
its own rule on whatever it measured, the memory fit against the compiled
program's own memory analysis."""

import collections
import os
import sqlite3
import sys

import jax
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import sizing
from rnnsweep.groups import StaticConfig
from conftest import TINY

CONFIGS = [dict(TINY, cell="lstm", learning_rate=lr, output_dropout=d)
           for lr, d in [(1e-3, 0.0), (3e-3, 0.1), (5e-3, 0.2), (2e-3, 0.3)]]


def _bucket(configs):
  trials = rs.make_trials(configs)
  return StaticConfig.from_params(trials[0].params), trials


@pytest.mark.parametrize("steps", [1, 40])
def test_short_sweep_takes_the_largest_group_without_probing(tiny_lm, steps):
  static, trials = _bucket(CONFIGS)
  choice = sizing.AutoSizer(tiny_lm, steps=steps).choose(static, trials)
  assert choice.k == len(trials)
  # A tiny model for 40 steps trains in far less time than a compile takes
  # even at a pessimistic speed: nothing else is compiled, nothing timed.
  assert choice.rates == {}
  assert "no speed probe" in choice.reason


def test_probe_budget_limits_what_is_compiled(tiny_lm, monkeypatch):
  static, trials = _bucket(CONFIGS)
  # Pretend the machine could be fast enough for a probe to pay, so the
  # largest K is timed; the real training estimate then rules K=1 out.
  monkeypatch.setattr(sizing, "OPTIMISTIC_CPU_FLOPS_PER_CORE", 1.0)
  choice = sizing.AutoSizer(tiny_lm, steps=40).choose(static, trials)
  assert choice.k == len(trials)
  assert list(choice.rates) == [len(trials)]
  assert "K=1 not probed" in choice.reason


def test_the_no_probe_bound_counts_the_cores_this_process_may_use(
    tiny_lm, monkeypatch):
  static, trials = _bucket(CONFIGS)
  # The speed that made the probe pay above, but on a (pretend) host whose
  # usable cores make even this bucket's training too short to recoup one.
  monkeypatch.setattr(sizing, "OPTIMISTIC_CPU_FLOPS_PER_CORE", 1.0)
  monkeypatch.setattr(rs.placement, "usable_cores", lambda: 10**15)
  choice = sizing.AutoSizer(tiny_lm, steps=40).choose(static, trials)
  assert choice.k == len(trials)
  assert choice.rates == {}
  assert "no speed probe" in choice.reason


def test_long_sweep_probes_smaller_groups_and_follows_its_rule(tiny_lm):
  static, trials = _bucket(CONFIGS)
  choice = sizing.AutoSizer(tiny_lm, steps=10**9).choose(static, trials)
  assert sorted(choice.rates) == [1, 4]
  assert all(r > 0 for r in choice.rates.values())
  best = max(choice.rates.values())
  keep = [k for k, r in choice.rates.items()
          if r >= sizing.KEEP_WITHIN * best]
  assert choice.k == max(keep)


def test_memory_limits_the_group(tiny_lm, monkeypatch):
  configs = [dict(CONFIGS[i % 4], learning_rate=1e-3 * (i + 1))
             for i in range(8)]
  static, trials = _bucket(configs)
  prog = engine.get_program(static, tiny_lm)
  sizer = sizing.AutoSizer(tiny_lm, steps=10, platform="gpu")
  def largest(k):
    p = sizer.compile_programs(prog, trials, k)
    return max(c.bytes for c in (p.segment, *p.evaluations))
  full, one = largest(8), largest(1)
  assert full > one
  budget = one + 0.4 * (full - one)  # room for about 3 of the 8 trials
  monkeypatch.setattr(sizing, "free_memory_bytes",
                      lambda: budget / sizing.MEMORY_FRACTION)
  choice = sizer.choose(static, trials)
  assert choice.rates == {}  # no speed probe off the CPU
  assert 1 < choice.memory_k < 8
  assert choice.k == sizing.even_size(8, choice.memory_k)
  chosen = sizer.compile_programs(prog, trials, choice.k)
  # Every program the group runs fits, evaluation included (at these
  # shapes evaluation needs more memory than training).
  biggest_eval = max(e.bytes for e in chosen.evaluations)
  assert max(chosen.segment.bytes, biggest_eval) <= budget
  assert biggest_eval > chosen.segment.bytes
  assert "memory allows" in choice.reason


def test_auto_is_the_default_and_changes_no_number(tiny_lm, monkeypatch):
  lines = []
  monkeypatch.setattr(rs.placement, "usable_cores", lambda: 3)
  before = engine.trace_counts().get("segment", 0)
  # 10 steps: segments of 4, 4 and 2 updates.
  auto = rs.run_trials(tiny_lm, CONFIGS, steps=10, eval_every=4,
                    log=lines.append)
  # The run reuses the executable auto compiled to read its memory.
  assert engine.trace_counts()["segment"] - before <= 1
  # Against each trial alone: another K, another executable.
  alone = rs.run_trials(tiny_lm, CONFIGS, steps=10, eval_every=4,
                        max_group_size=1)
  assert any(l.startswith("auto group size for lstm") for l in lines)
  # The run's log says how to use the CPU's (here 3) cores.
  assert any(l.startswith("hint: this CPU's 3 cores are one JAX device")
             and l.endswith("device_count=3") for l in lines)
  assert {r.group_id for r in auto.trials} == {0}
  assert len({r.group_id for r in alone.trials}) == 4
  for a, b in zip(auto.trials, alone.trials):
    assert a.curves.keys() == b.curves.keys()
    for k in a.curves:
      np.testing.assert_allclose(a.curves[k], b.curves[k], rtol=1e-5)
    for k in a.test_metrics:
      np.testing.assert_allclose(a.test_metrics[k], b.test_metrics[k],
                                 rtol=1e-5)


def _fake_oom_above(monkeypatch, limit):
  real = engine.Program.segment

  def segment(self, state, *args, **kwargs):
    k = jax.tree_util.tree_leaves(state.trials.params)[0].shape[0]
    if k > limit:
      raise RuntimeError(f"RESOURCE_EXHAUSTED: Out of memory while trying "
                         f"to allocate {k} trials")
    return real(self, state, *args, **kwargs)

  monkeypatch.setattr(engine.Program, "segment", segment)


def test_out_of_memory_splits_the_group_and_loses_nothing(tiny_lm, tmp_path,
                                                          monkeypatch):
  small = rs.run_trials(tiny_lm, CONFIGS, steps=8, eval_every=4,
                        max_group_size=2)
  _fake_oom_above(monkeypatch, 2)
  lines = []
  split = rs.run_trials(tiny_lm, CONFIGS, steps=8, eval_every=4,
                     max_group_size=4, workdir=str(tmp_path),
                     log=lines.append)
  assert not split.failed
  assert any("ran out of memory" in l and "K=2" in l for l in lines)
  # Same trials in groups of the same size: the same numbers, exactly.
  assert [r.curves for r in split.trials] == [r.curves for r in small.trials]
  assert [r.test_metrics for r in split.trials] == [
      r.test_metrics for r in small.trials]
  with sqlite3.connect(tmp_path / "results.db") as conn:
    rows = conn.execute("SELECT group_id, size, status FROM groups").fetchall()
    trial_groups = {g for (g,) in conn.execute(
        "SELECT group_id FROM trials")}
  assert sorted(rows) == [(1, 2, "done"), (2, 2, "done")]
  assert trial_groups == {1, 2}
  # Continuing the finished sweep finds nothing left to run.
  again = rs.run_trials(tiny_lm, CONFIGS, steps=8, eval_every=4,
                     max_group_size=4, workdir=str(tmp_path))
  assert [r.curves for r in again.trials] == [r.curves for r in split.trials]


def test_out_of_memory_in_evaluation_resumes_from_the_checkpoint(
    tiny_lm, tmp_path, monkeypatch):
  """The group ran a segment and checkpointed, then its evaluation ran out
  of memory: the halves continue from that checkpoint, not from step 0."""
  small = rs.run_trials(tiny_lm, CONFIGS, steps=12, eval_every=4,
                        max_group_size=2)
  real_evaluate, real_segment = engine.Program.evaluate, engine.Program.segment
  size = lambda state: jax.tree_util.tree_leaves(state.trials.params)[0].shape[0]
  evaluations, starts = collections.Counter(), []

  def evaluate(self, state, data, *, best=False):
    evaluations[size(state)] += 1
    if size(state) > 2 and evaluations[size(state)] == 2:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory in evaluation")
    return real_evaluate(self, state, data, best=best)

  def segment(self, state, *args, **kwargs):
    starts.append((size(state), int(np.max(state.step))))
    return real_segment(self, state, *args, **kwargs)

  monkeypatch.setattr(engine.Program, "evaluate", evaluate)
  monkeypatch.setattr(engine.Program, "segment", segment)
  lines = []
  split = rs.run_trials(tiny_lm, CONFIGS, steps=12,
                     eval_every=4, max_group_size=4, workdir=str(tmp_path),
                     checkpoint_seconds=0, log=lines.append)
  assert not split.failed
  assert any("from its checkpoint at step 4" in l for l in lines), lines
  # K=4 trained 0-4 and 4-8; each half of K=2 starts at 4, never at 0.
  assert starts[:2] == [(4, 0), (4, 4)]
  assert [s for k, s in starts if k == 2] == [4, 8, 4, 8]
  for a, b in zip(split.trials, small.trials):
    for k in a.curves:
      np.testing.assert_allclose(a.curves[k], b.curves[k], rtol=1e-5)
  assert os.listdir(tmp_path / "checkpoints") == []


def test_a_single_trial_out_of_memory_fails_without_crashing(
    tiny_lm, tmp_path, monkeypatch):
  _fake_oom_above(monkeypatch, 0)
  result = rs.run_trials(tiny_lm, CONFIGS[:2], steps=4,
                      eval_every=4, max_group_size=2, workdir=str(tmp_path))
  assert sorted(result.failed) == [0, 1]
  assert all("RESOURCE_EXHAUSTED" in e for e in result.failed.values())
  assert rs.Store(str(tmp_path)).status_counts() == {"failed": 2}


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads /proc/meminfo")
def test_free_memory_on_linux():
  free = sizing.free_memory_bytes()
  total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  assert 0 < free <= total
