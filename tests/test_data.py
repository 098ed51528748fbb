"""Built-in data sets, the user's own files, splits, and the final test."""

import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, subprocess_env
import rnnsweep as rs
from rnnsweep.tasks import files



@pytest.fixture
def no_network(monkeypatch):
  """Any attempt to open a connection fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def _index_sets(task):
  return [set(map(tuple, b.inputs.reshape(len(b.inputs), -1).round(5)))
          for b in task.splits]


# ---------------------------------------------------------------------------
# Built-in data sets
# ---------------------------------------------------------------------------


def test_digits(no_network):
  task = rs.make_task("classify", dataset="digits")
  sizes = [b.inputs.shape[0] for b in task.splits]
  assert sum(sizes) == 1797 and sizes == [1258, 270, 269]
  assert task.splits[0].inputs.shape[1:] == (8, 8)
  assert task.num_classes == 10 and task.seq_len == 8
  for b in task.splits:
    assert np.isfinite(b.inputs).all()
    np.testing.assert_array_equal(b.weights[:, -1], 1)  # label at the end
    assert b.weights.sum() == len(b.weights)
  a, v, t = _index_sets(task)
  assert not (a & v) and not (a & t) and not (v & t)
  again = rs.make_task("classify", dataset="digits")
  np.testing.assert_array_equal(again.splits[1].inputs, task.splits[1].inputs)
  other = rs.Classify(dataset="digits", split_seed=1)
  assert not np.array_equal(other.splits[1].inputs, task.splits[1].inputs)
  # Standardised with training statistics: training features ~ N(0, 1).
  x = task.splits[0].inputs.reshape(-1, 8)
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)


def test_japanese_vowels_variable_length(no_network):
  task = rs.make_task("classify", dataset="japanese_vowels")
  sizes = [b.inputs.shape[0] for b in task.splits]
  assert sizes == [216, 54, 370]  # official test set kept as test
  assert task.input_size == 12 and task.num_classes == 9
  lengths = np.concatenate([b.weights.argmax(1) + 1 for b in task.splits])
  assert lengths.min() == 7 and lengths.max() == task.seq_len == 29
  for b in task.splits:
    assert np.isfinite(b.inputs).all()
    n = b.weights.argmax(1) + 1
    pad = np.arange(task.seq_len)[None, :] >= n[:, None]
    assert np.all(b.inputs[pad] == 0)  # padding carries nothing ...
    assert np.all(b.weights[pad] == 0)  # ... and no loss


def test_sunspots_split_by_time_and_normalised_on_training(no_network):
  task = rs.make_task("forecast", dataset="sunspots", seq_len=12)
  assert task.series.shape == (309, 1)
  a, b = task.boundaries
  assert (a, b) == (216, 262)
  np.testing.assert_allclose(task.mean, task.series[:a].mean(0), rtol=1e-6)
  np.testing.assert_allclose(task.std, task.series[:a].std(0), rtol=1e-6)
  train, val, test = task.splits
  assert len(val.inputs) == b - a and len(test.inputs) == 309 - b
  # Every target of a split lies in that split's time range: the last
  # training target is step a-1; validation targets are steps a..b-1.
  z = (task.series - task.mean) / task.std
  np.testing.assert_allclose(train.targets[-1, -1], z[a - 1], rtol=1e-5)
  np.testing.assert_allclose(val.targets[:, -1], z[a:b], rtol=1e-5)
  np.testing.assert_allclose(test.targets[:, -1], z[b:], rtol=1e-5)
  assert task.persistence_mse() > 0


def test_forecast_normalisation_ignores_later_values(tmp_path):
  series = np.sin(np.arange(200) / 5.0).astype(np.float32)
  planted = series.copy()
  planted[150:] *= 1000.0  # validation/test values: must not matter
  for name, s in (("a.npy", series), ("b.npy", planted)):
    np.save(tmp_path / name, s)
  a = rs.Forecast(data_path=str(tmp_path / "a.npy"), seq_len=10)
  b = rs.Forecast(data_path=str(tmp_path / "b.npy"), seq_len=10)
  assert a.mean == b.mean and a.std == b.std


def test_copy_task_definition():
  task = rs.make_task("copy", seq_len=6, length=3, num_symbols=4)
  batch = rs.tasks.copy.copy_batch(__import__("jax").random.PRNGKey(0), 50,
                                   num_symbols=4, length=3, delay=6)
  x, y, w = (np.asarray(a) for a in batch)
  assert x.shape == (50, task.seq_len) == (50, 13)
  np.testing.assert_array_equal(x[:, 3:9], 4)  # blanks during the delay
  np.testing.assert_array_equal(x[:, 9], 5)  # delimiter
  np.testing.assert_array_equal(y[:, -3:], x[:, :3])  # recall the symbols
  np.testing.assert_array_equal(w.sum(1), 3)


# ---------------------------------------------------------------------------
# Your own files
# ---------------------------------------------------------------------------


def test_own_series_round_trip(tmp_path):
  s = np.random.default_rng(0).normal(size=(120, 2)).astype(np.float32)
  np.save(tmp_path / "s.npy", s)
  np.savez(tmp_path / "s.npz", series=s)
  with open(tmp_path / "s.csv", "w") as f:
    f.write("temp,load\n")
    for row in s:
      f.write(f"{float(row[0])!r},{float(row[1])!r}\n")
  # A first column of time stamps is the time axis, with a header or not.
  stamps = [f"2026-01-01T{i // 60:02d}:{i % 60:02d}" for i in range(120)]
  for name, header in (("d.csv", "time,temp,load\n"), ("n.csv", "")):
    with open(tmp_path / name, "w") as f:
      f.write(header)
      for stamp, row in zip(stamps, s):
        f.write(f"{stamp},{float(row[0])!r},{float(row[1])!r}\n")
  # pandas' to_csv() with its unnamed index (row numbers under an empty
  # header cell; a Series' header names its one column "0"); the rows may
  # be a filtered frame's, so the numbers need not run 0, 1, 2.
  for name, names in (("p.csv", "temp,load"), ("q.csv", "0,1")):
    with open(tmp_path / name, "w") as f:
      f.write(f",{names}\n")
      for i, row in enumerate(s):
        f.write(f"{3 * i},{float(row[0])!r},{float(row[1])!r}\n")
  for name in ("s.npy", "s.npz", "s.csv", "d.csv", "n.csv", "p.csv",
               "q.csv"):
    np.testing.assert_allclose(files.load_series(str(tmp_path / name)), s,
                               rtol=1e-6)
  # A named numeric column, or an unnamed one that is not row numbers, is
  # a channel.
  for name, header, first in (("k.csv", "step,temp,load", "{i}"),
                              ("u.csv", ",temp,load", "{i}.5")):
    with open(tmp_path / name, "w") as f:
      f.write(header + "\n")
      for i, row in enumerate(s):
        f.write(first.format(i=i) + f",{float(row[0])!r},{float(row[1])!r}\n")
    got = files.load_series(str(tmp_path / name))
    np.testing.assert_allclose(got[:, 1:], s, rtol=1e-6)
    np.testing.assert_allclose(got[:, 0], np.arange(120) + (
        0.5 if name == "u.csv" else 0))
  task = rs.make_task("forecast", data_path=str(tmp_path / "s.csv"),
                      seq_len=8)
  assert task.input_size == task.output_size == 2


def test_own_labelled_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 9, 3)).astype(np.float32)
  lengths = rng.integers(2, 10, size=60)
  x[np.arange(9)[None, :] >= lengths[:, None]] = 0
  y = rng.integers(0, 4, size=60)
  np.savez(tmp_path / "d.npz", x=x, y=y, lengths=lengths, num_classes=5)
  got = files.load_labelled(str(tmp_path / "d.npz"))
  np.testing.assert_array_equal(got[0], x)
  np.testing.assert_array_equal(got[1], lengths)
  np.testing.assert_array_equal(got[2], y)
  assert got[3] == 5
  with open(tmp_path / "d.csv", "w") as f:
    f.write("label,t0,t1,t2,t3\n1,0.5,0.25,1.5,2\n0,3,4,,\n2,1,1,1,\n")
  cx, cl, cy, _ = files.load_labelled(str(tmp_path / "d.csv"))
  assert cx.shape == (3, 4, 1) and list(cl) == [4, 2, 3] and list(cy) == [1,
                                                                          0, 2]
  assert cx[1, 2, 0] == 0 and cx[0, 2, 0] == 1.5
  task = rs.make_task("classify", data_path=str(tmp_path / "d.npz"))
  assert task.num_classes == 5 and task.input_size == 3


def test_own_text(tmp_path):
  p = tmp_path / "t.txt"
  p.write_text("the quick brown fox jumps over the lazy dog. " * 100)
  task = rs.make_task("lm", data_path=str(p), seq_len=16)
  assert task.vocab_size == len(set(p.read_text()))


def _write(path, content):
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  return str(path)


@pytest.mark.parametrize("make, words", [
    (lambda d: rs.make_task("lm", data_path=str(d / "missing.txt")),
     ["missing.txt", "no such file"]),
    (lambda d: rs.make_task("lm", data_path=_write(d / "e.txt", "")),
     ["e.txt", "empty"]),
    (lambda d: rs.make_task("lm", data_path=_write(d / "b.txt", b"\xff\xfe"
                                                   b"\x00abc")),
     ["b.txt", "not UTF-8"]),
    (lambda d: rs.make_task("lm", data_path=_write(d / "s.txt", "abcab"),
                            seq_len=8), ["s.txt", "too short"]),
    (lambda d: rs.make_task("forecast", data_path=_write(
        d / "n.csv", "1\n2\nnan\n4\n" * 30)), ["n.csv", "NaN", "(2, 0)"]),
    (lambda d: rs.make_task("forecast", data_path=_write(d / "e.csv", "")),
     ["e.csv", "empty"]),
    (lambda d: rs.make_task("forecast", data_path=_write(
        d / "r.csv", "1,2\n3\n")), ["r.csv", "different numbers of columns"]),
    # pandas' index column goes with its header; a gap in the first row
    # is then a missing value, not a header.
    (lambda d: rs.make_task("forecast", data_path=_write(
        d / "p.csv", ",temp\n0,\n" + "".join(
            f"{i},{i}.5\n" for i in range(1, 40))), seq_len=4),
     ["p.csv", "NaN", "(0, 0)"]),
    # Text in a later column is no time stamp.
    (lambda d: rs.make_task("forecast", data_path=_write(
        d / "w.csv", "1,a\n2,b\n" * 30)), ["w.csv", "not a number"]),
    (lambda d: rs.make_task("forecast", data_path=_write(
        d / "t.csv", "\n".join(str(i) for i in range(20))), seq_len=14),
     ["t.csv", "too few"]),
    (lambda d: rs.make_task("forecast", data_path=_write(d / "x.json", "[]")),
     ["x.json", "unknown file type"]),
    (lambda d: (np.save(d / "c.npy", np.zeros((4, 5, 6))),
                rs.make_task("forecast", data_path=str(d / "c.npy")))[1],
     ["c.npy", "[T] or [T, C]", "[4, 5, 6]"]),
    (lambda d: (np.savez(d / "m.npz", x=np.zeros((5, 3))),
                rs.make_task("classify", data_path=str(d / "m.npz")))[1],
     ["m.npz", "missing", "'y'"]),
    (lambda d: (np.savez(d / "s.npz", x=np.zeros((5, 3, 2)),
                         y=np.zeros(4, int)),
                rs.make_task("classify", data_path=str(d / "s.npz")))[1],
     ["s.npz", "y must have shape [N] = [5]"]),
    (lambda d: (np.savez(d / "l.npz", x=np.zeros((5, 3)), y=[0, 1, 2, 7, 1],
                         num_classes=3),
                rs.make_task("classify", data_path=str(d / "l.npz")))[1],
     ["l.npz", "label 7 is outside the class range [0, 3)"]),
    (lambda d: (np.savez(d / "g.npz", x=np.zeros((5, 3)), y=[0, 1, -1, 0, 1]),
                rs.make_task("classify", data_path=str(d / "g.npz")))[1],
     ["g.npz", "label -1 is negative"]),
    (lambda d: (np.savez(d / "f.npz", x=np.zeros((5, 3)),
                         y=[0, 1, 0.5, 0, 1]),
                rs.make_task("classify", data_path=str(d / "f.npz")))[1],
     ["f.npz", "labels must be integers"]),
    (lambda d: (np.savez(d / "q.npz", x=np.where(np.eye(5, 3) > 0, np.nan, 0),
                         y=[0, 1, 0, 0, 1]),
                rs.make_task("classify", data_path=str(d / "q.npz")))[1],
     ["q.npz", "NaN", "(0, 0, 0)"]),
    (lambda d: rs.make_task("classify", data_path=_write(
        d / "h.csv", "1,2,3\n0,,4\n")), ["h.csv", "row 2", "step 0"]),
    (lambda d: rs.make_task("classify", dataset="mnist"),
     ["dataset must be one of", "digits"]),
    (lambda d: rs.make_task("classify", seq_len=4),
     ["has no option 'seq_len'", "dataset"]),
])
def test_bad_files_give_clear_errors(tmp_path, make, words):
  with pytest.raises(ValueError) as e:
    make(tmp_path)
  message = str(e.value)
  assert "\n" not in message
  for w in words:
    assert w in message, message


def test_split_smaller_than_a_batch_is_refused_before_writing(tmp_path):
  np.savez(tmp_path / "tiny.npz", x=np.zeros((20, 4)), y=np.arange(20) % 2)
  task = rs.make_task("classify", data_path=str(tmp_path / "tiny.npz"))
  with pytest.raises(ValueError, match=r"tiny.npz: the training split has 14 "
                     r"sequences, fewer than one batch \(batch_size 32\)"):
    rs.run_trials(task, [{"batch_size": 32}], steps=2, eval_every=2,
                  workdir=str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
       "--task=classify", f"--data_path={tmp_path / 'tiny.npz'}",
       f"--workdir={tmp_path / 'w2'}"], capture_output=True, text=True,
      env=subprocess_env(), timeout=300, check=False)
  assert out.returncode != 0 and "fewer than one batch" in out.stderr
  assert "Traceback" not in out.stderr and not (tmp_path / "w2").exists()


# ---------------------------------------------------------------------------
# Training beats trivial baselines; the test split uses the best parameters
# ---------------------------------------------------------------------------


def _sweep(task, space, steps=150):
  return rs.sweep(task, rs.Space(space), sampler="grid", steps=steps,
                  eval_every=steps // 3)


@pytest.mark.slow
def test_classification_beats_chance():
  task = rs.make_task("classify", dataset="digits")
  r = _sweep(task, {"cell": "gru", "hidden_size": 32,
                    "learning_rate": rs.Choice([1e-2])})
  assert r.best.best_value > 3 * task.chance_accuracy
  assert r.best.test_metrics["accuracy"] > 3 * task.chance_accuracy


@pytest.mark.slow
def test_forecast_beats_persistence():
  task = rs.make_task("forecast", dataset="sunspots")
  r = _sweep(task, {"cell": "gru", "hidden_size": 32, "batch_size": 16,
                    "learning_rate": rs.Choice([1e-2])})
  assert r.best.best_value < 0.8 * task.persistence_mse(1)
  assert r.best.test_metrics["mse"] < task.persistence_mse(2)


@pytest.mark.slow
def test_adding_beats_the_mean_predictor():
  task = rs.make_task("adding", seq_len=20)
  r = _sweep(task, {"cell": "gru", "hidden_size": 16,
                    "learning_rate": rs.Choice([1e-2])}, steps=300)
  mean_predictor = rs.tasks.adding.MEAN_PREDICTOR_MSE  # 1/6
  assert r.best.best_value < 0.5 * mean_predictor
  assert r.best.test_metrics["mse"] < 0.5 * mean_predictor


@pytest.mark.slow
def test_copy_beats_chance():
  task = rs.make_task("copy", seq_len=5, length=3, num_symbols=4)
  r = _sweep(task, {"cell": "gru", "hidden_size": 32,
                    "learning_rate": rs.Choice([2e-2])}, steps=300)
  assert r.best.best_value > 2 * (1 / 4)


def test_test_split_uses_the_best_validation_parameters(tiny_adding):
  """A trial's test metrics equal those of the same trial stopped at its
  best validation step."""
  config = dict(hidden_size=8, batch_size=8, cell="gru", learning_rate=0.3,
                seed=5)  # a large rate: the best step is not the last
  long = rs.run_trials(tiny_adding, [config], steps=40, eval_every=4).trials[0]
  curve = long.curves["val/mse"]
  assert long.best_step < 40 and curve[-1] > long.best_value
  short = rs.run_trials(tiny_adding, [config], steps=long.best_step,
                        eval_every=4).trials[0]
  assert short.best_step == long.best_step
  assert short.best_value == long.best_value
  assert short.test_metrics == long.test_metrics
  assert math.isfinite(long.test_metrics["mse"])
