"""Optuna and TensorBoard exports round-trip."""

import math
import os
import struct
import subprocess
import sys

import optuna
import pytest

from conftest import ROOT, planted_workdir, subprocess_env
import rnnsweep as rs
from rnnsweep import interop



def _metric(p):
  return (math.log10(p["learning_rate"]) + 2.0) ** 2 + p["output_dropout"]


def test_optuna_export_round_trips(tmp_path):
  wd = planted_workdir(tmp_path / "sweep", _metric)
  storage = f"sqlite:///{tmp_path / 'optuna.db'}"
  interop.export_optuna(wd, storage, study_name="s")
  interop.export_optuna(wd, storage, study_name="s")  # re-export replaces
  study = optuna.load_study(study_name="s", storage=storage)
  results = rs.Store(wd).results()
  assert len(study.trials) == len(results) == 40
  assert study.direction == optuna.study.StudyDirection.MINIMIZE
  for t, r in zip(sorted(study.trials, key=lambda t: t.number), results):
    assert t.user_attrs["rnnsweep_trial_id"] == r.trial_id
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.value == r.best_value
    assert t.params == {k: r.params[k] for k in
                        ("learning_rate", "output_dropout", "cell")}
    assert t.intermediate_values == {5: r.best_value + 1, 10: r.best_value}
    assert t.user_attrs["fixed_params"]["hidden_size"] == 128
  lr = study.trials[0].distributions["learning_rate"]
  assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
  assert (lr.low, lr.high) == (1e-4, 1e-1)
  best = min(results, key=lambda r: r.best_value)
  assert study.best_trial.user_attrs["rnnsweep_trial_id"] == best.trial_id
  with pytest.raises(ValueError, match="already has a study"):
    interop.export_optuna(wd, storage, study_name="s", replace=False)


def test_optuna_export_of_a_sweep_with_unfinished_and_diverged_trials(
    tmp_path, tiny_adding):
  configs = [dict(hidden_size=4, batch_size=2, learning_rate=lr)
             for lr in (1e-3, 1e-2)]
  configs.append(dict(hidden_size=4, batch_size=2, learning_rate=1e35,
                      grad_clip=0.0))
  rs.run_trials(tiny_adding, configs, steps=4, eval_every=2,
                workdir=str(tmp_path))
  store = rs.Store(str(tmp_path))
  # Plan two more trials that have not run: a running sweep's state.
  more = rs.make_trials([{**tiny_adding.base_params(), **c} for c in
                         configs + [dict(configs[0], learning_rate=3e-3)] * 2])
  rs.resume.prepare(store, dict(store.settings(), num_trials=5), more,
                    max_group_size=32, extend=True)
  storage = f"sqlite:///{tmp_path / 'optuna.db'}"
  study = interop.export_optuna(str(tmp_path), storage)
  states = [t.state.name for t in sorted(study.trials,
                                         key=lambda t: t.number)]
  assert states == ["COMPLETE", "COMPLETE", "FAIL", "WAITING", "WAITING"]
  assert study.study_name == f"rnnsweep-{tmp_path.name}"


def _events(path):
  """Reads a TFRecord event file with tensorboardX's own protobufs."""
  from tensorboardX.proto import event_pb2
  out = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      f.read(4)
      ev = event_pb2.Event()
      ev.ParseFromString(data)
      out.append(ev)
  return out


def test_tensorboard_export(tmp_path):
  wd = planted_workdir(tmp_path / "sweep", _metric)
  logdir = interop.export_tensorboard(wd)
  runs = sorted(os.listdir(logdir))
  assert len(runs) == 40 and runs[0] == "trial_00000"
  result = rs.Store(wd).results()[0]
  scalars, plugins = {}, set()
  for root, _, files in os.walk(os.path.join(logdir, runs[0])):
    for name in files:
      for ev in _events(os.path.join(root, name)):
        for v in ev.summary.value:
          if v.metadata.plugin_data.plugin_name:
            plugins.add(v.metadata.plugin_data.plugin_name)
          if v.HasField("simple_value"):
            scalars.setdefault(v.tag, {})[ev.step] = v.simple_value
  assert scalars["val/loss"] == pytest.approx(
      {5: result.best_value + 1, 10: result.best_value})
  assert scalars["train_loss"] == {5: 2.0, 10: 1.0}
  assert "hparams" in plugins


def test_report_script_exports(tmp_path):
  wd = planted_workdir(tmp_path / "sweep", _metric)
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "report.py"),
       f"--workdir={wd}", "--noplots",
       f"--optuna_storage=sqlite:///{tmp_path / 'o.db'}",
       f"--tensorboard={tmp_path / 'tb'}"], capture_output=True, text=True,
      env=subprocess_env(), timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Exported: Optuna study 'rnnsweep-sweep'" in out.stdout
  assert len(os.listdir(tmp_path / "tb")) == 40
