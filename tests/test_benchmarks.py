"""The GPU suite's tooling, checked on a CPU: every command of
``gpu_suite.sh`` parses, the goals table reads a run's files, and the
profile attributes a tick's time to the engine's named scopes."""

import functools
import json
import os
import runpy
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import rnnsweep as rs
from conftest import ROOT, TINY, subprocess_env

BENCHMARKS = os.path.join(ROOT, "benchmarks")


@functools.cache
def _profile_gpu():
  """profile_gpu.py's namespace, loaded once (its absl flags are global)."""
  return runpy.run_path(os.path.join(BENCHMARKS, "profile_gpu.py"),
                        run_name="profile")


def _dry_run(out_dir, quick: str) -> list[str]:
  """``gpu_suite.sh``'s commands with ``DRY_RUN=1``, each seen to parse."""
  env = subprocess_env(DRY_RUN="1", QUICK=quick, PATH=os.pathsep.join(
      [os.path.dirname(sys.executable), os.environ["PATH"]]))
  out = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu_suite.sh"),
                        str(out_dir)], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  commands = (out_dir / "commands.txt").read_text().splitlines()
  assert f"{len(commands)} of {len(commands)} commands parse" in out.stdout
  return commands


@pytest.mark.parametrize("quick", ["0", "1"])
def test_gpu_suite_commands_all_parse(tmp_path, quick):
  commands = _dry_run(tmp_path, quick)
  assert len(commands) >= (6 if quick == "1" else 17)
  if quick == "1":  # the goals' block, with which the whole suite starts
    everything = [c.replace(str(tmp_path / "all"), str(tmp_path))
                  for c in _dry_run(tmp_path / "all", "0")]
    assert everything[:len(commands) - 1] == commands[:-1]  # bar devices
  scripts = {c.split()[0] for c in commands}
  assert {"benchmarks/fused_check.py", "benchmarks/profile_gpu.py",
          "benchmarks/throughput.py", "benchmarks/baselines.py"} <= scripts
  assert any("--recurrence=pallas" in c for c in commands)


def test_gpu_suite_rehearsal_runs_every_command_at_toy_sizes(tmp_path):
  env = subprocess_env(DRY_RUN="1", REHEARSE="1", QUICK="1",
                       PATH=os.pathsep.join([os.path.dirname(sys.executable),
                                             os.environ["PATH"]]))
  out = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu_suite.sh"),
                        str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  commands = (tmp_path / "commands.txt").read_text().splitlines()
  assert f"{len(commands)} of {len(commands)} commands parse" in out.stdout
  # The same commands as the GPU run's, each at a toy's size.
  workloads = [a.split("=", 1)[1] for c in commands for a in c.split()
               if a.startswith(("--workload=", "--workloads="))]
  assert len(workloads) == len(commands) - 1  # all but fused_check.py
  assert set(",".join(workloads).split(",")) == {"toyS", "toyL"}
  numbers = [int(n) for c in commands for a in c.split()
             if a.startswith(("--k", "--ks=", "--trials=", "--full_sweep"))
             for n in a.split("=", 1)[1].split(",")]
  assert numbers and max(numbers) <= 4
  fused = next(c for c in commands if "fused_check.py" in c)
  assert "--hidden=16" in fused and "--batch=4" in fused


def _suite_with_fake_python(tmp_path, quick="1", **env):
  """``gpu_suite.sh`` run (not dry) with a ``python3`` that only echoes
  its command: the first fused_check.py fails, the fused profile hangs,
  goals.py is the real one."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "python3"
  fake.write_text(f"""#!/bin/sh
case "$*" in
  benchmarks/goals.py*) exec {sys.executable} "$@";;
  "benchmarks/fused_check.py --num_warps=auto --forward_stages=1 "*)
    echo "lstm differs"; exit 3;;
  *profile_gpu.py*pallas*) exec sleep 120;;
  -c*) echo 1;;
  *) echo "ran ${{XLA_FLAGS:+XLA_FLAGS=$XLA_FLAGS }}$*";;
esac
""")
  fake.chmod(0o755)
  out_dir = tmp_path / "out"
  out = subprocess.run(
      ["bash", os.path.join(BENCHMARKS, "gpu_suite.sh"), str(out_dir)],
      env=subprocess_env(QUICK=quick, PATH=os.pathsep.join(
          [str(bin_dir), os.environ["PATH"]]), **env),
      capture_output=True, text=True, timeout=120, check=False)
  return out, (out_dir / "failed.txt").read_text().splitlines()


def test_gpu_suite_goes_on_past_a_failed_or_hung_command(tmp_path):
  out, failed = _suite_with_fake_python(tmp_path, quick="0",
                                        STEP_TIMEOUT_S="2")
  assert out.returncode == 1, out.stderr[-3000:]
  out_dir = tmp_path / "out"
  assert failed == [
      f"FAILED (exit 3): benchmarks/fused_check.py --num_warps=auto "
      f"--forward_stages=1 --out_dir={out_dir}",
      f"FAILED (past its 2s limit): benchmarks/profile_gpu.py "
      f"--workloads=S,L --precision=bfloat16 --unroll=8 "
      f"--recurrence=pallas --out_dir={out_dir}"]
  # Every other command still ran, and the goals table came at the end.
  ran = [l for l in out.stdout.splitlines() if l.startswith("ran ")]
  assert len(ran) >= 20 and "baselines.py" in ran[0] and (
      "--recurrence=pallas" in ran[0])
  # L, which the kernel cannot take, with the kernels' backward in XLA.
  assert "--workload=L" in ran[1] and "--recurrence=xla_vjp" in ran[2]
  # A lever's XLA_FLAGS reach its command alone, after the suite's own.
  lever = ("--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,"
           "CUSTOM_CALL,WHILE,CONDITIONAL")
  levered = [l for l in ran if lever in l]
  assert len(levered) == 2 and all(
      l.startswith(f"ran XLA_FLAGS={os.environ['XLA_FLAGS']} {lever} "
                   "benchmarks/throughput.py ") for l in levered)
  assert "0 of 7 goals met" in out.stdout
  assert "2 commands did not finish" in out.stdout
  assert f"  {failed[0]}" in out.stdout
  # Each command's seconds and end, in order, then the suite's: its
  # whole-suite row shows the time, not met (two commands did not finish).
  times = [l.split("\t") for l in
           (out_dir / "times.tsv").read_text().splitlines()[1:]]
  assert [t[0] for t in times] == ["command"] * (len(ran) + 2) + ["suite"]
  hung = 4  # the fused profile, the QUICK block's last command
  assert [t[2] for t in times[:-1]] == (
      ["exit 3"] + ["ok"] * 3 + ["past its 2s limit"] +
      ["ok"] * (len(ran) - 3))
  script = lambda command: command[command.index("benchmarks/"):]
  assert [script(t[3]) for t in times[1:hung] + times[hung + 1:-1]] == [
      script(l) for l in ran]
  assert sum(lever in t[3] for t in times) == 2
  seconds = int(times[hung][1])
  assert 2 <= seconds <= 15 and seconds <= int(times[-1][1])
  assert times[-1][2] == "whole"
  whole = next(l for l in out.stdout.splitlines()
               if l.startswith("gpu_suite.sh whole-suite wall"))
  assert "NO" in whole and "2 failed or skipped" in whole
  assert (f"  {seconds:>4} s  past its 2s limit benchmarks/profile_gpu.py"
          in out.stdout)


def test_gpu_suite_skips_what_its_budget_leaves_no_time_for(tmp_path):
  out, failed = _suite_with_fake_python(tmp_path, BUDGET_S="0")
  assert out.returncode == 1
  assert "ran " not in out.stdout
  assert len(failed) == 5 and all(
      l.startswith("skipped (the suite's 0s budget is spent): benchmarks/")
      for l in failed)
  assert f"{len(failed)} commands did not finish" in out.stdout
  assert "5 failed or skipped, so not the whole suite's time" in out.stdout
  quick = next(l for l in out.stdout.splitlines()
               if l.startswith("gpu_suite.sh QUICK=1 wall"))
  assert "NO" in quick


# fused_check.py with the kernel patched: the simple cell's outputs off by
# 0.1% with two forward stages (the numbers check must see it, and the
# stages must reach the kernel); the GRU's at 4 warps raising as an
# out-of-resources Triton compile would (a row, not the end of the run);
# the LSTM not supported here (a fallback row, which is not a failure,
# after the row of its XLA scan with the kernels' backward); that scan's
# GRU outputs off by 0.1%.
_PATCHED_FUSED_CHECK = """
import runpy, sys
from rnnsweep.models import fused
real_scan = fused.scan_layer
def scan_layer(cell, *args, **kwargs):
  carry, ys = real_scan(cell, *args, **kwargs)
  return carry, ys * 1.001 if cell == "gru" else ys
fused.scan_layer = scan_layer
real = fused.layer
def layer(cell, *args, warps=None, stages=1, **kwargs):
  if cell == "gru" and warps == 4:
    raise RuntimeError("out of resource: shared memory\\nmore detail")
  carry, ys = real(cell, *args, warps=warps, stages=stages, **kwargs)
  return carry, ys * 1.001 if cell == "simple" and stages == (2, 1) else ys
fused.layer = layer
fused.unsupported = lambda cell, *a, **k: "too big" if cell == "lstm" else None
sys.argv = ["fused_check.py"] + sys.argv[1:]
runpy.run_path("benchmarks/fused_check.py", run_name="__main__")
"""


def test_fused_check_finds_wrong_numbers_and_failed_settings(tmp_path):
  out = subprocess.run(
      [sys.executable, "-c", _PATCHED_FUSED_CHECK, "--cells=gru,simple,lstm",
       "--dtypes=float32", "--num_warps=auto,4", "--forward_stages=1,2",
       "--batch=4", "--hidden=8", "--input=4", "--window=3", "--k=2",
       "--repeats=1", f"--out_dir={tmp_path}"], cwd=ROOT,
      env=subprocess_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 1, out.stderr[-3000:]
  assert ("error: gru/float32/xla_vjp, gru/float32/4 warps, "
          "gru/float32/4 warps, 2 forward stages, simple/float32/8 warps, 2 "
          "forward stages, simple/float32/4 warps, 2 forward stages: not "
          "the XLA recurrence's numbers") in out.stderr
  assert ("4 warps        1 fwd stage  FAILED: out of resource: shared "
          "memory") in out.stdout
  assert "lstm    float32   falls back to XLA: too big" in out.stdout
  rows = json.loads((tmp_path / "fused_check.json").read_text())["rows"]
  assert [(r["cell"], r.get("recurrence"), r.get("warps"),
           r.get("forward_stages"), r.get("ok")) for r in rows] == [
              ("gru", "xla_vjp", None, None, False),
              ("gru", "pallas", 8, 1, True), ("gru", "pallas", 8, 2, True),
              ("gru", "pallas", 4, 1, False), ("gru", "pallas", 4, 2, False),
              ("simple", "xla_vjp", None, None, True),
              ("simple", "pallas", 8, 1, True),
              ("simple", "pallas", 8, 2, False),
              ("simple", "pallas", 4, 1, True),
              ("simple", "pallas", 4, 2, False),
              ("lstm", "xla_vjp", None, None, True),
              ("lstm", None, None, None, None)]
  assert [r.get("auto") for r in rows[1:5]] == [True, True, False, False]
  assert 5e-4 < rows[0]["max_relative_difference"] < 2e-3
  assert rows[5]["max_relative_difference"] <= 1e-5
  assert rows[5]["xla_vjp_s"] > 0 and rows[5]["xla_s"] > 0
  assert rows[1]["max_relative_difference"] <= 1e-5
  assert rows[1]["fused_s"] > 0 and rows[1]["xla_s"] > 0
  assert rows[3]["error"] == "out of resource: shared memory"
  assert 5e-4 < rows[7]["max_relative_difference"] < 2e-3
  assert rows[11]["fallback"] == "too big"


def test_a_bad_flag_in_a_command_is_caught(tmp_path):
  commands = tmp_path / "commands.txt"
  commands.write_text("benchmarks/goals.py\n"
                      "benchmarks/fused_check.py --cells=lstm --nope=1\n"
                      "benchmarks/fused_check.py --dtypes=float32 --k=0\n")
  out = subprocess.run([sys.executable, os.path.join(BENCHMARKS,
                                                     "check_flags.py"),
                        str(commands)], cwd=ROOT, env=subprocess_env(),
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 1
  assert "1 of 3 commands parse" in out.stdout
  assert "Unknown command line flag 'nope'" in out.stderr
  assert "--k=0" in out.stderr


def _write(folder, name, data):
  with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
    json.dump(data, f)


def test_goals_table_reads_one_run(tmp_path):
  goals = runpy.run_path(os.path.join(BENCHMARKS, "goals.py"))
  rows = lambda *pairs: {"rows": [{"k": k, "trial_steps_per_s": r,
                                   "tflops": r / 1000} for k, r in pairs]}
  # K=512 is faster but below the goal's K >= 1024: not counted.
  _write(tmp_path, "throughput_S_lstm_float32_u1.json",
         rows((512, 200_000.0), (1024, 90_000.0)))
  _write(tmp_path, "throughput_S_lstm_bfloat16_u1_pallas.json",
         rows((1024, 120_000.0), (2048, 110_000.0)))
  _write(tmp_path, "baselines_S_bfloat16_u8.json", {
      "rnnsweep": {"trial_steps_per_s": 30_000.0},
      "torch_lstm_sequential": {"trial_steps_per_s": 150.0},
      "torch_func_vmap": {"trial_steps_per_s": 10_000.0},
      "full_sweep": {"trials": 1024, "updates": 500, "completed": 1024,
                     "wall_s": 14.0, "steady_s": 10.0, "ratio": 1.4}})
  # torch.func.vmap in float32 against a bfloat16 run: not the same
  # precision, so not that goal's row (the other rows count).
  _write(tmp_path, "baselines_S_bfloat16_u1_pallas.json", {
      "header": "...; compute bfloat16, unroll 1", "precision": "bfloat16",
      "rnnsweep": {"trial_steps_per_s": 40_000.0},
      "torch_func_vmap": {"trial_steps_per_s": 1_000.0,
                          "precision": "float32"}})
  # baselines.py's own K-trial group counts for the S row too (QUICK=1
  # runs no throughput.py at S), at K >= 1024 only.
  _write(tmp_path, "baselines_S_bfloat16_u8_pallas.json",
         {"rnnsweep": {"k": 1024, "trial_steps_per_s": 130_000.0}})
  _write(tmp_path, "baselines_S_float32_u1.json",
         {"rnnsweep": {"k": 512, "trial_steps_per_s": 500_000.0}})
  # The whole suite, every command finished: 420 s of its 480 s goal.
  (tmp_path / "times.tsv").write_text(
      "kind\tseconds\tstatus\tcommand\n"
      "command\t90\tok\tbenchmarks/fused_check.py --k=4\n"
      "command\t130\tok\tXLA_FLAGS=--x=1 benchmarks/baselines.py --k=8\n"
      "suite\t420\twhole\tbenchmarks/gpu_suite.sh\n")
  text, met = goals["table"](str(tmp_path))
  lines = text.splitlines()
  assert met == 3
  assert "not measured" in lines[6]  # a whole run is not a QUICK one
  assert "420.00  yes" in lines[7] and (
      "2 commands, slowest 130 s: benchmarks/baselines.py") in lines[7]
  assert "130,000.00  yes" in lines[1] and (
      "baselines_S_bfloat16_u8_pallas.json K=1024") in lines[1]
  assert "200.00  yes" in lines[2]  # 30,000 / 150
  assert "3.00  NO" in lines[3]     # 30,000 / 10,000, not 40,000 / 1,000
  assert "not measured" in lines[4]  # no L run
  assert "1.40  NO" in lines[5] and "1024 trials x 500 updates" in lines[5]
  assert goals["_precision"]({"header": "x; compute bfloat16, unroll 8"}) == (
      "bfloat16")
  # A rehearsal's table reads its toys' files only, at any K, and says so.
  _write(tmp_path, "throughput_toyS_lstm_float32_u1.json", rows((4, 50.0)))
  (tmp_path / "times.tsv").unlink()
  text, met = goals["table"](str(tmp_path), "toyS", "toyL")
  lines = text.splitlines()
  assert met == 0 and lines[0].startswith("REHEARSAL: workload toyS")
  assert "50.00  NO" in lines[2] and "toyS_lstm_float32_u1.json K=4" in lines[2]
  assert all("not measured" in l for l in lines[3:6])


def test_profile_attributes_a_tick_to_the_engine_scopes(tiny_lm):
  profile = _profile_gpu()["profile"]
  trials = rs.make_trials([dict(TINY, learning_rate=lr, output_dropout=0.2,
                                recurrent_dropout=0.2) for lr in (1e-3, 1e-2)])
  with tempfile.TemporaryDirectory() as trace_dir:
    result = profile(tiny_lm, trials, rs.EngineOptions(), updates=2,
                     trace_dir=trace_dir)
  shares = {r["category"]: r["share"] for r in result["rows"]}
  for where in ("recurrence: matmuls", "recurrence: gates, other",
                "dropout masks", "optimizer", "divergence", "data window",
                "evaluation", "best-parameter bookkeeping"):
    assert shares.get(where, 0) > 0, (where, shares)
  assert abs(sum(shares.values()) - 1.0) < 1e-6  # gaps close the tick
  # (Nearly) every executed op was found in the programs' HLO.
  assert result["unmatched_s"] <= 0.05 * result["busy_s"]


def test_profile_categories_see_through_transforms_and_fused_kernels():
  category = _profile_gpu()["category"]
  seg = "jit(segment)/vmap(train)/while/body/layer_0/"
  # On a GPU: the kernel's one custom call; on a CPU: its interpreted ops.
  assert category("segment", "custom-call", seg + "jvp(recurrence)/"
                  "fused_lstm_forward/pallas_call",
                  True) == "recurrence: fused kernel"
  assert category("segment", "fusion", seg + "transpose(jvp(recurrence))/"
                  "fused_gru_backward/while/body/mul", False) == (
                      "recurrence: fused kernel")
  # The XLA recurrence, and the window's matmuls around the kernel.
  assert category("segment", "fusion", seg + "recurrence/while/body/"
                  "dot_general", True) == "recurrence: matmuls"
  assert category("segment", "fusion", seg + "recurrence/dot_general",
                  True) == "recurrence: matmuls"
  assert category("segment", "fusion", seg + "fused_lstm_gates/add",
                  False) == "model/loss: other"
  # A scope's backward pass, named through the transformations, is its own.
  assert category("segment", "fusion", "jit(f)/vmap(transpose(jvp("
                  "recurrence)))/while/body/dot_general", True) == (
                      "recurrence: matmuls")
  assert category("segment", "fusion", "jit(f)/transpose(jvp(optimizer))/"
                  "mul", False) == "optimizer"


def test_profile_reads_the_kernels_a_command_buffer_ran():
  """jax 0.11 on an H200 runs stretches of a program as command buffers
  (CUDA graphs): each kernel's ``hlo_op`` then names the buffer, so the
  profile of 2026-12-04 matched no op. These events are as that trace's:
  a fusion is found by its kernel's name, a cuBLAS kernel keeps its
  module and scope, an op outside a buffer its ``hlo_op``."""
  kernel_ops = _profile_gpu()["kernel_ops"]
  scope = "jit(_evaluate)/vmap()/while/body/eval_jaxpr/RecurrentModel/dot"
  ops = kernel_ops([
      ("loop_add_fusion_1", 2000.0,
       {"hlo_op": "command_buffer_12", "hlo_module": "jit__segment"}),
      ("nvjet_sm90_tst_128x96_64x7_1x2_h_bz_NNT", 3000.0,
       {"hlo_op": "command_buffer_69", "hlo_module": "jit__evaluate",
        "name": scope}),
      ("wrapped_compare", 1000.0,
       {"hlo_op": "%wrapped_compare", "hlo_module": "jit__segment"}),
      ("a_runtime_kernel", 5.0, {})])
  assert [(o.name, o.module, o.scope) for o in ops] == [
      ("loop_add_fusion_1", "jit__segment", ""),
      ("nvjet_sm90_tst_128x96_64x7_1x2_h_bz_NNT", "jit__evaluate", scope),
      ("wrapped_compare", "jit__segment", "")]
  assert [o.seconds for o in ops] == pytest.approx([2e-6, 3e-6, 1e-6])
  assert _profile_gpu()["MATMUL"].search(ops[1].name)


def test_whole_sweep_baseline_runs_the_sweep_a_user_runs(tmp_path):
  """Part 3 of baselines.py: the sweep's own number of updates (not the
  timed segments'), every trial finished, against steady state at that
  many updates."""
  out = subprocess.run(
      [sys.executable, os.path.join(BENCHMARKS, "baselines.py"),
       "--workload=S", "--nosteady", "--sweep_trials=0",
       "--full_sweep_trials=2", "--full_sweep_updates=5", "--updates=2",
       f"--out_dir={tmp_path}"], cwd=ROOT, env=subprocess_env(),
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  full = json.loads(next(tmp_path.glob("baselines_S_*.json")).read_text())[
      "full_sweep"]
  assert (full["trials"], full["updates"], full["completed"]) == (2, 5, 2)
  assert np.isclose(full["steady_s"],
                    2 * 5 / full["steady_trial_steps_per_s"])
  assert np.isclose(full["ratio"], full["wall_s"] / full["steady_s"])
  # What it spent compiling, by program: the group's segment among them.
  by_program = full["compile_s_by_program"]
  assert 0 < full["compile_s"] < full["wall_s"] and full["compiles"] > 0
  assert np.isclose(sum(by_program.values()), full["compile_s"])
  assert by_program["jit(_segment)"] > 0, by_program
  assert "2 trials x 5 updates" in out.stdout
  assert f"of which compiling {full['compile_s']:.1f} s" in out.stdout
  assert "validation every 1," in out.stdout
  # Where the run's own time went, part by part: the whole sweep's part
  # holds its wall time and its steady-state measurement (--nosteady).
  seconds = json.loads(next(tmp_path.glob("baselines_S_*.json")).read_text(
      ))["seconds"]
  assert set(seconds) == {"sweep", "full_sweep"}
  assert seconds["full_sweep"] > full["wall_s"] and seconds["sweep"] < 1
  assert (f"seconds each part took: sweep {seconds['sweep']:.1f}, "
          f"full_sweep {seconds['full_sweep']:.1f}") in out.stdout


_FAILING_SWEEP = """
import dataclasses, runpy, sys
import rnnsweep as rs
real = rs.run_trials
rs.run_trials = lambda *a, **k: dataclasses.replace(
    real(*a, **k), failed={0: "ValueError: planted"})
sys.argv = ["baselines.py"] + sys.argv[1:]
runpy.run_path("benchmarks/baselines.py", run_name="__main__")
"""


def test_whole_sweep_baseline_refuses_a_sweep_whose_groups_failed(tmp_path):
  """A group that raises is marked failed and the sweep goes on, so its
  wall time measures nothing (on the H200, 0 of 1024 trials finished and
  the ratio was printed): the script says so, exits 1, and the goals
  table finds no sweep ratio in what it wrote."""
  out = subprocess.run(
      [sys.executable, "-c", _FAILING_SWEEP, "--workload=S", "--nosteady",
       "--sweep_trials=0", "--full_sweep_trials=2", "--full_sweep_updates=5",
       "--updates=2", f"--out_dir={tmp_path}"], cwd=ROOT,
      env=subprocess_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 1, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      "baselines.py: error: the whole sweep (part 3) failed: "
      "ValueError: planted")
  assert "FAILED, the groups of 1 of its trials raised" in out.stdout
  path = next(tmp_path.glob("baselines_S_*.json"))
  assert "ratio" not in json.loads(path.read_text())["full_sweep"]
  goals = runpy.run_path(os.path.join(BENCHMARKS, "goals.py"))
  assert goals["measured"](str(tmp_path))[-1] is None


def test_trial_chunk_benchmark_measures_each_chunk(tmp_path):
  out_file = tmp_path / "chunk.json"
  out = subprocess.run(
      [sys.executable, os.path.join(BENCHMARKS, "trial_chunk.py"),
       "--hiddens=8", "--ks=4", "--chunks=0,1", "--updates=1",
       "--repeats=1", f"--out={out_file}"], cwd=ROOT, env=subprocess_env(),
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads(out_file.read_text())["rows"]
  assert [(r["hidden"], r["k"], r["chunk"]) for r in rows] == [
      (8, 4, 0), (8, 4, 1)]
  assert all(r["trial_steps_per_s"] > 0 for r in rows)
  # One chunk at a time needs less memory than the whole group at once.
  assert rows[1]["temp_bytes"] < rows[0]["temp_bytes"]
  assert "vs chunk 0" in out.stdout
  bad = subprocess.run(
      [sys.executable, os.path.join(BENCHMARKS, "trial_chunk.py"),
       "--chunks=-1"], cwd=ROOT, env=subprocess_env(), capture_output=True,
      text=True, timeout=300, check=False)
  assert bad.returncode != 0 and "--chunks" in bad.stderr


def _compiled_rows(tmp_path, *args, patch=""):
  """kernel_resources.py run (after ``patch``), its rows and exit."""
  script = ("import runpy, sys\nfrom rnnsweep.models import fused\n" + patch +
            "\nsys.argv = ['kernel_resources.py'] + sys.argv[1:]\n"
            "runpy.run_path('benchmarks/kernel_resources.py', "
            "run_name='__main__')\n")
  out = subprocess.run(
      [sys.executable, "-c", script, *args, f"--out_dir={tmp_path}"],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=600, check=False)
  path = tmp_path / "kernel_resources.json"
  rows = json.loads(path.read_text())["rows"] if path.exists() else []
  return out, rows


def test_the_s_kernels_compiled_for_sm90_fit_where_the_engine_runs_them(
    tmp_path):
  """Workload S's kernels, compiled for an H100/H200 by the triton
  package: the LSTM's in bfloat16 fit in a program's 227 KiB of shared
  memory (the weights alone are 128 KiB of it) without spilling more than
  a few registers, one program an SM; in float32 they do not fit, and the
  engine falls back. The SimpleRNN's bfloat16 forward kernel is small
  enough for two programs an SM, which its registers limit."""
  pytest.importorskip("triton", reason="the triton package installs on "
                      "Linux x86_64 only")
  out, rows = _compiled_rows(tmp_path, "--cells=lstm,simple",
                             "--dtypes=bfloat16,float32", "--batch=32",
                             "--hidden=128")
  assert out.returncode == 0, out.stderr[-3000:]
  got = {(r["dtype"], r["kernel"]): r for r in rows}
  assert sorted(got) == [(d, f"fused_{c}_{k}") for d in ("bfloat16",
                                                         "float32")
                         for c in ("lstm", "simple")
                         for k in ("backward", "forward")]
  for row in rows:
    assert (row["warps"], row["auto"], row["stages"]) == (8, True, 1)
    assert 0 < row["registers"] <= 255 and not row["errors"]
  for kernel in ("forward", "backward"):
    bf16, f32 = got["bfloat16", f"fused_lstm_{kernel}"], got[
        "float32", f"fused_lstm_{kernel}"]
    assert 128 << 10 <= bf16["shared_bytes"] <= 227 << 10, bf16
    assert bf16["fits"] and bf16["fallback"] is None
    assert bf16["stack_bytes"] <= 64, bf16
    assert bf16["programs_per_sm"] == 1  # 228 KiB a SM holds one
    assert f32["shared_bytes"] > 256 << 10  # 256 KiB of weights
    assert not f32["fits"] and "shared memory" in f32["fallback"]
    assert f32["programs_per_sm"] == 0
  simple = got["bfloat16", "fused_simple_forward"]
  # Registers rounded up to 8 a thread, 8 warps: two programs in 64K
  # registers for 89 to 128 a thread (shared memory would allow five).
  assert 88 < simple["registers"] <= 128 and simple["shared_bytes"] < 45 << 10
  assert simple["programs_per_sm"] == 2


def test_kernel_resources_says_when_a_rule_is_wrong(tmp_path):
  """Three pipelining stages (Triton's default) with the rules left as
  they are: the compiled kernels need more shared memory than the
  estimate, and the script says so and exits 1."""
  pytest.importorskip("triton", reason="the triton package installs on "
                      "Linux x86_64 only")
  out, rows = _compiled_rows(tmp_path, "--cells=lstm", "--dtypes=bfloat16",
                             "--batch=32", "--hidden=64",
                             patch="fused.NUM_STAGES = 3")
  assert out.returncode == 1, out.stderr[-3000:]
  assert "the engine's rules are wrong for lstm/bfloat16/B=32/H=64/" in (
      out.stderr)
  assert "RULE WRONG: needs" in out.stdout
  assert all(r["stages"] == 3 for r in rows)
  assert any(r["shared_bytes"] > r["estimate_bytes"] for r in rows)


def test_lanes_benchmark_times_each_forced_layout_on_the_same_results(
    tmp_path):
  """benchmarks/lanes.py: each layout forced in its own run of the sweep
  script, the order alternating, the results compared."""
  sweep = ["--task=adding", "--seq_len=8", "--num_trials=2", "--steps=2",
           "--eval_every=2", "--max_group_size=1",
           '--space={"hidden_size": 8, "batch_size": 4}']
  lanes = [sys.executable, os.path.join(BENCHMARKS, "lanes.py"),
           "--cpu_devices=2"]
  out = subprocess.run(
      lanes + ["--layouts=side,one", "--rounds=1", f"--out_dir={tmp_path}",
               "--compilation_cache=" + os.environ["RNNSWEEP_TESTS_XLA_CACHE"],
               "--", *sweep], cwd=ROOT, env=subprocess_env(),
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  facts = json.loads((tmp_path / "lanes.json").read_text())
  # Two one-trial groups on 2 devices: side by side, or one lane.
  assert [(r["layout"], r["placement"]) for r in facts["runs"]] == [
      ("side", "2 groups at a time on disjoint device sets (1+1 devices), "
               "each sharded over its set"),
      ("one", "each group sharded over all 2 devices, one after another")]
  assert facts["same_results"] and facts["largest_difference"] <= 1e-5
  assert facts["sweep_args"] == sweep
  assert set(facts["means_s"]) == {"side", "one"}
  assert ("2 trials, 2 groups to run on 2 devices (cpu)" in
          (tmp_path / "one-r1.log").read_text())  # each run's own log
  assert "| one | " in out.stdout and "against side" in out.stdout
  assert "the same results in every run: yes" in out.stdout
  bad = subprocess.run(lanes + ["--layouts=one,wide"], cwd=ROOT,
                       env=subprocess_env(), capture_output=True, text=True,
                       timeout=300, check=False)
  assert bad.returncode != 0
  assert ("--layouts must be distinct names among plan, one, side, got "
          "'one,wide'") in bad.stderr


def test_lanes_benchmark_order_and_comparison():
  # In a child: lanes.py's absl flags (out_dir, ...) would clash with the
  # other benchmark scripts this process has loaded.
  code = """
import json, runpy, sys
ns = runpy.run_path(sys.argv[1], run_name="lanes")
diff = ns["largest_difference"]
row = {"trial_id": "0", "status": "completed", "best": "2.0"}
print(json.dumps([ns["order"](["a", "b"], 3),
                  [diff([row], [row]),
                   diff([row], [dict(row, best="2.000002")]),
                   diff([row], [dict(row, status="failed")]),
                   diff([row], [])]]))
"""
  out = subprocess.run(
      [sys.executable, "-c", code, os.path.join(BENCHMARKS, "lanes.py")],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  order, diffs = json.loads(out.stdout)
  assert order == [[0, "a"], [0, "b"], [1, "b"], [1, "a"], [2, "a"],
                   [2, "b"]]
  # Relative: 2e-6 on 2.0; a status or a missing row: infinitely different.
  assert diffs[0] == 0.0 and diffs[1] == pytest.approx(1e-6, rel=1e-4)
  assert diffs[2:] == [float("inf")] * 2


def test_a_benchmark_header_names_the_xla_flags_it_ran_under(monkeypatch):
  """A lever set through XLA_FLAGS (gpu_suite.sh's command-buffer rows)
  is part of what a result file says it measured."""
  from rnnsweep import bench  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_command_buffer=")
  assert bench.device_header().endswith(
      "compile_at_once False; XLA_FLAGS --xla_gpu_enable_command_buffer=")
  monkeypatch.delenv("XLA_FLAGS")
  assert bench.device_header().endswith("compile_at_once False")


def test_a_benchmark_of_auto_options_names_what_they_chose():
  """``--precision=auto --unroll=auto --recurrence=auto``: the file name
  and header carry the values chosen on this device (a CPU's)."""
  from rnnsweep import bench  # pylint: disable=g-import-not-at-top
  auto = rs.EngineOptions()
  assert bench.options_tag(auto) == "float32_u1"
  header = bench.device_header(auto)
  assert "compute float32, unroll 1, donate False, hoist_input False, " \
         "recurrence xla," in header
  assert ("compile_at_once False; engine options on cpu, auto: float32 "
          "compute, unroll 1, the XLA recurrence (set --precision, "
          "--unroll, --recurrence to choose)") in header
  named = rs.EngineOptions(compute_dtype="bfloat16", unroll=8,
                           recurrence="pallas")
  assert bench.options_tag(named) == "bfloat16_u8_pallas"
  assert "engine options" not in bench.device_header(named)
