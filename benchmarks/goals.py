"""The GPU goals against what one ``gpu_suite.sh`` run measured: reads the
run's JSON files and prints one row per goal (goal, measured, where from,
met), then the suite's commands that did not finish and each command's
seconds (its ``times.tsv``: where the suite's own time goes). Every ratio
is between numbers of the same run. A rehearsal (``REHEARSE=1``) names the
workloads that stood in for S and L; its table says it is one.

  python benchmarks/goals.py OUT_DIR
  python benchmarks/goals.py OUT_DIR toyS toyL     # a rehearsal's folder
"""

import glob
import json
import os
import re
import sys

#: (name, goal, comparison) — the issue's targets.
GOALS = (
    ("S trial-steps/s at K>=1024", 100_000, ">="),
    ("S vs PyTorch cuDNN one trial after another", 150, ">="),
    ("S vs torch.func.vmap, same K and precision", 5, ">="),
    ("L TFLOP/s", 300, ">="),
    ("1024-trial S sweep wall / steady-state training", 1.3, "<="),
    ("gpu_suite.sh QUICK=1 wall seconds", 180, "<="),
    ("gpu_suite.sh whole-suite wall seconds", 480, "<="),
)


def suite_times(out_dir: str) -> tuple[list[tuple[int, str, str]],
                                       tuple[int, str] | None]:
  """A run's ``times.tsv``: each command's (seconds, status, command) in
  the order run, and the suite's (seconds, "quick" | "whole"), ``None``
  before it finished (or in a folder without the file)."""
  path = os.path.join(out_dir, "times.tsv")
  commands, suite = [], None
  if not os.path.exists(path):
    return commands, suite
  with open(path, encoding="utf-8") as f:
    for line in f.read().splitlines()[1:]:
      kind, seconds, status, what = line.split("\t", 3)
      if kind == "command":
        commands.append((int(seconds), status, what))
      elif kind == "suite":
        suite = (int(seconds), status)
  return commands, suite


def _script(command: str) -> str:
  """A suite command's script (past the variables set for it)."""
  return next((w for w in command.split() if w.endswith(".py")), command)


def _suite_rows(out_dir: str):
  """The two suite-time goals' measurements (one of them ``None``: a run
  is QUICK or whole). A suite whose commands failed or were skipped for
  its budget ran short of itself: its time is shown, and the goal is not
  met."""
  commands, suite = suite_times(out_dir)
  if suite is None:
    return [None, None]
  seconds, mode = suite
  short = sum(status != "ok" for _, status, _ in commands)
  slowest = max(commands, default=None)
  source = f"{len(commands)} commands" + (
      f", slowest {slowest[0]} s: {_script(slowest[2])}" if slowest else "")
  if short:
    source += f"; {short} failed or skipped, so not the whole suite's time"
  row = (float(seconds), source, not short)
  return [row, None] if mode == "quick" else [None, row]


def _load(pattern: str, out_dir: str) -> list[tuple[str, dict]]:
  found = []
  for path in sorted(glob.glob(os.path.join(out_dir, pattern))):
    with open(path, encoding="utf-8") as f:
      found.append((os.path.basename(path), json.load(f)))
  return found


def _precision(data: dict) -> str | None:
  """A baselines file's compute dtype: its own field, else its header's
  ("compute bfloat16"), else ``None``."""
  if "precision" in data:
    return data["precision"]
  found = re.search(r"compute (\w+)", data.get("header", ""))
  return found.group(1) if found else None


def _best_row(files, key, min_k=1):
  best = None
  for name, data in files:
    for row in data.get("rows", []):
      if row["k"] >= min_k and (best is None or row[key] > best[0]):
        best = (row[key], f"{name} K={row['k']}")
  return best


def measured(out_dir: str, s: str = "S", l: str = "L") -> list[tuple | None]:
  """Each goal's measured value and its source (``None``: not measured),
  from the files of workloads ``s`` and ``l``; a third element ``False``
  where the value may not count as met."""
  s_files = _load(f"throughput_{s}_*.json", out_dir)
  l_files = _load(f"throughput_{l}_*.json", out_dir)
  vs_cudnn = vs_vmap = sweep = None
  min_k = 1024 if s == "S" else 1
  best_s = _best_row(s_files, "trial_steps_per_s", min_k)
  for name, data in _load(f"baselines_{s}_*.json", out_dir):
    ours = data.get("rnnsweep", {}).get("trial_steps_per_s")
    # Its K-trial group is measured as throughput.py measures one.
    k = data.get("rnnsweep", {}).get("k", 0)
    if ours and k >= min_k and (best_s is None or ours > best_s[0]):
      best_s = (ours, f"{name} K={k}")
    cudnn = data.get("torch_lstm_sequential", {}).get("trial_steps_per_s")
    # "Same precision": a bfloat16 run against torch in float32 (all that
    # baselines.py measured before torch's autocast) is not counted.
    vm = data.get("torch_func_vmap", {})
    same = _precision(data) in (None, vm.get("precision", "float32"))
    vmap = vm.get("trial_steps_per_s") if same else None
    if ours and cudnn and (vs_cudnn is None or ours / cudnn > vs_cudnn[0]):
      vs_cudnn = (ours / cudnn, f"{name}: {ours:,.0f} / {cudnn:,.0f}")
    if ours and vmap and (vs_vmap is None or ours / vmap > vs_vmap[0]):
      vs_vmap = (ours / vmap, f"{name}: {ours:,.0f} / {vmap:,.0f}")
    full = data.get("full_sweep")
    # A sweep whose groups raised finished nothing: no ratio to take.
    if full and "ratio" in full and full.get("completed") and (
        sweep is None or full["ratio"] < sweep[0]):
      sweep = (full["ratio"], f"{name}: {full['wall_s']:.1f} s / "
               f"{full['steady_s']:.1f} s, {full['trials']} trials x "
               f"{full.get('updates', '?')} updates")
  return [best_s, vs_cudnn, vs_vmap, _best_row(l_files, "tflops"), sweep,
          *_suite_rows(out_dir)]


def table(out_dir: str, s: str = "S", l: str = "L") -> tuple[str, int]:
  """The printed table and how many goals were met."""
  lines = [] if (s, l) == ("S", "L") else [
      f"REHEARSAL: workload {s} stands for S and {l} for L; these numbers "
      "are not the goals'"]
  lines.append(f"{'goal':<50} {'target':>10} {'measured':>12}  met  from")
  met = 0
  for (name, goal, op), got in zip(GOALS, measured(out_dir, s, l)):
    if got is None:
      lines.append(f"{name:<50} {op}{goal:>8,} {'-':>12}  -    not measured")
      continue
    value, source, countable = (*got, True)[:3]
    ok = countable and (value >= goal if op == ">=" else value <= goal)
    met += ok
    lines.append(f"{name:<50} {op}{goal:>8,} {value:>12,.2f}  "
                 f"{'yes' if ok else 'NO ':<4} {source}")
  return "\n".join(lines), met


def not_done(out_dir: str) -> list[str]:
  """The suite's commands that failed, timed out or were skipped (its
  ``failed.txt``, one a line)."""
  path = os.path.join(out_dir, "failed.txt")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def main() -> None:
  if len(sys.argv) not in (2, 4) or not os.path.isdir(sys.argv[1]):
    sys.exit("usage: goals.py OUT_DIR [S_WORKLOAD L_WORKLOAD] (OUT_DIR: a "
             "gpu_suite.sh output folder)")
  text, met = table(*sys.argv[1:])
  print(text)
  print(f"{met} of {len(GOALS)} goals met")
  undone = not_done(sys.argv[1])
  if undone:
    print(f"{len(undone)} commands did not finish (their goals may show "
          "as not measured):")
    print("\n".join(f"  {line}" for line in undone))
  commands, _ = suite_times(sys.argv[1])
  if commands:
    print("each command's seconds:")
    print("\n".join(f"  {seconds:>4} s  {status:<8} {what}"
                    for seconds, status, what in commands))


if __name__ == "__main__":
  main()
