"""Reports and figures, on finished, running and planted sweeps."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, planted_workdir, subprocess_env
import rnnsweep as rs
from rnnsweep import report



def test_boundary_warning_fires_on_planted_edge(tmp_path):
  # Loss falls as the learning rate grows: the best sit at the top edge.
  wd = planted_workdir(tmp_path / "edge", lambda p: 1.0 / p["learning_rate"])
  r = report.write_report(wd, plots=False)
  assert len(r.warnings) == 1
  assert r.warnings[0].startswith("warning: learning_rate:")
  assert "high edge" in r.warnings[0] and r.warnings[0] in r.text
  # The next move's space reaches past that edge: half of 3 decades,
  # capped at a factor of 10.
  assert '"learning_rate": {"log_uniform": [0.0001, 1.0]}' in r.text
  assert '"output_dropout": {"uniform": [0.0, 0.5]}' in r.text


def test_boundary_warning_agrees_in_number():
  one = report.Edge("learning_rate", "high", 1, 1, (1e-3, 2e-2)).warning()
  assert "the best trial (1 of the top 1) sits at the high edge" in one
  four = report.Edge("output_dropout", "low", 3, 4, (0.0, 0.5)).warning()
  assert "the best trials (3 of the top 4) sit at the low edge" in four
  assert "[0, 0.5]" in four
  limit = report.Edge("recurrent_dropout", "low", 1, 1, (0.0, 0.2),
                      widens=False).warning()
  assert limit == ("note: recurrent_dropout: the best trial (1 of the top 1) "
                   "sits at the low edge of the range [0, 0.2], as low as "
                   "recurrent_dropout goes: the range cannot widen there")


DROPOUT_AT_0 = (
    "\nnote: output_dropout: the best trials (4 of the top 4) sit at the low "
    "edge of the range [0, 0.5], as low as output_dropout goes: the range "
    "cannot widen there\n")


def test_pbt_edges_and_next_move_read_the_values_at_the_best_step(tmp_path):
  # The loss is the dropout rate; the best (low-dropout) trials began
  # anywhere in learning rate, but each had moved, by a PBT exploit at
  # step 5 (before its best, at step 10), to learning rate 0.09: the high
  # edge of [1e-4, 1e-1].
  low = lambda p: p["output_dropout"] < 0.1
  wd = planted_workdir(
      tmp_path / "pbt", lambda p: p["output_dropout"],
      lambda p: (5, {"learning_rate": 0.09}, 3) if low(p) else None)
  r = report.write_report(wd, plots=False)
  assert [w.split(":")[1] for w in r.warnings] == [" learning_rate"]
  assert "high edge" in r.warnings[0]
  # The best also sit at a dropout rate of 0, the lowest there is: a note,
  # not a warning to widen.
  assert DROPOUT_AT_0 in r.text
  assert "(PBT: each trial's values at its best step" in r.text
  assert '"learning_rate": 0.09' in r.text  # the next move's base
  # The "Best" line lists the starting values (as the leaderboard and the
  # CSV do) and says what the trial ran with when it reached its best.
  best = r.text.split("\nBest: ")[1].splitlines()
  assert best[2] == (
      "  (PBT: these are its starting values; at its best step, 10, it ran "
      "with learning_rate=0.09, set at step 5 when it took trial 3's "
      "weights)"), best
  # The same exploits at step 10, after the evaluation that was each
  # trial's best: the values at the best are the starting ones.
  wd = planted_workdir(
      tmp_path / "late", lambda p: p["output_dropout"],
      lambda p: (10, {"learning_rate": 0.09}) if low(p) else None)
  r = report.write_report(wd, plots=False)
  assert r.warnings == [] and DROPOUT_AT_0 in r.text
  assert "(PBT: each trial's values at its best step" in r.text
  assert '"learning_rate": 0.09' not in r.text
  best = r.text.split("\nBest: ")[1].splitlines()
  assert best[2] == (
      "  (PBT: it reached its best on these, its starting values; its first "
      "exploit came after, at step 10)"), best


def test_pbt_summary_names_the_best_trial_by_the_sweeps_direction(tmp_path):
  # Every trial exploited trial 7 at step 5; the metric is the dropout
  # rate. The summary's example lineage is the best trial's: the highest
  # rate where higher is better, the lowest where lower is.
  for mode, pick in (("max", max), ("min", min)):
    wd = planted_workdir(tmp_path / mode, lambda p: p["output_dropout"],
                         lambda p: (5, {"learning_rate": 0.01}, 7),
                         selection_mode=mode,
                         scheduler={"name": "pbt", "pbt_interval": 5})
    rate = {r.trial_id: r.params["output_dropout"]
            for r in rs.Store(wd).results()}
    text = report.write_report(wd, plots=False).text
    assert ("Scheduler pbt (pbt_interval=5):\n  40 exploits (a trial copied "
            "a better one's weights and perturbed its values)\n  e.g. trial "
            f"{pick(rate, key=rate.get)}: copied trial 7 at step 5\n") in text, (
                mode, text)


def test_seed_replicates_are_ranked_by_their_mean(tmp_path):
  # Three learning rates, each with seeds 1, 2, 3. The best single trial
  # (rate 0.1, seed 1) is luck: that rate's mean is worse than 0.01's.
  loss = {0.1: (0.1, 0.9, 0.8), 0.01: (0.3, 0.3, 0.3), 0.001: (0.5, 0.6, 1.0)}
  space = rs.Space({"learning_rate": rs.Choice([0.001, 0.01, 0.1]),
                    "seed": rs.Choice([1, 2, 3])})
  # The last trial runs rate 0.01 with seed 1 again: the same run, no
  # fourth seed.
  configs = [t.params for t in rs.grid(space)]
  wd = planted_workdir(
      tmp_path / "seeds", lambda p: loss[p["learning_rate"]][p["seed"] - 1],
      space=space, trials=rs.samplers.make_trials(
          configs + [{**configs[0], "learning_rate": 0.01, "seed": 1}]))
  ids = {}
  for r in rs.Store(wd).results():
    ids.setdefault((r.params["learning_rate"], r.params["seed"]), r.trial_id)
  ids_of = lambda rate: ",".join(str(ids[rate, s]) for s in (
      sorted((1, 2, 3), key=lambda s: loss[rate][s - 1])))
  r = report.write_report(wd, plots=False)
  lines = r.text.splitlines()
  assert lines[4].split() == ["rank", "trial", "val", "loss", "step", "test",
                              "loss", "learning_rate", "seed"]
  at = lines.index("Configurations trained with several seeds (3), by their "
                   "mean (the spread over seeds is noise a single trial's "
                   "rank does not show):")
  assert lines[at + 1].split() == ["rank", "seeds", "mean", "val", "loss",
                                   "std", "mean", "test", "loss", "trials",
                                   "learning_rate"]
  # Means and sample standard deviations by hand: 0.3 +- 0; 0.6 +-
  # sqrt((0.25 + 0.09 + 0.04) / 2); 0.7 +- sqrt((0.04 + 0.01 + 0.09) / 2).
  assert [l.split() for l in lines[at + 3:at + 6]] == [
      ["1", "3", "0.3", "0", "-", ids_of(0.01), "0.01"],
      ["2", "3", "0.6", "0.4359", "-", ids_of(0.1), "0.1"],
      ["3", "3", "0.7", "0.2646", "-", ids_of(0.001), "0.001"]]
  # The seed is no hyperparameter: no warning that seed 1 sits at the low
  # edge, and the next move starts from the best mean, with the same seeds.
  assert not any("seed" in w for w in r.warnings)
  # Nor does the lucky trial's rate, 0.1, make an edge: the edges are read
  # off the configurations' means, each configuration once.
  assert r.warnings == []
  assert (f"  (every configuration ran with several seeds: the best by its "
          f"mean comes first, trials {ids_of(0.01).replace(',', ', ')})"
          ) in lines
  assert "--around='{\"learning_rate\": 0.01, " in r.text
  assert '"seed": [1, 2, 3]' in r.text
  # Where the best mean is an edge's (0.001 here), the warning says so
  # once, of that configuration; the best single trial is rate 0.1's.
  loss[0.001] = (0.25, 0.25, 0.25)
  edge = planted_workdir(
      tmp_path / "edge", lambda p: loss[p["learning_rate"]][p["seed"] - 1],
      space=space)
  assert report.write_report(edge, plots=False).warnings == [
      "warning: learning_rate: the best configuration by its mean over seeds "
      "(1 of the top 1) sits at the low edge of the range [0.001, 0.1]; the "
      "optimum may lie outside it, widen the range"]


def test_no_boundary_warning_for_an_interior_optimum(tmp_path):
  import math
  wd = planted_workdir(tmp_path / "mid", lambda p: (
      (math.log10(p["learning_rate"]) + 2.5) ** 2 +
      (p["output_dropout"] - 0.25) ** 2))
  r = report.write_report(wd, plots=False)
  assert r.warnings == []


def test_report_figures_on_a_finished_sweep(tmp_path):
  wd = planted_workdir(tmp_path / "done", lambda p: 1.0 / p["learning_rate"])
  r = report.write_report(wd, top=5)
  names = sorted(os.path.basename(f) for f in r.figures)
  assert names == sorted(["points.png", "curves.png", "parallel.png",
                          "axis_learning_rate.png",
                          "axis_output_dropout.png", "axis_cell.png"])
  for f in r.figures:
    with open(f, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(f) > 5000
  assert "Top 5 of 40 trials (40 completed)" in r.text
  assert r.counts == {"completed": 40}


def test_report_script_on_a_running_sweep(tmp_path):
  """Kill a sweep after its first group; the report reads what is there."""
  wd = tmp_path / "run"
  env = subprocess_env(RNNSWEEP_KILL_AT="group_recorded:1")
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
       "--task=adding", "--seq_len=6", "--num_trials=6", "--steps=2",
       "--eval_every=1", "--max_group_size=2",
       '--space={"hidden_size": 4, "batch_size": 2, "cell": ["lstm", "gru"],'
       ' "learning_rate": {"log_uniform": [0.001, 0.1]}}',
       f"--workdir={wd}"], env=env, capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
  env.pop("RNNSWEEP_KILL_AT")
  rep = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "report.py"),
       f"--workdir={wd}"], env=env, capture_output=True, text=True,
      timeout=300, check=False)
  assert rep.returncode == 0, rep.stderr[-2000:]
  assert "completed 2" in rep.stdout and "pending" in rep.stdout
  for name in ("points.png", "curves.png", "axis_learning_rate.png",
               "axis_cell.png", "parallel.png"):
    assert (wd / name).stat().st_size > 5000


def test_report_errors(tmp_path):
  with pytest.raises(ValueError, match="holds no sweep"):
    report.write_report(str(tmp_path / "nothing"))
  wd = planted_workdir(tmp_path / "p", lambda p: p["output_dropout"])
  with pytest.raises(ValueError, match="pair must name two tuned"):
    report.write_report(wd, pair=["learning_rate", "hidden_size"])
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "report.py"),
       f"--workdir={tmp_path / 'nothing'}"], capture_output=True, text=True,
      env=subprocess_env(), timeout=120, check=False)
  assert out.returncode != 0 and "holds no sweep" in out.stderr
  assert "Traceback" not in out.stderr


def test_progress_bar_draws_on_a_terminal_only():
  import io
  from rich.console import Console
  from rnnsweep.progress import SweepProgress
  buf = io.StringIO()
  console = Console(file=buf, force_terminal=True, width=150)
  with SweepProgress(total_trial_steps=40, total_trials=4, total_groups=2,
                     metric="mse", console=console) as bar:
    bar.advance(10)
    bar.trials_finished(1, pruned=1, refilled=1, steps_saved=5, running=2)
    # Trials count as they finish, not only when their group does.
    described = [bar._describe()]
    bar.advance(10)
    bar.trials_finished(1, running=1)
    described.append(bar._describe())
    bar.group_done(0.125)
    bar.wrap_log(print)("group 1 done")
    bar.advance(15)
    bar.trials_finished(2)
    bar.group_done(0.0625)
  text = buf.getvalue()
  assert described == [
      "trials 1/4 (1 pruned, 1 slots refilled), 2 training groups 0/2",
      "trials 2/4 (1 pruned, 1 slots refilled), 1 training groups 0/2"]
  assert bar._progress.tasks[0].total == 35  # the pruned trial's 5 steps
  assert "trials 4/4 (1 pruned, 1 slots refilled) groups 2/2" in text
  assert "best mse 0.0625" in text
  assert "trial-steps/s" in text and "group 1 done" in text
  quiet = io.StringIO()
  plain = Console(file=quiet, force_terminal=False)
  with SweepProgress(total_trial_steps=40, total_trials=4, total_groups=2,
                     metric="mse", console=plain) as bar:
    bar.advance(40)
    bar.trials_finished(4)
    bar.group_done(0.5)
  assert quiet.getvalue() == ""
  assert not bar.enabled
