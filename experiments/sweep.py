"""Runs a hyperparameter sweep from the command line.

With no flags it runs the default sweep: 16 random trials of LSTM/GRU
character language models on the Python documentation text, a few minutes on
a 2-core CPU, and prints the leaderboard. Examples::

  python experiments/sweep.py
  python experiments/sweep.py --task=adding --seq_len=100 --num_trials=24
  python experiments/sweep.py --sampler=grid --preset=cells --steps=300
  python experiments/sweep.py --space='{"learning_rate": {"log_uniform": [1e-4, 1e-2]}}'
  python experiments/sweep.py --space=my_space.json --workdir=runs/mine
  python experiments/sweep.py --sampler=quasirandom --num_trials=32
  python experiments/sweep.py --preset=seed_grid            # a 12-model grid
  python experiments/sweep.py --trials=my_trials.csv
  python experiments/sweep.py --trials=best.csv --seeds=3    # 3 seeds each
  python experiments/sweep.py --around='{"learning_rate": 0.003}' --points_per_axis=5
  python experiments/sweep.py --sampler=optuna:tpe --rounds=4 --batch_size_trials=16
"""

import json

import os
import sys

from absl import app
from absl import flags
from absl import logging

import rnnsweep as rs

_TASK = flags.DEFINE_enum("task", "lm", sorted(rs.tasks.TASKS),
                          "Task to train on.")
_SEQ_LEN = flags.DEFINE_integer(
    "seq_len", None, "Sequence length of the task (default: the task's own: "
    "128 for lm, 50 for adding, 24 for forecast; for copy, the delay, 20).",
    lower_bound=0)
_DATASET = flags.DEFINE_string(
    "dataset", None, "Built-in data set of the task: classify: digits | "
    "japanese_vowels (default digits); forecast: sunspots.")
_DATA_PATH = flags.DEFINE_string(
    "data_path", None, "Your own data instead of the built-in: lm: a UTF-8 "
    "text file; forecast: .npy/.npz/.csv series; classify: .npz/.csv "
    "labelled sequences (layouts in the README).")
_SAMPLER = flags.DEFINE_string(
    "sampler", None, "How to choose trials: grid | random | quasirandom "
    "(scrambled Sobol) | around (set by --around) | trials (set by "
    "--trials) | optuna:<name> (tpe, cmaes, gp, qmc, random or an Optuna "
    "sampler class; asked in --rounds batches). Default: random; grid with "
    "--preset=seed_grid.")
_NUM_TRIALS = flags.DEFINE_integer(
    "num_trials", 16, "Configurations to draw (random and quasirandom "
    "samplers), each trained --seeds times.",
    lower_bound=1)
_SEEDS = flags.DEFINE_integer(
    "seeds", 1, "Train every configuration the sampler gives this many "
    "times, each with its own seed (the first with the configuration's own, "
    "so its numbers repeat a --seeds=1 sweep's); the report ranks them by "
    "their mean; an optuna:* study is told each configuration's mean. "
    "--num_trials and --batch_size_trials count configurations. Not with "
    "--scheduler=pbt.",
    lower_bound=1)
_TRIALS = flags.DEFINE_string(
    "trials", None, "Run exactly the configurations in this file: a JSON "
    "list of objects or a CSV whose header names the parameters.")
_AROUND = flags.DEFINE_string(
    "around", None, "One factor at a time: a configuration (JSON object or "
    "a JSON file); each tuned parameter of the space is varied across its "
    "range with the rest held here.")
_POINTS_PER_AXIS = flags.DEFINE_integer(
    "points_per_axis", 5, "--around: values per continuous or integer "
    "parameter (a choice gives all its values).", lower_bound=2)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 4, "optuna:* samplers: ask / train / tell rounds.",
    lower_bound=1)
_BATCH_SIZE_TRIALS = flags.DEFINE_integer(
    "batch_size_trials", None, "optuna:* samplers: trials asked per round "
    "(default: --max_group_size when an integer, else 16).", lower_bound=1)
_OPTUNA_STORAGE = flags.DEFINE_string(
    "optuna_storage", None, "optuna:* samplers: the study's storage URL "
    "(default: optuna.db in the workdir).")
_STEPS = flags.DEFINE_integer(
    "steps", 500, "Updates per trial (one TBPTT window each).", lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 100, "Validation interval in steps.", lower_bound=1)
_MAX_GROUP_SIZE = flags.DEFINE_string(
    "max_group_size", rs.runner.DEFAULT_MAX_GROUP_SIZE,
    "Most trials trained together in one program: a positive integer (1: "
    "each alone) or 'auto' (from the compiled program's memory and, on a "
    "CPU, a short speed probe).")
_DEVICES = flags.DEFINE_string(
    "devices", "all", "Devices each group's trials are sharded over: 'all', "
    "a number N (the first N) or 'cpu' (the CPU devices, also on a host with "
    "accelerators). The numbers do not depend on it; a sweep may be "
    "continued on another count.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", None, "Split this host's CPU into this many JAX devices "
    "before JAX starts: 'auto' (one per core this process may use, at most "
    "one per trial) or a positive integer. Unset: XLA's choice, one device "
    "(or XLA_FLAGS' --xla_force_host_platform_device_count). On a CPU the "
    "groups' trials are then sharded over them, or groups train side by "
    "side, to the same numbers; accelerators are not affected.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", list(rs.distributed.MODES), "Join a "
    "jax.distributed job of several processes (one per host or GPU), "
    "which run the sweep together: 'auto' joins when the three flags below "
    "are given or Slurm (srun) or a multi-host TPU VM says so; 'on' always "
    "(JAX detects the rest); 'off' never. Process 0 alone writes the "
    "workdir.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator "
    "(several processes started by hand).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "How many processes the job has.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in the job, from 0.",
    lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Sweep seed: sampling, trial seeds "
                             "and the shared data stream.", lower_bound=0,
                             upper_bound=2**31 - 1)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where results and checkpoints go. Running the same "
    "command on the same workdir continues an interrupted sweep (default: "
    "runs/<task>-<sampler>-<hash of the settings>, so re-running a command "
    "resumes it).")
_EXTEND = flags.DEFINE_bool(
    "extend", False, "Continuing a workdir, allow a larger --num_trials: the "
    "new trials are added to the sweep.")
_CHECKPOINT_SECONDS = flags.DEFINE_float(
    "checkpoint_seconds", rs.runner.DEFAULT_CHECKPOINT_SECONDS,
    "Least time between two checkpoints of a running group (0: after every "
    "evaluation).", lower_bound=0.0)
_PRESET = flags.DEFINE_string(
    "preset", "default", "Named search space of the task (default, cells).")
_SPACE = flags.DEFINE_string(
    "space", None, "Search space as a JSON object or a path to a JSON file; "
    "its entries replace the preset's. Entry forms: 0.1 (fixed), "
    "[\"lstm\", \"gru\"] (choice), {\"uniform\": [lo, hi]}, "
    "{\"log_uniform\": [lo, hi]}, {\"int_uniform\": [lo, hi], \"log\": true}.")
_PRECISION = flags.DEFINE_enum(
    "precision", rs.engine.AUTO, [rs.engine.AUTO, *rs.engine.COMPUTE_DTYPES],
    "Compute dtype of matmuls and activations (parameters and losses stay "
    "float32). auto: bfloat16 on a CUDA GPU (compute capability 8.0+), "
    "float32 elsewhere; the log says what it chose.")
_UNROLL = flags.DEFINE_string(
    "unroll", rs.engine.AUTO, "Time steps per iteration of the recurrent "
    "scan: a positive integer, or auto (8 on a CUDA GPU, 1 elsewhere).")
_DONATE = flags.DEFINE_bool("donate", False, "Donate the group state's "
                            "buffers to each segment (less device memory).")
_HOIST_INPUT = flags.DEFINE_bool(
    "hoist_input", False, "Compute each layer's input projection for the "
    "whole window before the time loop, with fused gate matmuls (same "
    "numbers up to rounding).")
_RECURRENCE = flags.DEFINE_enum(
    "recurrence", rs.engine.AUTO, [rs.engine.AUTO, *rs.engine.RECURRENCES],
    "How each layer's time loop runs: xla (lax.scan), xla_vjp (lax.scan "
    "with a hand-written backward: each recurrent kernel's gradient is "
    "one matmul per window, not one per time step), pallas (one fused "
    "kernel per window with its own backward; Triton on a GPU, slow "
    "interpret mode on a CPU; shapes it cannot take fall back to xla with "
    "a warning), or auto (pallas on a CUDA GPU of compute capability 9.0+ "
    "with bfloat16 compute, for groups whose shapes fit it; xla "
    "otherwise).")
_TRIAL_CHUNK = flags.DEFINE_string(
    "trial_chunk", rs.engine.AUTO_CHUNK, "How many of a group's trials are "
    "vmapped together; the group runs its chunks one after another in the "
    "same program. auto: the whole group on a GPU/TPU; on a CPU, where "
    "batched per-trial matmuls are slower, one trial at a time for "
    "LSTM(64), batch 32, and larger, small chunks for smaller trials; 0: "
    "the whole group; N: chunks of N.")
_COMPILE_AT_ONCE = flags.DEFINE_bool(
    "compile_at_once", False, "Compile each group's programs side by side "
    "in threads as it starts instead of one after another (the same "
    "programs and numbers; slower on a 2-core CPU, not yet measured on a "
    "GPU host).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", rs.engine.DEFAULT_COMPILATION_CACHE, "Persistent "
    "XLA compilation cache, so a rerun or resumed sweep does not compile "
    "again; empty to turn it off.")
_SCHEDULER = flags.DEFINE_enum(
    "scheduler", "none", list(rs.schedulers.SCHEDULERS), "Stop hopeless "
    "trials early and give their slots to the next trials (asha, hyperband, "
    "median), or evolve each group's population (pbt).")
_MIN_STEPS = flags.DEFINE_integer(
    "min_steps", None, "asha/hyperband: the first rung; median: the warm-up. "
    "A multiple of --eval_every (default: --eval_every).")
_REDUCTION_FACTOR = flags.DEFINE_integer(
    "reduction_factor", 3, "asha/hyperband: rungs at min_steps * eta**k; "
    "the top 1/eta of a rung continue.")
_PBT_INTERVAL = flags.DEFINE_integer(
    "pbt_interval", None, "pbt: steps between exploit steps, a multiple of "
    "--eval_every (default: --eval_every).")
_PBT_FRACTION = flags.DEFINE_float(
    "pbt_fraction", 0.25, "pbt: the bottom fraction copies the top "
    "fraction's weights.")
_PBT_RESAMPLE = flags.DEFINE_float(
    "pbt_resample_probability", 0.25, "pbt: chance a copied value is drawn "
    "afresh instead of multiplied by 0.8 or 1.25.")
_TOP = flags.DEFINE_integer("top", 10, "Leaderboard rows.", lower_bound=1)
_QUIET = flags.DEFINE_bool("quiet", False, "Print only the leaderboard.")


def fail(message: str) -> None:
  print(f"sweep.py: error: {message}", file=sys.stderr)
  sys.exit(2)


def build_space(task: rs.Task) -> rs.Space:
  space = task.preset(_PRESET.value)
  if _SPACE.value is not None:
    space = space.updated(rs.load_space(_SPACE.value))
  return space


def sampler_choice() -> tuple[str, dict]:
  """--sampler and its options, checked against each other: an option for
  another sampler is an error rather than silently ignored."""
  present = lambda name: flags.FLAGS[name].present
  name = _SAMPLER.value
  if name is None:
    name = ("trials" if _TRIALS.value is not None else
            "around" if _AROUND.value is not None else
            "grid" if _PRESET.value == "seed_grid" else "random")
  try:
    rs.samplers.check_sampler(name)
  except ValueError as e:
    raise ValueError(f"--{e}") from None
  optuna = name.startswith(rs.samplers.OPTUNA_PREFIX)
  uses = {"num_trials": name in ("random", "quasirandom"),
          "trials": name == "trials", "around": name == "around",
          "points_per_axis": name == "around", "rounds": optuna,
          "batch_size_trials": optuna, "optuna_storage": optuna,
          "preset": name != "trials", "space": name != "trials"}
  for flag, used in uses.items():
    if present(flag) and not used:
      raise ValueError(f"--{flag} does not apply to --sampler={name}")
  if name == "trials" and _TRIALS.value is None:
    raise ValueError("--sampler=trials needs --trials=FILE")
  if name == "around" and _AROUND.value is None:
    raise ValueError("--sampler=around needs --around=CONFIG")
  options = {}
  if name == "around":
    options = {"base": load_config(_AROUND.value),
               "points_per_axis": _POINTS_PER_AXIS.value}
  elif optuna:
    options = {"rounds": _ROUNDS.value,
               "batch_size_trials": _BATCH_SIZE_TRIALS.value,
               "storage": _OPTUNA_STORAGE.value}
  return name, options


def load_config(text: str) -> dict:
  """--around's configuration: a JSON object or the path of one."""
  source = "--around"
  if not text.lstrip().startswith("{"):
    if not os.path.isfile(text):
      raise ValueError(f"--around {text!r} is neither a JSON object nor an "
                       f"existing file")
    source = f"--around file {text!r}"
    with open(text, encoding="utf-8") as f:
      text = f.read()
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{source} is not valid JSON: {e}") from None
  if not isinstance(config, dict):
    raise ValueError(f"{source} must be a JSON object of name -> value")
  return config


def scheduler_settings() -> rs.SchedulerSettings:
  """--scheduler and its options; an option for another scheduler is an
  error rather than silently ignored."""
  name = _SCHEDULER.value
  uses = {"min_steps": ("asha", "hyperband", "median"),
          "reduction_factor": ("asha", "hyperband"),
          "pbt_interval": ("pbt",), "pbt_fraction": ("pbt",),
          "pbt_resample_probability": ("pbt",)}
  for flag, users in uses.items():
    if flags.FLAGS[flag].present and name not in users:
      raise ValueError(f"--{flag} applies to --scheduler="
                       f"{'/'.join(users)}, not --scheduler={name}")
  return rs.SchedulerSettings(
      name, min_steps=_MIN_STEPS.value,
      reduction_factor=_REDUCTION_FACTOR.value,
      pbt_interval=_PBT_INTERVAL.value, pbt_fraction=_PBT_FRACTION.value,
      pbt_resample_probability=_PBT_RESAMPLE.value)


def main(argv):
  # JAX logs backend probing (e.g. "Unable to initialize backend 'tpu'") at
  # INFO; keep the terminal for results unless asked with --verbosity.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  try:
    sampler, sampler_options = sampler_choice()
  except ValueError as e:
    fail(str(e))
  try:
    max_group_size = rs.sizing.check_max_group_size(_MAX_GROUP_SIZE.value,
                                                    "--max_group_size")
  except ValueError as e:
    fail(str(e))
  try:
    if _CPU_DEVICES.value is not None:
      rs.placement.auto_or_positive(_CPU_DEVICES.value, "cpu_devices")
    rs.distributed.initialize(
        _DISTRIBUTED.value, coordinator_address=_COORDINATOR_ADDRESS.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  except ValueError as e:
    fail(f"--{e}")
  if _COMPILATION_CACHE.value:
    rs.engine.enable_compilation_cache(_COMPILATION_CACHE.value)
  try:
    options = {k: v for k, v in (("seq_len", _SEQ_LEN.value),
                                 ("dataset", _DATASET.value),
                                 ("data_path", _DATA_PATH.value))
               if v is not None}
    task = rs.make_task(_TASK.value, **options)
    engine_options = rs.EngineOptions(
        compute_dtype=_PRECISION.value,
        unroll=rs.engine.parse_unroll(_UNROLL.value, "--unroll"),
        donate=_DONATE.value, hoist_input=_HOIST_INPUT.value,
        recurrence=_RECURRENCE.value,
        trial_chunk=rs.engine.parse_trial_chunk(_TRIAL_CHUNK.value,
                                                "--trial_chunk"),
        compile_at_once=_COMPILE_AT_ONCE.value)
    if sampler == "trials":
      settings, trials, tuned = rs.runner.trials_settings(
          task, rs.load_trials(_TRIALS.value), steps=_STEPS.value,
          eval_every=_EVAL_EVERY.value, max_group_size=max_group_size,
          seed=_SEED.value, options=engine_options,
          scheduler=scheduler_settings(), source=_TRIALS.value,
          seeds=_SEEDS.value)
    else:
      settings, trials, full = rs.sweep_settings(
          task, build_space(task), sampler=sampler,
          num_trials=_NUM_TRIALS.value, steps=_STEPS.value,
          eval_every=_EVAL_EVERY.value, max_group_size=max_group_size,
          seed=_SEED.value, options=engine_options,
          scheduler=scheduler_settings(), sampler_options=sampler_options,
          seeds=_SEEDS.value)
      tuned = rs.runner.shown_names(full.tuned_names(), _SEEDS.value)
  except ValueError as e:
    fail(str(e))
  # Nothing above starts JAX's backend, so the CPU can still be split; the
  # sweep's trial count bounds 'auto' (optuna:* samplers ask theirs later).
  try:
    if _CPU_DEVICES.value is not None:
      rs.placement.split_cpu(_CPU_DEVICES.value,
                             None if trials is None else len(trials))
    devices = rs.placement.select_devices(_DEVICES.value)
    rs.placement.check_spans_processes(devices)
  except ValueError as e:
    fail(f"--{e}")
  log = (None if _QUIET.value or not rs.distributed.is_leader()
         else rs.runner.log_stderr)
  # auto precision and unroll as chosen for these devices: what is
  # recorded, compared on resume and named in the workdir.
  settings = rs.runner.resolve_engine(settings, devices, log)
  try:
    # The same settings, the same folder: every setting a resume compares
    # is in the name.
    workdir = _WORKDIR.value or os.path.join(
        "runs", f"{task.name}-{sampler.replace(':', '-')}-"
        f"{settings.digest()}")
    result = rs.execute(task, trials, settings, workdir=workdir,
                        tuned=tuned, extend=_EXTEND.value,
                        checkpoint_seconds=_CHECKPOINT_SECONDS.value,
                        log=log, progress=not _QUIET.value,
                        devices=devices)
  except ValueError as e:
    fail(str(e))
  if not rs.distributed.is_leader():
    return  # process 0 reports for the job
  print(result.leaderboard(_TOP.value))
  repeats = result.replicated()
  if repeats:
    print("\n" + "\n".join(rs.report.replicated_table(
        repeats, result.tuned, result.metric, _TOP.value)))
  if result.best is not None:
    b = result.best
    tuned = {k: b.params[k] for k in result.tuned}
    test = ("" if b.test_value is None else
            f"; test {b.metric} {b.test_value:.4g} (held out)")
    print(f"\nbest: trial {b.trial_id}, val {b.metric} {b.best_value:.4g} at "
          f"step {b.best_step}{test}; {tuned}")
    if b.lineage:
      print("  " + rs.report.pbt_best_line(b))
  print(f"results: {os.path.join(workdir, rs.store.DB_NAME)} and "
        f"{os.path.join(workdir, rs.store.CSV_NAME)}")
  if result.failed:
    fail(f"{len(result.failed)} trials failed (first: "
         f"{next(iter(result.failed.values()))}); run the same command again "
         f"to retry them")


if __name__ == "__main__":
  app.run(main)
