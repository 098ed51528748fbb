"""Choosing the group size K for ``max_group_size="auto"``.

One group of K trials is one compiled program, so K trades memory for
fewer compiles and (on accelerators) far higher throughput. ``auto`` picks
K per static configuration (per bucket of trials that share shapes):

- **Memory**, on every backend: every program a group runs (the training
  segment, validation, and the test split) is compiled ahead of time for
  the largest candidate K (the run reuses those executables) and the
  largest ``memory_analysis`` compared with the free memory (device memory
  on an accelerator, available RAM on a CPU), keeping
  :data:`MEMORY_FRACTION`.
  When it does not fit, a second compile at a small K gives the line
  ``bytes = a + b*K`` (temporaries grow linearly in K) and K is the largest
  that fits.
- **Speed**, on a CPU only. The engine's prior already removes what
  used to make vmap lose there: a CPU group runs its slots in trial
  chunks sized by the per-trial matmul (``EngineOptions.trial_chunk``,
  one trial at a time from LSTM(64), batch 32, upwards), so a trial
  trains about as fast in a group of 32 as alone and the largest K
  memory allows is the prior's choice (fewest compiles, evaluations and
  launches). What K still changes is timed when that pays: the largest
  K is timed for one update, and smaller K are compiled and timed too
  when that costs at most :data:`PROBE_BUDGET` of the bucket's estimated
  training time. The largest K within :data:`KEEP_WITHIN` of the fastest
  wins. A short sweep therefore never pays for probes it cannot recoup;
  one whose training would be short even at an optimistic speed
  (analytic FLOPs at :data:`OPTIMISTIC_CPU_FLOPS_PER_CORE`) is not timed
  at all and takes the prior. On accelerators the measured throughput
  rises with K until memory runs out, so no probe runs there.

On several devices (a group's slots sharded over them) the programs are
compiled sharded, so ``memory_analysis`` is per device and is compared with
one device's free memory (on a CPU, whose devices share the host's RAM,
with that RAM divided among them); the K cap is multiplied by the device
count and K is a multiple of it. Where the runner trains groups side by
side on disjoint device sets (lanes, planned for the buckets by
:func:`~rnnsweep.placement.plan_lanes`), each bucket is sized on the lane
it will train on, so the executables compiled here are the ones its
groups run.

A trial's numbers do not depend on K (vmap invariance), so the choice
changes only speed. A group that still runs out of memory is split and
retried by the runner.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax

from rnnsweep import distributed
from rnnsweep import engine
from rnnsweep import placement
from rnnsweep.groups import StaticConfig
from rnnsweep.samplers import TrialSpec
from rnnsweep.tasks.base import Task

AUTO = placement.AUTO
#: Largest K ``auto`` picks on a GPU/TPU (S saturates an H200 near 1024).
ACCELERATOR_MAX_GROUP_SIZE = 4096
#: Largest K ``auto`` picks on a CPU, where vmap buys little raw speed.
CPU_MAX_GROUP_SIZE = 64
#: Share of the free memory one group may plan to use.
MEMORY_FRACTION = 0.8
#: Probing smaller K on a CPU may cost at most this share of the bucket's
#: estimated training time.
PROBE_BUDGET = 0.03
#: A larger K is kept while its speed is at least this share of the best.
KEEP_WITHIN = 0.95
#: Each timed CPU probe runs at least this long.
PROBE_SECONDS = 0.25
#: An optimistic training speed per CPU core this process may run on
#: (:func:`placement.usable_cores`), in FLOP/s (XLA reached about 23 GFLOP/s
#: per core on workload S on a 2-core development machine): a
#: bucket whose training would be too short even at this speed to recoup a
#: probe is not timed at all.
OPTIMISTIC_CPU_FLOPS_PER_CORE = 100e9


def check_max_group_size(value: Any, name: str = "max_group_size"
                         ) -> int | str:
  """``"auto"`` or a positive integer (an integer string is accepted)."""
  return placement.auto_or_positive(value, name)


def even_size(n: int, k: int) -> int:
  """The padded size of each group when ``n`` trials split into groups of
  at most ``k`` (as :func:`~rnnsweep.groups.plan_groups` splits them)."""
  return math.ceil(n / math.ceil(n / k))


def free_memory_bytes(device: Any = None) -> int | None:
  """Memory a new program could use on ``device`` (default: the first), or
  ``None`` when it cannot be told."""
  device = device or jax.devices()[0]
  if device.platform != "cpu":
    try:
      stats = device.memory_stats() or {}
    except Exception:  # pylint: disable=broad-except
      stats = {}
    if "bytes_limit" in stats:
      return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return None
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


class Programs(NamedTuple):
  """A group's compiled programs at one K.

  Attributes:
    segment: the training segment.
    evaluations: validation and test.
  """

  segment: engine.Compiled
  evaluations: tuple[engine.Compiled, ...]

  @property
  def bytes(self) -> int | None:
    """Memory of the largest: a group must fit each in turn (``None``:
    unknown)."""
    sizes = [c.bytes for c in (self.segment, *self.evaluations)]
    return None if None in sizes else max(sizes)


@dataclasses.dataclass(frozen=True)
class Choice:
  """What ``auto`` chose for one bucket, and why.

  Attributes:
    k: the group size limit handed to the planner.
    memory_k: the largest K memory allows (``None``: not known).
    rates: measured trial-steps/s by K (CPU probes only).
    reason: one line for the log.
  """

  k: int
  memory_k: int | None
  rates: dict[int, float]
  reason: str


class AutoSizer:
  """``(static, trials) -> K`` for :func:`~rnnsweep.groups.plan_groups`.

  Args:
    task: the sweep's task.
    steps: updates per trial (to weigh a probe's cost against the work).
    options: engine options of the sweep's programs.
    data_seed: seed of the shared data stream (probes train on real
      batches).
    log: receives one line per decision.
    platform: overrides the device platform (tests).
    devices: the devices a group's slots are sharded over (``None``: the
      default device).
    lanes: instead of ``devices``, disjoint device sets that will train
      groups side by side (:func:`~rnnsweep.placement.plan_lanes`): each
      new bucket is given its lane in ``homes``, else the next lane in
      turn, as its home (:attr:`homes`) and sized, compiled and probed on
      that lane's devices, so its groups, trained there, find their
      programs compiled.
    homes: the index in ``lanes`` planned for each static configuration.
    why: how ``lanes`` were planned, logged before the first bucket's size.

  Attributes:
    homes: the index in ``lanes`` of each bucket sized so far.
  """

  def __init__(self, task: Task, *, steps: int,
               options: engine.EngineOptions | None = None,
               data_seed: int = 0, log: Callable[[str], None] | None = None,
               platform: str | None = None,
               devices: Sequence[Any] | None = None,
               lanes: Sequence[Sequence[Any]] | None = None,
               homes: Mapping[StaticConfig, int] | None = None,
               why: str = ""):
    if lanes is not None and devices is not None:
      raise ValueError("give AutoSizer devices or lanes, not both")
    self.lanes = [list(l) for l in lanes] if lanes else [devices]
    self._planned = dict(homes or {})
    if any(not 0 <= i < len(self.lanes) for i in self._planned.values()):
      raise ValueError(f"AutoSizer homes must index its {len(self.lanes)} "
                       f"lanes, got {sorted(set(self._planned.values()))}")
    self.homes: dict[StaticConfig, int] = {}
    self._why = why
    self.task = task
    self.steps = steps
    self.options = options or engine.EngineOptions()
    self.data_seed = data_seed
    self.log = log or (lambda _: None)
    self._on_lane(0, platform)

  def _on_lane(self, index: int, platform: str | None = None) -> None:
    devices = engine.shard_devices(self.lanes[index])
    self.devices = list(devices) if devices else None
    self.num_devices = len(self.devices) if self.devices else 1
    self.platform = platform or (self.devices or jax.devices())[0].platform

  def __call__(self, static: StaticConfig,
               trials: Sequence[TrialSpec]) -> int:
    if self._why and not self.homes:
      self.log(self._why)
    home = self.homes.setdefault(static, self._planned.get(
        static, len(self.homes) % len(self.lanes)))
    self._on_lane(home, self.platform)
    # Process 0 chooses for every process of a job (memory and speed
    # differ between hosts, and the groups must be the same everywhere).
    choice = distributed.on_leader(lambda: self.choose(static, trials))
    where = ""
    if len(self.lanes) > 1:
      ids = ",".join(str(d.id) for d in self.lanes[home])
      where = f" on device{'s' * (len(self.lanes[home]) > 1)} {ids}"
    self.log(f"auto group size for {static.label()}{where}: {choice.reason}")
    return choice.k

  # -- the decision -----------------------------------------------------------

  def choose(self, static: StaticConfig,
             trials: Sequence[TrialSpec]) -> Choice:
    """Chooses K for one bucket (``trials`` share ``static``)."""
    n = len(trials)
    cpu = self.platform == "cpu"
    cap = (CPU_MAX_GROUP_SIZE if cpu else ACCELERATOR_MAX_GROUP_SIZE
           ) * self.num_devices
    top = self._size(n, min(n, cap))
    prog = engine.get_program(static, self.task, self.options, self.devices)
    big = self.compile_programs(prog, trials, top)
    free = (free_memory_bytes(self.devices[0]) if self.devices
            else free_memory_bytes())
    if free is not None and cpu:
      free //= self.num_devices  # CPU devices share the host's memory
    memory_k = self._memory_limit(prog, trials, top, big, free)
    if memory_k is None:
      mem_text = "memory use unknown"
    elif memory_k < top:
      mem_text = (f"K={top} would need {big.bytes / 2**20:,.0f} MiB of "
                  f"{free / 2**20:,.0f} MiB free; memory allows K={memory_k}")
      top = self._size(n, memory_k)
    else:
      mem_text = (f"K={top} needs {big.bytes / 2**20:,.0f} MiB of "
                  f"{free / 2**20:,.0f} MiB free")
    if not cpu or top == 1:
      return Choice(top, memory_k, {}, f"K={top} for {n} trials ({mem_text})")
    if distributed.spans_processes(self.devices):
      # A probe is a program every process would have to run with it.
      return Choice(top, memory_k, {}, f"K={top} for {n} trials "
                    f"({mem_text}; no speed probe across processes)")
    # Another size costs about one segment compile plus an init compile.
    return self._probe_speed(prog, trials, top, memory_k, mem_text,
                             compile_cost=1.5 * big.segment.compile_seconds)

  def _size(self, n: int, k: int) -> int:
    """:func:`even_size`, padded to a multiple of the devices."""
    return placement.padded_size(even_size(n, max(1, k)), self.num_devices)

  def _inputs(self, trials: Sequence[TrialSpec], k: int):
    padded = (list(trials) * math.ceil(k / len(trials)))[:k]
    hp = engine.hparam_arrays([t.params for t in padded],
                              horizon=self.steps)
    seeds = engine.seed_array([t.seed for t in padded])
    return hp, seeds

  def compile_programs(self, prog: engine.Program,
                       trials: Sequence[TrialSpec], k: int) -> Programs:
    """Every program a group of ``k`` of ``trials`` (repeated as padding)
    runs, compiled from shapes alone (no device memory): the training
    segment, validation, and the test split on the best parameters (with
    ``compile_at_once``, side by side with the group's init and
    best-parameter update, which a group of ``k`` then finds compiled)."""
    hp, seeds = self._inputs(trials, k)
    data = self.task.data()
    key = engine.data_key(self.data_seed)
    if prog.options.compile_at_once:
      for compiling in prog.prepare(seeds, hp, data, key):
        compiling.result()
    state = engine.state_shape(prog, seeds, hp)
    return Programs(
        prog.compiled_segment(state, data.train, key),
        (prog.compiled_evaluate(state, data.val),
         prog.compiled_evaluate(state, data.test, best=True)))

  def _memory_limit(self, prog, trials, top: int,
                    big: Programs, free: int | None
                    ) -> int | None:
    if free is None or big.bytes is None:
      return None
    budget = MEMORY_FRACTION * free
    if big.bytes <= budget:
      return top
    small_k = placement.padded_size(max(1, top // 8), self.num_devices)
    small = self.compile_programs(prog, trials, small_k)
    per_trial = (big.bytes - small.bytes) / max(top - small_k, 1)
    if per_trial <= 0:
      return small_k
    fits = max(1, min(top - 1,
                      int((budget - small.bytes) / per_trial) + small_k))
    # The largest multiple of the devices that fits (at least one each).
    return max(self.num_devices, fits // self.num_devices * self.num_devices)

  def _rate(self, prog, trials, k: int, *, warm: bool) -> tuple[float, float]:
    """Trial-steps/s of ``k`` trials from the bucket, and the seconds the
    probe took, compile included."""
    start = time.perf_counter()
    hp, seeds = self._inputs(trials, k)
    data = prog.put_replicated(self.task.data())
    key = prog.put_replicated(engine.data_key(self.data_seed))
    state = prog.init(seeds, hp)
    # Compiled before any clock starts (a no-op for the K compiled already).
    prog.compiled_segment(state, data.train, key)
    updates = 1
    if warm:
      t0 = time.perf_counter()
      state, _ = prog.segment(state, data.train, key, num_steps=1)
      jax.block_until_ready(state)
      updates = max(1, math.ceil(PROBE_SECONDS /
                                 max(time.perf_counter() - t0, 1e-6)))
    t0 = time.perf_counter()
    state, _ = prog.segment(state, data.train, key, num_steps=updates)
    jax.block_until_ready(state)
    rate = k * updates / (time.perf_counter() - t0)
    return rate, time.perf_counter() - start

  def _probe_speed(self, prog, trials, top: int, memory_k, mem_text: str, *,
                   compile_cost: float) -> Choice:
    n = len(trials)
    # Even at an optimistic speed, would the bucket train long enough for
    # one more compile to stay within budget? If not, time nothing.
    fastest = (n * self.steps * prog.flops_per_update() /
               (OPTIMISTIC_CPU_FLOPS_PER_CORE * placement.usable_cores()))
    if compile_cost > PROBE_BUDGET * fastest:
      return Choice(top, memory_k, {}, (
          f"K={top} for {n} trials ({mem_text}; no speed probe: compiling "
          f"another size (~{compile_cost:.0f} s) is over {PROBE_BUDGET:.0%} "
          f"of even an optimistic ~{fastest:.0f} s of training)"))
    # The largest K is compiled already: one update times it.
    rates = {top: self._rate(prog, trials, top, warm=False)[0]}
    work = n * self.steps / rates[top]
    smaller = sorted({self._size(n, 4**i)
                      for i in range(math.ceil(math.log(top, 4)))} - {top})
    spent, estimate, skipped = 0.0, compile_cost, []
    for k in smaller:
      if spent + estimate > PROBE_BUDGET * work:
        skipped.append(k)
        continue
      rates[k], cost = self._rate(prog, trials, k, warm=True)
      spent += cost
      estimate = cost
    if len(rates) > 1:  # like with like: time the largest warm as well
      rates[top] = self._rate(prog, trials, top, warm=True)[0]
    best = max(rates.values())
    k = max(kk for kk, r in rates.items() if r >= KEEP_WITHIN * best)
    shown = ", ".join(f"K={kk} {r:.1f}" for kk, r in sorted(rates.items()))
    reason = (f"K={k} for {n} trials ({mem_text}; trial-steps/s measured: "
              f"{shown}")
    if skipped:
      reason += (f"; K={','.join(map(str, skipped))} not probed: about "
                 f"{estimate:.0f} s each, over {PROBE_BUDGET:.0%} of the "
                 f"~{work:.0f} s this bucket trains")
    return Choice(k, memory_k, rates, reason + ")")
