"""Throughput measurement: the benchmark workloads and how they are timed.

The scripts in ``benchmarks/`` are thin wrappers around this module, so the
definitions below are the one place where the numbers' meaning is fixed.

Workloads (issue "Search throughput"):

- **S**: character LM, vocabulary 64, embedding (64) -> 1-layer LSTM(128)
  -> dense; batch 32, TBPTT window 32, Adam, 50 updates per trial, learning
  rates log-spaced 1e-4..1e-2, output dropout 0..0.5.
- **L**: as S with LSTM(512) and batch 128.
- **toyS**, **toyL**: toys (LSTM(16) and LSTM(32), batch 4 and 8, window
  8, vocabulary 16, 4 updates) standing for S and L when the GPU suite is
  rehearsed end to end on a CPU (``REHEARSE=1 bash
  benchmarks/gpu_suite.sh``); their numbers mean nothing.

FLOPs are counted analytically (``cost_analysis`` counts a scan's body
once): training ~ 3x forward = 6*G*H*(I+H) per layer per token plus 6*H*V
for the head, G = 4 (LSTM), 3 (GRU), 1 (simple).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from rnnsweep import engine
from rnnsweep import models
from rnnsweep.groups import plan_groups
from rnnsweep.samplers import make_trials
from rnnsweep.tasks.lm import CharLM, python_docs_text

@dataclasses.dataclass(frozen=True)
class Workload:
  """A benchmark configuration (one static program per K)."""

  name: str
  cell: str = "lstm"
  hidden: int = 128
  batch: int = 32
  window: int = 32
  vocab: int = 64
  embed: int = 64
  updates: int = 50

  def flops_per_trial_step(self) -> float:
    return models.training_flops(
        cell=self.cell, hidden_size=self.hidden, num_layers=1,
        input_size=self.embed, output_size=self.vocab,
        tokens=self.batch * self.window)


WORKLOADS = {"S": Workload("S"), "L": Workload("L", hidden=512, batch=128),
             "toyS": Workload("toyS", hidden=16, batch=4, window=8,
                              vocab=16, embed=8, updates=4),
             "toyL": Workload("toyL", hidden=32, batch=8, window=8,
                              vocab=16, embed=8, updates=4)}


def workload_task(w: Workload) -> CharLM:
  """The Python documentation text folded onto ``w.vocab`` symbols."""
  text = python_docs_text()
  chars = sorted(set(text))
  fold = {c: chr(0x100 + i % w.vocab) for i, c in enumerate(chars)}
  return CharLM(seq_len=w.window * 4, text="".join(fold[c] for c in text))


def trial_configs(w: Workload, k: int) -> list[dict[str, Any]]:
  """K trials: learning rates log-spaced 1e-4..1e-2, dropout 0..0.5."""
  lrs = np.logspace(-4, -2, k) if k > 1 else np.array([1e-3])
  drops = np.linspace(0.0, 0.5, k) if k > 1 else np.array([0.0])
  return [dict(cell=w.cell, hidden_size=w.hidden, batch_size=w.batch,
               truncation=w.window, embed_size=w.embed, optimizer="adam",
               learning_rate=float(lr), output_dropout=float(d))
          for lr, d in zip(lrs, drops)]


def define_engine_flags() -> Callable[[], engine.EngineOptions]:
  """Defines the benchmark scripts' engine flags (``--precision``,
  ``--unroll``, ``--donate``, ``--hoist_input``, ``--recurrence``,
  ``--trial_chunk``, ``--compile_at_once``) and
  returns a function giving their :class:`~rnnsweep.engine.EngineOptions`
  once the flags are parsed."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  # A benchmark measures the setting it names: float32, unroll 1, XLA
  # unless told (auto, the library's default, is one value among them).
  precision = flags.DEFINE_enum(
      "precision", "float32", [*engine.COMPUTE_DTYPES, engine.AUTO],
      "Compute dtype (auto: the engine's choice for this device).")
  unroll = flags.DEFINE_string("unroll", "1", "Scan unroll: a positive "
                               "integer or auto.")
  donate = flags.DEFINE_bool("donate", False, "Donate the state buffers.")
  hoist = flags.DEFINE_bool("hoist_input", False, "Hoist the input "
                            "projection out of the time loop.")
  recurrence = flags.DEFINE_enum(
      "recurrence", "xla", [*engine.RECURRENCES, engine.AUTO], "The time "
      "loop: xla (lax.scan), xla_vjp (lax.scan with the fused kernels' "
      "backward), pallas (the fused kernel; interpret mode off GPU) or "
      "auto (the kernel where the engine would choose it).")
  chunk = flags.DEFINE_string(
      "trial_chunk", engine.AUTO_CHUNK, "Slots vmapped together in a "
      "group: auto (all on an accelerator; on a CPU by matmul size), 0 "
      "(all), or a size.")
  at_once = flags.DEFINE_bool(
      "compile_at_once", False, "Compile a group's programs side by side "
      "in threads as it starts (EngineOptions.compile_at_once).")
  return lambda: engine.EngineOptions(
      compute_dtype=precision.value,
      unroll=engine.parse_unroll(unroll.value, "--unroll"),
      donate=donate.value, hoist_input=hoist.value,
      recurrence=recurrence.value,
      trial_chunk=engine.parse_trial_chunk(chunk.value, "--trial_chunk"),
      compile_at_once=at_once.value)


def options_tag(options: engine.EngineOptions) -> str:
  """E.g. ``bfloat16_u8_hoist_pallas``, for output file names (``auto``
  precision and unroll as chosen on this device; ``_auto``: the
  recurrence chosen per group)."""
  options = options.resolved()
  auto_chunk = options.trial_chunk == engine.AUTO_CHUNK
  return (f"{options.compute_dtype}_u{options.unroll}"
          f"{'_hoist' if options.hoist_input else ''}"
          f"{'_donate' if options.donate else ''}"
          # None for the XLA scan, the default.
          f"{'' if options.recurrence == 'xla' else '_' + options.recurrence}"
          f"{'_once' if options.compile_at_once else ''}"
          f"{'' if auto_chunk else '_c' + str(options.trial_chunk)}")


def device_header(options: engine.EngineOptions | None = None) -> str:
  dev = jax.devices()[0]
  # Options given with auto values say what auto chose here.
  picked = options.auto_line() if options is not None else None
  opts = (options or engine.EngineOptions()).resolved()
  return (f"device {dev.platform}:{dev.device_kind} x{jax.device_count()}; "
          f"jax {jax.__version__}; matmul precision "
          f"{jax.config.jax_default_matmul_precision or 'default'}; "
          f"compute {opts.compute_dtype}, unroll {opts.unroll}, donate "
          f"{opts.donate}, hoist_input {opts.hoist_input}, recurrence "
          f"{opts.recurrence}, trial_chunk {opts.trial_chunk}, "
          f"compile_at_once {opts.compile_at_once}" +
          (f"; {picked}" if picked else "") +
          (f"; XLA_FLAGS {os.environ['XLA_FLAGS']}"
           if os.environ.get("XLA_FLAGS") else ""))


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """One warm-up call of ``fn``, then the median of ``repeats`` timed
  calls, each fenced with ``block_until_ready``."""
  _timed(fn)
  return statistics.median(_timed(fn) for _ in range(repeats))


def measure_group(w: Workload, k: int, *, repeats: int = 3,
                  options: engine.EngineOptions | None = None,
                  task: CharLM | None = None,
                  devices: Any = None) -> dict[str, Any]:
  """Compile time, steady-state speed and memory of one group of K.

  The segment is compiled ahead of time, so compile time is reported
  apart; then ``w.updates`` updates run once to warm up and ``repeats``
  times timed (median), each fenced with ``block_until_ready``. With
  ``devices`` the group's trial axis is sharded over them (K a multiple of
  their number; memory is then per device).
  """
  options = options or engine.EngineOptions()
  task = task or workload_task(w)
  trials = make_trials(trial_configs(w, k))
  group = plan_groups(trials, k)[0]
  prog = engine.get_program(group.static, task, options, devices)
  hp = engine.hparam_arrays([t.params for t in trials])
  seeds = engine.seed_array([t.seed for t in trials])
  data = prog.put_replicated(task.data())
  key = prog.put_replicated(engine.data_key(0))
  state = prog.init(seeds, hp)
  # One piece's program where a CPU runs the group in pieces side by side.
  compiled = prog.compiled_segment(state, data.train, key)
  mem = compiled.executable.memory_analysis()
  box = [state]

  def run():
    box[0], metrics = prog.segment(box[0], data.train, key,
                                   num_steps=w.updates)
    return metrics

  sec = median_seconds(run, repeats)
  rate = k * w.updates / sec
  return {"k": k, "compile_s": compiled.compile_seconds, "segment_s": sec,
          "trial_steps_per_s": rate,
          "tokens_per_s": rate * w.batch * w.window,
          "tflops": rate * w.flops_per_trial_step() / 1e12,
          "temp_bytes": getattr(mem, "temp_size_in_bytes", None),
          "program_bytes": compiled.bytes,
          # What ran: a pallas request falls back on shapes it cannot run.
          "recurrence": prog.trial.recurrence,
          "parts": prog.parts(k),
          "fallback": prog.trial.fallback}


def measure_sequential(w: Workload, trials: int, *,
                       options: engine.EngineOptions | None = None,
                       task: CharLM | None = None) -> dict[str, Any]:
  """The same trials one after another through ONE compiled K=1 program
  (compile once, reported apart)."""
  task = task or workload_task(w)
  one = measure_group(w, 1, repeats=max(trials, 1), options=options,
                      task=task)
  return dict(one, trials=trials)


def measure_naive(w: Workload, trials: int, *,
                  task: CharLM | None = None) -> dict[str, Any]:
  """The common way to write a JAX objective: each trial jits its own train
  loop (then one validation pass, the objective's value) with its
  hyperparameters as Python floats, so each trial compiles. Wall time
  includes those compiles, since the user pays them."""
  task = task or workload_task(w)
  data = task.data()
  key = engine.data_key(0)
  configs = trial_configs(w, max(trials, 2))[:trials]
  start = time.perf_counter()
  with engine.count_compiles() as compiles:
    for trial in make_trials(configs):
      group = plan_groups([trial], 1)[0]
      one = engine.OneTrial(group.static, task)  # nothing cached
      hp = engine.trial_hparams(trial.params, horizon=w.updates)

      def train(seed, data_train, data_key, one=one, hp=hp):
        state = one.init(seed, hp)

        def body(state, _):
          state, loss, _ = one.update(state, data_train, data_key)
          return state, loss

        state, _ = jax.lax.scan(body, state, None, length=w.updates)
        return one.evaluate(state.params, data.val)

      jax.block_until_ready(jax.jit(train)(trial.seed, data.train, key))
  sec = time.perf_counter() - start
  return {"trials": trials, "total_s": sec, "compiles": compiles.count,
          "compile_s": compiles.seconds,
          "trial_steps_per_s": trials * w.updates / sec}
