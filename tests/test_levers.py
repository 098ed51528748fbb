"""Speed levers keep the numbers: unroll, donation, bfloat16 compute, and
the persistent compilation cache."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import rnnsweep as rs
from conftest import TINY, subprocess_env

# The simple cell's carry dtype needs a cast under bfloat16 (the gated
# cells' carries stay float32 by promotion): cover one of each.
CONFIGS = [dict(TINY, cell=c, learning_rate=lr, output_dropout=0.1,
                recurrent_dropout=0.1)
           for c in ("simple", "lstm") for lr in (1e-3, 5e-3)]


@pytest.fixture(scope="module")
def baseline(tiny_lm):
  return rs.run_trials(tiny_lm, CONFIGS, steps=24, eval_every=8,
                       max_group_size=2)


def _compare(a, b, rtol):
  for ra, rb in zip(a.trials, b.trials):
    assert ra.status == rb.status
    for k in ra.curves:
      np.testing.assert_allclose(rb.curves[k], ra.curves[k], rtol=rtol,
                                 atol=0, err_msg=f"{ra.trial_id} {k}")


@pytest.mark.parametrize("options, rtol", [
    (rs.EngineOptions(unroll=4), 1e-5),
    (rs.EngineOptions(donate=True), 0.0),  # the same program: bit for bit
    # bfloat16 keeps ~3 significant digits in matmuls; parameters,
    # optimizer state, carries and losses stay float32.
    (rs.EngineOptions(compute_dtype="bfloat16"), 2e-2),
])
def test_lever_keeps_the_numbers(tiny_lm, baseline, options, rtol):
  r = rs.run_trials(tiny_lm, CONFIGS, steps=24, eval_every=8,
                    max_group_size=2, options=options)
  _compare(baseline, r, rtol)


def test_hoisted_input_projection_keeps_the_numbers(tiny_lm, baseline):
  # The same function with the input matmul moved out of the time loop
  # (every cell is checked against the scan in test_models; here the
  # engine's training and evaluation paths, on the LSTM half).
  lstm = rs.make_trials([{**tiny_lm.base_params(), **c}
                         for c in CONFIGS])[2:]  # ids and seeds 2, 3 kept
  assert {t.params["cell"] for t in lstm} == {"lstm"}
  settings = rs.SweepSettings.make(
      tiny_lm, sampler="explicit", space=None, num_trials=2, steps=24,
      eval_every=8, max_group_size=2, seed=0,
      options=rs.EngineOptions(hoist_input=True))
  r = rs.execute(tiny_lm, lstm, settings)
  assert [t.trial_id for t in r.trials] == [2, 3]
  _compare(dataclasses.replace(baseline, trials=baseline.trials[2:]), r, 1e-5)


def test_bfloat16_group_equals_alone(tiny_lm):
  bf16 = rs.EngineOptions(compute_dtype="bfloat16")
  together = rs.run_trials(tiny_lm, CONFIGS[2:4], steps=16, eval_every=8,
                           max_group_size=2, options=bf16)
  alone = rs.run_trials(tiny_lm, CONFIGS[2:4], steps=16, eval_every=8,
                        max_group_size=1, options=bf16)
  _compare(together, alone, 1e-2)


def test_bad_options():
  with pytest.raises(ValueError, match="compute_dtype"):
    rs.EngineOptions(compute_dtype="float16")
  with pytest.raises(ValueError, match="unroll"):
    rs.EngineOptions(unroll=0)


_CACHED_RUN = """
import sys
import rnnsweep as rs
from rnnsweep import engine
engine.enable_compilation_cache(sys.argv[1])
with engine.count_compiles() as compiles:
    r = rs.run_trials(rs.Adding(seq_len=6, num_val=8),
                      [dict(hidden_size=4, batch_size=2, learning_rate=lr)
                       for lr in (1e-3, 1e-2)], steps=4, eval_every=2)
print(compiles.count, r.trials[1].curves["val/mse"][-1])
"""


def test_persistent_cache_compiles_once_across_processes(tmp_path):
  runs = [subprocess.run([sys.executable, "-c", _CACHED_RUN,
                          str(tmp_path / "xla")], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300,
                         check=False) for _ in range(2)]
  for r in runs:
    assert r.returncode == 0, r.stderr[-2000:]
  (first_count, first_mse), (second_count, second_mse) = (
      r.stdout.split() for r in runs)
  assert int(first_count) > 0
  assert int(second_count) == 0  # every program came from the cache
  assert first_mse == second_mse
