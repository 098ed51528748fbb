"""A group's trial axis sharded over several devices (4 CPU devices forced
in a child process): the state really is sharded, padding slots never
reach the store, groups of two static configurations train at the same
time on disjoint device sets, the numbers equal one device's, and a sweep
killed on 4 devices continues on 3."""

import collections
import glob
import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import rnnsweep as rs
from conftest import ROOT, TINY, subprocess_env

CHILD = os.path.join(ROOT, "tests", "devices_child.py")
FOUR = "--xla_force_host_platform_device_count=4"


def child(mode, workdir, devices, configs, kill_at=None):
  env = subprocess_env(XLA_FLAGS=FOUR, **(
      {"RNNSWEEP_KILL_AT": kill_at} if kill_at else {}))
  return subprocess.run([sys.executable, CHILD, mode, str(workdir), devices,
                         str(configs)],
                        capture_output=True, text=True, env=env, timeout=600,
                        check=False)


def facts_of(out):
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def assert_same_curves(a, b):
  assert a.keys() == b.keys()
  for tid in a:
    assert a[tid].keys() == b[tid].keys()
    for k in a[tid]:
      np.testing.assert_allclose(a[tid][k], b[tid][k], rtol=1e-5,
                                 err_msg=f"trial {tid} {k}")


def test_sharded_groups_equal_one_device(tmp_path):
  out = child("check", tmp_path, "all", 4)
  facts = facts_of(out)
  assert facts["devices"] == 4
  # K=8 over 4 devices: every leaf of the state, the segment's metrics and
  # the evaluation is split along the trial axis, 2 rows on each device.
  for what in ("init", "segment", "segment_metrics", "evaluate"):
    assert facts[what] == [[4, [2], "P('trials',)"]], what
  # Each device training its 2 slots one at a time (trial_chunk=1): the
  # same numbers, sharded the same way.
  assert facts["chunked"] == [[[4, [2], "P('trials',)"]]] * 2
  assert facts["chunk_error"] < 1e-5
  # Compiled at once (EngineOptions.compile_at_once): the same sharding,
  # nothing compiled by the calls, the same numbers bit for bit.
  assert facts["at_once"] == [[[4, [2], "P('trials',)"]]] * 2 + [0]
  assert facts["at_once_equal"]
  assert facts["auto"] == 8  # 6 trials, padded to a multiple of 4
  # Two static configurations of 2 trials, sized by auto for two lanes of
  # 2 devices (planned: side by side, a slot per device, beats one lane
  # of 4 slots each), which train them at the same time.
  for cell, ids in (("lstm", "0,1"), ("gru", "2,3")):
    assert re.search(rf"auto group size for {cell}\(\S+ .* on devices "
                     rf"{ids}: K=2 for 2 trials", out.stderr), cell
  # Why: one lane would take an LSTM's and a GRU's time, 2+2 an LSTM's:
  # 1 + GRU/LSTM, between 1.75 (recurrence only, 3 gates against 4) and
  # 2 (output layer only).
  why = re.search(r"lane plan for 4 CPU devices, .*: one lane (\S+), "
                  r"lanes of 2\+2 1\.00 \(chosen\)\n", out.stderr)
  assert why and 1.75 <= float(why.group(1)) < 2, out.stderr[:2000]
  assert out.stderr.count("lane plan") == 1
  assert facts["stored_trials"] == list(range(4))
  assert facts["csv_rows"] == 4
  assert "on 4 devices (cpu) in 1 process" in out.stderr
  # The CPU is already split (the one-device runs chose 1 of the 4): no
  # hint to split it.
  assert "hint:" not in out.stderr
  assert ("placement: 2 groups at a time on disjoint device sets (2+2 "
          "devices)") in out.stderr
  assert out.stderr.count("K=2 over 2 devices (2 slots)") == 2
  a, b = sorted(facts["groups"], key=lambda g: g["group"])
  assert (a["devices"], b["devices"]) == ([0, 1], [2, 3])  # their homes
  for g in (a, b):
    # The training segment and both evaluations the sizer compiled on
    # the group's devices are the ones it runs: none compiled again.
    assert g["compiled"] and not {"jit(_segment)", "jit(_evaluate)"} & set(
        g["compiled"]), g["compiled"]
  assert a["start"] < b["end"] and b["start"] < a["end"]  # overlapping
  assert_same_curves(facts["sharded"], facts["one_device"])
  assert len(facts["sharded"]) == 4
  finals = {round(c["val/bits_per_char"][-1], 4)
            for c in facts["sharded"].values()}
  assert len(finals) == 4  # the trials really differ


class _Device:
  def __init__(self, platform):
    self.platform = platform


def test_a_cpu_of_several_cores_as_one_device_gets_a_hint_to_split_it():
  cpu = [_Device("cpu")]  # this process has one CPU device (jax's default)
  hint = rs.placement.cpu_split_hint(cpu, num_trials=16, cores=2)
  assert hint.startswith("hint: this CPU's 2 cores are one JAX device")
  # What to do, in the script, in Python and in plain JAX.
  assert "--cpu_devices=auto in experiments/sweep.py" in hint
  assert "rs.placement.split_cpu(2)" in hint
  assert hint.endswith("XLA_FLAGS=--xla_force_host_platform_device_count=2")
  # No more devices than trials.
  assert "split_cpu(3)" in rs.placement.cpu_split_hint(cpu, 3, cores=8)
  # Nothing to gain, or a choice made: one core, one trial, an
  # accelerator, several devices.
  assert rs.placement.cpu_split_hint(cpu, 16, cores=1) is None
  assert rs.placement.cpu_split_hint(cpu, 1, cores=4) is None
  assert rs.placement.cpu_split_hint([_Device("gpu")], 16, cores=4) is None
  assert rs.placement.cpu_split_hint(cpu * 2, 16, cores=4) is None
  assert rs.placement.usable_cores() >= 1


def test_auto_cpu_devices_are_one_per_core_at_most_one_per_trial():
  count = rs.placement.cpu_device_count
  assert count("auto", num_trials=16, cores=8) == 8
  assert count("auto", num_trials=3, cores=8) == 3
  assert count("auto", cores=8) == 8  # the trials unknown
  assert count("auto", num_trials=0, cores=8) == 1
  assert count(5, num_trials=2, cores=8) == 5  # a number is the user's
  assert count("6", num_trials=2, cores=8) == 6
  assert count("auto", num_trials=4) == min(4, rs.placement.usable_cores())


def test_the_cpu_cannot_be_split_once_jax_has_started():
  jax.devices("cpu")  # this process's backend has started
  with pytest.raises(ValueError, match=(
      r"^cpu_devices: JAX has already started with 1 CPU device\(s\), so "
      r"its CPU cannot be split into 3 now; split it before any JAX "
      r"operation$")):
    rs.placement.split_cpu(3)
  assert rs.placement.split_cpu(1) == 1  # what it has: nothing to change
  with pytest.raises(ValueError, match="^cpu_devices must be 'auto' or a "
                     "positive integer, got -1$"):
    rs.placement.split_cpu(-1)


class _Lane:
  def __init__(self, i):
    self.id, self.platform = i, "cpu"


def _static(cell, hidden=16):
  return rs.StaticConfig.from_params(dict(
      rs.make_trials([dict(cell=cell, hidden_size=hidden)])[0].params))


def test_auto_sizes_each_bucket_on_its_home_lane_in_turn(tiny_lm):
  lanes = [[_Lane(0), _Lane(1)], [_Lane(2), _Lane(3)]]
  lines = []
  sizer = rs.sizing.AutoSizer(tiny_lm, steps=1, lanes=lanes, log=lines.append)
  seen = []
  sizer.choose = lambda static, trials: (
      seen.append([d.id for d in sizer.devices]) or
      rs.sizing.Choice(2, None, {}, "K=2 for 2 trials"))
  buckets = [_static("lstm"), _static("gru"), _static("simple"),
             _static("lstm")]
  ks = [sizer(b, []) for b in buckets]
  assert ks == [2, 2, 2, 2]
  # Lanes in turn; a bucket seen before keeps its home.
  assert sizer.homes == {buckets[0]: 0, buckets[1]: 1, buckets[2]: 0}
  assert seen == [[0, 1], [2, 3], [0, 1], [0, 1]]
  assert lines[1] == (f"auto group size for {buckets[1].label()} on devices "
                      f"2,3: K=2 for 2 trials")
  with pytest.raises(ValueError, match="devices or lanes, not both"):
    rs.sizing.AutoSizer(tiny_lm, steps=1, lanes=lanes, devices=lanes[0])
  # Homes planned for it (placement.plan_lanes) come first.
  lines.clear()
  planned = rs.sizing.AutoSizer(tiny_lm, steps=1, lanes=lanes,
                                homes={buckets[1]: 0, buckets[2]: 1},
                                why="lane plan for 4 CPU devices: ...",
                                log=lines.append)
  seen.clear()
  planned.choose = lambda static, trials: (
      seen.append([d.id for d in planned.devices]) or
      rs.sizing.Choice(2, None, {}, "K=2 for 2 trials"))
  for b in buckets[:3]:
    planned(b, [])
  # buckets[0], not planned, takes the next lane in turn (the first).
  assert planned.homes == {buckets[0]: 0, buckets[1]: 0, buckets[2]: 1}
  assert seen == [[0, 1], [0, 1], [2, 3]]
  # The plan's reason, once, before the first size.
  assert lines[0] == "lane plan for 4 CPU devices: ..."
  assert len(lines) == 4 and lines[1].startswith("auto group size for")
  with pytest.raises(ValueError, match=r"^AutoSizer homes must index its 2 "
                     r"lanes, got \[0, 2\]$"):
    rs.sizing.AutoSizer(tiny_lm, steps=1, lanes=lanes,
                        homes={buckets[0]: 2, buckets[1]: 0})


def test_a_lane_takes_its_home_groups_first_then_any():
  a, b, c = _static("lstm"), _static("gru"), _static("simple")
  groups = [rs.Group(i, s, (), 1) for i, s in enumerate([a, a, b, c])]
  shared = rs.runner._Shared(collections.deque(groups), 4, {a: 0, b: 1})
  order = [shared.next_group(lane) for lane in (1, 1, 0, 1, 0)]
  # Lane 1 takes b (its own), then the first of the rest; lane 0 its
  # second a, lane 1 c (no home); then nothing is left.
  assert [g.group_id if g else None for g in order] == [2, 0, 1, 3, None]
  # No homes (a fixed K, or groups read back from a store): in order.
  plain = rs.runner._Shared(collections.deque(groups), 4)
  assert [plain.next_group(1).group_id for _ in groups] == [0, 1, 2, 3]


def _ids(lanes):
  return [[d.id for d in lane] for lane in lanes]


def test_cpu_lanes_are_planned_for_the_least_time():
  plan = rs.placement.plan_lanes
  two, four = [_Lane(i) for i in range(2)], [_Lane(i) for i in range(4)]
  # The default sweep's buckets, 5 LSTM and 11 GRU trials (a trial's cost
  # 4:3). Side by side the GRUs take 11*3 = 33 on one device; sharded over
  # both, 3*4 + 6*3 = 30 (one LSTM slot of padding).
  p = plan(two, [(4.0, 5), (3.0, 11)])
  assert (_ids(p.lanes), p.homes) == ([[0, 1]], [0, 0])
  assert p.why == ("lane plan for 2 CPU devices, each layout's estimated "
                   "time (from the trials' FLOPs) against the chosen one: "
                   "one lane 1.00 (chosen), lanes of 1+1 1.10")
  # Four groups of one trial: sharded, each pads to 2 slots (4+4+3+3 =
  # 14); side by side, 4+3 on each device (7), the largest first.
  p = plan(two, [(3.0, 1), (4.0, 1), (3.0, 1), (4.0, 1)])
  assert (_ids(p.lanes), p.homes) == ([[0], [1]], [0, 0, 1, 1])
  assert p.why.endswith(": one lane 2.00, lanes of 1+1 1.00 (chosen)")
  # Three equal groups on four devices: one lane (3*2 = 6) against 2+2
  # (4+4 on one lane: 8) or 2+1+1 (8 on each one-device lane).
  p = plan(four, [(1.0, 8)] * 3)
  assert (_ids(p.lanes), p.homes) == ([[0, 1, 2, 3]], [0, 0, 0])
  assert p.why.endswith(": one lane 1.00 (chosen), lanes of 2+2 1.33, "
                        "lanes of 2+1+1 1.33")
  # Equal time either way (8), side by side.
  p = plan(two, [(4.0, 8), (4.0, 8)])
  assert (_ids(p.lanes), p.homes) == ([[0], [1]], [0, 1])
  # A GPU: a lane per group while devices last, groups in turn.
  gpus = [_Device("gpu") for _ in range(4)]
  p = plan(gpus, [(4.0, 5), (3.0, 11), (3.0, 1)])
  assert [len(l) for l in p.lanes] == [2, 1, 1] and p.homes == [0, 1, 2]
  assert p.why == ""  # nothing weighed
  assert plan(two[:1], [(1.0, 3)] * 2) == ([two[:1]], [0, 0], "")
  assert plan(two, [(1.0, 3)]).why == ""  # one group: one layout


def test_groups_sized_for_lanes_keep_them(tiny_lm):
  devices = [_Lane(i) for i in range(4)]
  lstm, gru = _static("lstm"), _static("gru")
  one_bucket = [rs.Group(i, lstm, (None,) * 8, 8) for i in range(3)]
  # What auto sized a bucket for: its lanes and homes, whatever a plan
  # for the groups would say.
  sized = rs.sizing.AutoSizer.__new__(rs.sizing.AutoSizer)
  sized.lanes, sized.homes = _ids([devices[:2], devices[2:]]), {lstm: 1}
  lanes_to_run = rs.runner._lanes_to_run
  assert lanes_to_run(devices, tiny_lm, one_bucket, sized) == (
      sized.lanes, {lstm: 1}, "")  # the sizer said why
  # A fixed K, or nothing sized (a resumed sweep): planned for the groups.
  # Three of 8 trials: one lane, each sharded over all four devices.
  sized.homes = {}
  for s in (sized, None):
    lanes, homes, why = lanes_to_run(devices, tiny_lm, one_bucket, s)
    assert (_ids(lanes), homes) == ([[0, 1, 2, 3]], {lstm: 0})
    assert why.startswith("lane plan for 4 CPU devices")
  # Small groups: a lane each (2+1+1 lanes take as long: the most lanes);
  # a bucket's home is its largest group's lane (of equal ones, the first).
  small = [rs.Group(i, s, (None,) * k, k) for i, (s, k) in
           enumerate([(lstm, 1), (gru, 1), (lstm, 1), (gru, 2)])]
  lanes, homes, _ = lanes_to_run(devices, tiny_lm, small, None)
  assert (_ids(lanes), homes) == ([[0], [1], [2], [3]], {gru: 0, lstm: 1})
  # What auto sizes for: the buckets, each counted as one group: 2 LSTMs
  # and a GRU side by side (one slot each on 2+2 devices), not sharded
  # over four (a slot per device, two groups one after another).
  trials = rs.make_trials([dict(TINY, cell=c) for c in ("lstm", "gru", "lstm")])
  lanes, homes, _ = rs.runner._lanes_to_size(devices, tiny_lm, trials)
  assert _ids(lanes) == [[0, 1], [2, 3]]
  assert homes == {rs.StaticConfig.from_params(trials[0].params): 0,
                   rs.StaticConfig.from_params(trials[1].params): 1}


def test_sweep_killed_on_four_devices_continues_on_three(tmp_path):
  # One group (3 trials): 4 slots on 4 devices, then 6 on 3.
  killed = child("sweep", tmp_path, "all", 3, kill_at="segment_done:2")
  assert killed.returncode == -9, killed.stderr[-2000:]
  # The first group was checkpointed after its first evaluation (4 slots).
  ckpts = glob.glob(os.path.join(tmp_path, "checkpoints", "group00000-*"))
  assert ckpts
  out = child("compare", tmp_path, "3", 3)
  facts = facts_of(out)
  assert "continuing the sweep" in out.stderr
  # From its checkpoint, not from scratch: 4 slots written, 6 on 3 devices.
  assert ("group 1 continues from its checkpoint after evaluation 1 "
          "(4 slots, 6 on 3 devices)") in out.stderr
  assert "on 3 devices (cpu)" in out.stderr
  assert_same_curves(facts["sharded"], facts["one_device"])
  stored = rs.Store(str(tmp_path)).results()
  assert sorted(r.trial_id for r in stored) == list(range(3))
  assert all(math.isfinite(r.best_value) for r in stored)
