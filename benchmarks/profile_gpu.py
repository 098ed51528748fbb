"""Where a training tick's time goes: a ``jax.profiler`` trace of one S and
one L segment (plus the validation pass and the best-parameter update that
follow it), broken down by what the program was doing.

Each executed XLA op is attributed through its HLO metadata (``op_name``)
to the engine's named scopes (``rnnsweep.engine.PROFILE_SCOPES``): the
recurrence (split into its matmuls and its gate/elementwise work, or its
fused kernels with ``--recurrence=pallas``), dropout masks, the optimizer,
divergence checks and the data window; ops outside them are the rest of
the model and loss (split into matmuls and elementwise). Evaluation and
the best-parameter bookkeeping are their own programs. ``gaps`` is the
wall time of the tick that no op covers: launch overhead, loop control and
host work. Runs on a CPU too (the op timings of XLA's CPU thunks), so it
can be checked anywhere; the numbers that matter come from a GPU.

  python benchmarks/profile_gpu.py --workloads=S,L --precision=bfloat16 --unroll=8
  python benchmarks/profile_gpu.py --workloads=S --ks=8 --updates=2    # a CPU check
"""

import collections
import dataclasses
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

import rnnsweep as rs
from rnnsweep import bench
from rnnsweep import engine

_WORKLOADS = flags.DEFINE_list("workloads", ["S", "L"], "Workloads to "
                               "profile (see rnnsweep/bench.py).")
_KS = flags.DEFINE_list("ks", None, "Group size per workload (default: "
                        "1024 for S, 256 for L; 4 and 2 for the toys).")
_UPDATES = flags.DEFINE_integer("updates", 10, "Updates in the traced "
                                "segment.", lower_bound=1)
_TOP = flags.DEFINE_integer("top", 8, "Slowest ops to list per workload.",
                            lower_bound=0)
_ENGINE = bench.define_engine_flags()
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON (and the "
                               "trace) go.")

DEFAULT_K = {"S": 1024, "L": 256, "toyS": 4, "toyL": 2}
#: Ops that only contain others (their time is their children's).
CONTAINERS = {"while", "conditional", "call", "async-start", "async-done"}
MATMUL = re.compile(
    r"\b(dot|convolution)\(|gemm|cublas|nvjet|cutlass|matmul|__triton")
#: A command buffer's copy and memset nodes, as the trace names them.
COPY_KERNEL = re.compile(r"(memcpy|memset)", re.IGNORECASE)
INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([\w\-]+)\((.*)$")
OP_NAME = re.compile(r'op_name="([^"]*)"')


CALLS = re.compile(r"calls=%?([\w.\-]+)")
#: The fused recurrence's kernels (``--recurrence=pallas``): one op each on
#: a GPU, the ops of its interpreted loop on a CPU, named as the kernels.
FUSED_KERNEL = re.compile(r"pallas_call|fused_(simple|lstm|gru)_(forward|backward)")


def hlo_ops(text: str) -> dict[str, tuple[str, str, bool]]:
  """``instruction name -> (opcode, op_name, is a matmul)`` of an
  optimized HLO module's text. A fusion is a matmul when the computation
  it calls holds a dot (its metadata is its root's, and some passes drop
  it)."""
  with_dot, computation = set(), None
  for line in text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      computation = line.split()[1 if line.startswith("ENTRY") else 0
                                 ].lstrip("%")
    elif computation and MATMUL.search(line):
      with_dot.add(computation)
  out = {}
  for line in text.splitlines():
    m = INSTRUCTION.match(line)
    if not m:
      continue
    name, opcode, rest = m.groups()
    op_name = OP_NAME.search(rest)
    op_name = op_name.group(1) if op_name else ""
    calls = CALLS.search(rest)
    out[name] = (opcode, op_name,
                 bool(MATMUL.search(opcode + "(" + rest.split("calls=")[0]))
                 or (calls is not None and calls.group(1) in with_dot)
                 or op_name.rsplit("/", 1)[-1].startswith("dot_general"))
  return out


def category(program: str, opcode: str, op_name: str, matmul: bool) -> str:
  """What an op was doing (see the module doc)."""
  if program != "segment":
    return program
  if not op_name:
    return "no metadata: matmuls" if matmul else "no metadata: other"
  scopes = op_name.split("/")
  # A scope as named, or wrapped by transformations:
  # ``transpose(jvp(recurrence))`` is the recurrence's backward pass.
  found = next((s for s in engine.PROFILE_SCOPES
                if any(s in re.split(r"[()]", p) for p in scopes)), None)
  if opcode in ("copy", "copy-start", "copy-done"):
    return "copies"
  if found == "recurrence":
    if any(FUSED_KERNEL.fullmatch(p) for p in scopes):
      return "recurrence: fused kernel"
    return "recurrence: matmuls" if matmul else "recurrence: gates, other"
  if found is not None:
    return found.replace("_", " ")
  return "model/loss: matmuls" if matmul else "model/loss: other"


class Op(NamedTuple):
  """One executed op of a trace: its HLO instruction's name, seconds, and
  where the trace says it came from when the name is not an instruction
  (a kernel launched from a command buffer: its HLO module and op_name
  scope, either possibly empty)."""
  name: str
  seconds: float
  module: str = ""
  scope: str = ""


def kernel_ops(events) -> list[Op]:
  """The ops of a GPU device line's kernel events, each ``(kernel name,
  duration in ns, stats dict)``. A kernel's ``hlo_op`` stat names its
  instruction, but where XLA ran a stretch of the program as a command
  buffer (a CUDA graph; jax 0.11 does, by default) ``hlo_op`` names the
  buffer (``command_buffer_12``): the kernel's own name is then the fusion
  it runs, or a library's kernel (cuBLAS's ``nvjet_...``) with the
  ``name`` stat giving its op_name scope."""
  out = []
  for name, duration_ns, stats in events:
    hlo = str(stats.get("hlo_op") or "").lstrip("%")
    if not hlo:
      continue
    if hlo.startswith("command_buffer"):
      hlo = name.lstrip("%")
    out.append(Op(hlo, duration_ns * 1e-9, str(stats.get("hlo_module", "")),
                  str(stats.get("name", ""))))
  return out


def op_events(path: str) -> list[Op]:
  """Every executed op in a trace file: the device's "XLA Ops" line on a
  GPU, else its kernels (:func:`kernel_ops`), else (CPU) the XLA client
  threads' op events."""
  data = jax.profiler.ProfileData.from_file(path)
  planes = list(data.planes)
  devices = [p for p in planes if p.name.startswith("/device:")]
  out = []
  for plane in devices:
    lines = list(plane.lines)
    ops = [l for l in lines if l.name == "XLA Ops"]
    if ops:
      out += [Op(e.name.lstrip("%"), e.duration_ns * 1e-9)
              for l in ops for e in l.events]
      continue
    out += kernel_ops((e.name, e.duration_ns, dict(e.stats))
                      for line in lines for e in line.events)
  if out:
    return out
  for plane in planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if "XLA" not in line.name and "Cpu" not in line.name:
        continue
      # Op events only: not the runtime's own scopes (ThunkExecutor::...).
      out += [Op(e.name.lstrip("%"), e.duration_ns * 1e-9)
              for e in line.events
              if not e.name.startswith("end: ") and "::" not in e.name]
  return out


def profile(task: rs.Task, trials: list, options: rs.EngineOptions, *,
            updates: int, trace_dir: str, top: int = 8) -> dict:
  """One traced tick of a group of ``trials`` (one static configuration):
  the breakdown."""
  k = len(trials)
  static = rs.StaticConfig.from_params(trials[0].params)
  prog = engine.get_program(static, task, options)
  hp = engine.hparam_arrays([t.params for t in trials])
  state = prog.init(engine.seed_array([t.seed for t in trials]), hp)
  data = prog.put_replicated(task.data())
  key = prog.put_replicated(engine.data_key(0))
  value = np.zeros((k,), np.float32)
  programs = {
      "segment": prog.compiled_segment(state, data.train, key),
      "evaluation": prog.compiled_evaluate(state, data.val),
      "best-parameter bookkeeping": prog.compiled_keep_best(state, value)}

  def tick(state):
    state, _ = prog.segment(state, data.train, key, num_steps=updates)
    metrics = prog.evaluate(state, data.val)
    state = prog.keep_best(state, value)
    jax.block_until_ready((state, metrics))
    return state

  state = tick(state)  # warm
  texts = {name: c.executable.as_text() for name, c in programs.items()}
  ops, modules = {}, {}
  for name, text in texts.items():
    modules[text.split(None, 2)[1].rstrip(",")] = name  # "HloModule jit_x,"
    for op, info in hlo_ops(text).items():
      ops.setdefault(op, (name,) + info)
  before = set(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                         recursive=True))
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    state = tick(state)
  wall = time.perf_counter() - start
  path = sorted(set(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                              recursive=True)) - before)[-1]
  by = collections.defaultdict(lambda: [0.0, 0])
  slowest = collections.Counter()
  unknown = 0.0
  for name, seconds, module, scope in op_events(path):
    info = ops.get(name)
    if info is None and module in modules:
      # A command buffer's copies and library kernels: placed by the
      # program, and the library kernels by their scope.
      if COPY_KERNEL.match(name):
        info = (modules[module], "copy", scope, False)
      elif scope:
        info = (modules[module], "kernel", scope, bool(MATMUL.search(name)))
    if info is None:
      unknown += seconds
      continue
    program, opcode, op_name, matmul = info
    if opcode in CONTAINERS:
      continue
    cat = category(program, opcode, op_name, matmul)
    by[cat][0] += seconds
    by[cat][1] += 1
    slowest[(cat, name, op_name.rsplit("/", 2)[-1] if op_name else opcode)
            ] += seconds
  busy = sum(s for s, _ in by.values())
  rows = [{"category": c, "ms_per_update": 1e3 * s / updates,
           "share": s / wall, "ops_per_update": n / updates}
          for c, (s, n) in sorted(by.items(), key=lambda x: -x[1][0])]
  rows.append({"category": "gaps (launches, loop control, host)",
               "ms_per_update": 1e3 * max(wall - busy, 0.0) / updates,
               "share": max(wall - busy, 0.0) / wall, "ops_per_update": 0})
  return {"k": k, "updates": updates,
          "wall_s": wall, "busy_s": busy, "unmatched_s": unknown,
          "trial_steps_per_s": k * updates / wall, "rows": rows,
          "slowest": [{"category": c, "op": n, "what": what, "s": s}
                      for (c, n, what), s in slowest.most_common(top)],
          "trace": path}


def show(result: dict) -> None:
  print(f"\nworkload {result['workload']}, K={result['k']}, "
        f"{result['updates']} updates + validation + best-parameter update: "
        f"{result['wall_s'] * 1e3:.1f} ms ({result['trial_steps_per_s']:,.0f}"
        f" trial-steps/s while traced); ops cover "
        f"{result['busy_s'] / result['wall_s']:.0%}")
  print(f"  {'where':<38} {'ms/update':>10} {'share':>7} {'ops/update':>11}")
  for r in result["rows"]:
    print(f"  {r['category']:<38} {r['ms_per_update']:>10.3f} "
          f"{r['share']:>7.1%} {r['ops_per_update']:>11.1f}")
  if result["slowest"]:
    print("  slowest ops:")
    for s in result["slowest"]:
      print(f"    {s['s'] * 1e3:>9.3f} ms  {s['op']:<28} {s['category']}: "
            f"{s['what']}")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  names = [n.strip() for n in _WORKLOADS.value]
  bad = [n for n in names if n not in bench.WORKLOADS]
  if bad:
    sys.exit(f"profile_gpu.py: error: --workloads: unknown {bad[0]!r} "
             f"(known: {', '.join(sorted(bench.WORKLOADS))})")
  ks = [int(k) for k in _KS.value] if _KS.value else [DEFAULT_K[n]
                                                       for n in names]
  if len(ks) != len(names) or min(ks) < 1:
    sys.exit("profile_gpu.py: error: --ks: one positive group size per "
             "workload")
  options = _ENGINE()
  print(bench.device_header(options))
  trace_dir = (os.path.join(_OUT_DIR.value, "trace") if _OUT_DIR.value
               else tempfile.mkdtemp(prefix="rnnsweep-profile-"))
  results = []
  for name, k in zip(names, ks):
    w = dataclasses.replace(bench.WORKLOADS[name], updates=_UPDATES.value)
    results.append(dict(workload=name, **profile(
        bench.workload_task(w), rs.make_trials(bench.trial_configs(w, k)),
        options, updates=_UPDATES.value, trace_dir=trace_dir,
        top=_TOP.value)))
    show(results[-1])
  if _OUT_DIR.value:
    path = os.path.join(_OUT_DIR.value,
                        f"profile_{bench.options_tag(options)}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"header": bench.device_header(options), "results": results},
                f, indent=1)
    print(f"\nwrote {path} (traces under {trace_dir}: TensorBoard/XProf)")


if __name__ == "__main__":
  app.run(main)
