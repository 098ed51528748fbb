"""Reading the user's own data files, with one clear error per problem.

Layouts (documented in the README):

- text (``lm``): a UTF-8 text file.
- series (``forecast``): ``.npy`` holding ``[T]`` or ``[T, C]``; ``.npz``
  with an array ``series`` (or exactly one array) of that shape; ``.csv``
  with one row per time step and one column per channel (an optional header
  row of names is skipped, and so is a first column of time stamps: one
  without a number below the header, or pandas' unnamed index: row numbers
  under an empty header cell).
- labelled sequences (``classify``): ``.npz`` with ``x`` ``[N, L, F]`` (or
  ``[N, L]`` for one feature), ``y`` ``[N]`` integer labels, optionally
  ``lengths`` ``[N]`` (real steps of each sequence; the rest is padding) and
  ``num_classes``; or ``.csv`` with one sequence per row: the label first,
  then the values of a univariate series (a shorter sequence leaves its
  last cells empty).

Every error is a ``ValueError`` whose message starts with the file's path.
"""

from __future__ import annotations

import csv
import os

import numpy as np


def _fail(path: str, problem: str) -> ValueError:
  return ValueError(f"{path}: {problem}")


def _check_exists(path: str) -> None:
  if not os.path.exists(path):
    raise _fail(path, "no such file")
  if os.path.isdir(path):
    raise _fail(path, "is a directory, not a file")
  if os.path.getsize(path) == 0:
    raise _fail(path, "the file is empty")


def _first_non_finite(a: np.ndarray) -> str | None:
  bad = np.argwhere(~np.isfinite(a))
  return None if bad.size == 0 else str(tuple(int(i) for i in bad[0]))


def load_text(path: str) -> str:
  _check_exists(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise _fail(path, f"not UTF-8 text ({e.reason} at byte {e.start})"
                ) from None
  if not text.strip():
    raise _fail(path, "the file holds no text")
  return text


def _read_csv(path: str) -> list[list[str]]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
  if not rows:
    raise _fail(path, "the file holds no rows")
  return rows


def _is_float(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def load_series(path: str) -> np.ndarray:
  """A time series as ``float32 [T, C]``."""
  _check_exists(path)
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".npy":
      a = np.load(path, allow_pickle=False)
    elif ext == ".npz":
      with np.load(path, allow_pickle=False) as z:
        if "series" in z.files:
          a = z["series"]
        elif len(z.files) == 1:
          a = z[z.files[0]]
        else:
          raise _fail(path, f"expected an array named 'series' (or a single "
                      f"array), found {sorted(z.files)}")
    elif ext == ".csv":
      rows = _read_csv(path)
      if (len(rows[0]) > 1 and len(rows) > 1 and not rows[0][0].strip()
          and all(c.strip() for c in rows[0][1:])
          and all(r[0].strip().isdigit() for r in rows[1:])):
        # pandas' unnamed index (``to_csv()``'s default): a first column
        # of row numbers that the header, naming every other column, does
        # not name. That header goes too, whatever it names the columns
        # (a Series' is "0").
        rows = [r[1:] for r in rows[1:]]
      else:
        if len(rows[0]) > 1 and len(rows) > 1 and not any(
            _is_float(r[0]) for r in rows[1:]):
          # A first column of time stamps (dates, times: not one number
          # below a header) is the series' time axis, not a channel.
          rows = [r[1:] for r in rows]
        if not all(_is_float(c) for c in rows[0]):
          rows = rows[1:]  # a header of channel names
      if not rows:
        raise _fail(path, "the file holds a header but no values")
      widths = {len(r) for r in rows}
      if len(widths) != 1:
        raise _fail(path, f"rows have different numbers of columns "
                    f"{sorted(widths)}")
      try:
        a = np.array([[float(c) if c.strip() else np.nan for c in r]
                      for r in rows])
      except ValueError as e:
        raise _fail(path, f"a value is not a number ({e})") from None
    else:
      raise _fail(path, f"unknown file type {ext!r}; use .npy, .npz or .csv")
  except (OSError, ValueError) as e:
    if str(e).startswith(path):
      raise
    raise _fail(path, f"cannot be read ({e})") from None
  if a.dtype.kind not in "fiu":
    raise _fail(path, f"expected numbers, found dtype {a.dtype}")
  if a.ndim == 1:
    a = a[:, None]
  if a.ndim != 2:
    raise _fail(path, f"expected a series of shape [T] or [T, C], found "
                f"shape {list(a.shape)}")
  if a.shape[0] == 0 or a.shape[1] == 0:
    raise _fail(path, f"the series is empty (shape {list(a.shape)})")
  a = a.astype(np.float32)
  where = _first_non_finite(a)
  if where is not None:
    raise _fail(path, f"NaN or infinite value at (step, channel) {where}")
  return a


def load_labelled(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                      int | None]:
  """Labelled sequences: ``(x [N, L, F] float32, lengths [N] int,
  y [N] int, num_classes or None)``; padding steps of ``x`` are zero."""
  _check_exists(path)
  ext = os.path.splitext(path)[1].lower()
  num_classes = None
  if ext == ".npz":
    try:
      with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
          raise _fail(path, f"missing array(s) {missing}; expected 'x' "
                      f"[N, L, F], 'y' [N] and optionally 'lengths' [N], "
                      f"'num_classes'")
        x, y = z["x"], z["y"]
        lengths = z["lengths"] if "lengths" in z.files else None
        if "num_classes" in z.files:
          given = z["num_classes"]
          if given.ndim != 0 or given.dtype.kind not in "iu" or int(
              given) < 1:
            raise _fail(path, f"'num_classes' must be one positive integer, "
                        f"got {given.dtype}{list(given.shape)}")
          num_classes = int(given)
    except (OSError, ValueError) as e:
      if str(e).startswith(path):
        raise
      raise _fail(path, f"cannot be read ({e})") from None
  elif ext == ".csv":
    rows = _read_csv(path)
    if not _is_float(rows[0][0]):
      rows = rows[1:]
    if not rows:
      raise _fail(path, "the file holds a header but no sequences")
    width = max(len(r) for r in rows) - 1
    if width < 1:
      raise _fail(path, "each row needs a label and at least one value")
    y_cells = [r[0] for r in rows]
    try:
      x = np.array([[float(c) if c.strip() else np.nan for c in r[1:]] +
                    [np.nan] * (width + 1 - len(r)) for r in rows])
      y = np.array([float(c) for c in y_cells])
    except ValueError as e:
      raise _fail(path, f"a cell is not a number ({e})") from None
    # Trailing empty cells are padding; anything missing before is an error.
    finite = np.isfinite(x)
    lengths = np.where(finite.any(1), width - np.argmax(finite[:, ::-1], 1),
                       0)
    x = np.where(finite, x, 0.0)[..., None]
    for i, n in enumerate(lengths):
      if n == 0:
        raise _fail(path, f"row {i + 1} has a label but no values")
      if not finite[i, :n].all():
        raise _fail(path, f"row {i + 1} has an empty or non-numeric cell at "
                    f"step {int(np.argmin(finite[i, :n]))}")
  else:
    raise _fail(path, f"unknown file type {ext!r}; use .npz or .csv")
  if x.dtype.kind not in "fiu":
    raise _fail(path, f"x must hold numbers, found dtype {x.dtype}")
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or 0 in x.shape:
    raise _fail(path, f"x must have shape [N, L, F] (or [N, L]), found "
                f"{list(x.shape)}")
  n, max_len = x.shape[:2]
  if y.ndim != 1 or y.shape[0] != n:
    raise _fail(path, f"y must have shape [N] = [{n}], found "
                f"{list(y.shape)}")
  if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
    raise _fail(path, "labels must be integers")
  if y.dtype.kind not in "fiu":
    raise _fail(path, f"labels must be integers, found dtype {y.dtype}")
  y = y.astype(np.int64)
  if lengths is None:
    lengths = np.full(n, max_len)
  lengths = np.asarray(lengths).astype(np.int64)
  if lengths.shape != (n,) or lengths.min() < 1 or lengths.max() > max_len:
    raise _fail(path, f"lengths must be [N] integers in [1, {max_len}]")
  if y.min() < 0:
    raise _fail(path, f"label {int(y.min())} is negative; labels are class "
                f"indices 0..C-1")
  if num_classes is not None and y.max() >= num_classes:
    raise _fail(path, f"label {int(y.max())} is outside the class range "
                f"[0, {num_classes})")
  x = x.astype(np.float32)
  real = np.arange(max_len)[None, :] < lengths[:, None]
  where = _first_non_finite(np.where(real[..., None], x, 0.0))
  if where is not None:
    raise _fail(path, f"NaN or infinite value in x at (sequence, step, "
                f"feature) {where}")
  return np.where(real[..., None], x, 0.0), lengths, y, num_classes
