"""A live progress bar for sweeps (rich, which flax already depends on).

Shows trials done / total (moving as each trial finishes, not only when a
group does), trials pruned and slots refilled by a scheduler, groups done,
trial-steps per second, the best metric so far and the time left. It draws only on a terminal: when
stderr is a file or a pipe (CI, ``nohup``, a notebook's captured output) it
stays silent and the per-group log lines are all that is printed.
"""

from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text


class _RateColumn(ProgressColumn):
  """Trial-steps per second (rich measures the speed of ``advance``)."""

  def render(self, task) -> Text:
    speed = task.finished_speed or task.speed
    return Text("-- trial-steps/s" if speed is None
                else f"{speed:,.0f} trial-steps/s")


class SweepProgress:
  """Context manager around a sweep's loop.

  Args:
    total_trial_steps: trial-steps the run has left (sets the ETA).
    total_trials, total_groups: what the run has left.
    metric: the selection metric's name.
    console: where to draw; default stderr. The bar is off unless it is a
      terminal.
    enabled: ``False`` turns the bar off regardless.
  """

  def __init__(self, *, total_trial_steps: int, total_trials: int,
               total_groups: int, metric: str, console: Console | None = None,
               enabled: bool = True):
    self.console = console or Console(stderr=True)
    self.enabled = enabled and self.console.is_terminal
    self.total_trials = total_trials
    self.total_groups = total_groups
    self.metric = metric
    self.trials_done = 0
    self.groups_done = 0
    self.pruned = 0
    self.refilled = 0
    self.running = 0
    self.best: float | None = None
    self._progress = None
    self._task = None
    if self.enabled:
      self._progress = Progress(
          TextColumn("{task.description}"), BarColumn(bar_width=24),
          _RateColumn(),
          TextColumn("{task.fields[best]}"), TimeRemainingColumn(),
          console=self.console, transient=False)
      self._task = self._progress.add_task(
          self._describe(), total=max(total_trial_steps, 1),
          best=self._best_text())

  def _describe(self) -> str:
    scheduled = (f" ({self.pruned} pruned, {self.refilled} slots refilled)"
                 if self.pruned or self.refilled else "")
    training = f", {self.running} training" if self.running else ""
    return (f"trials {self.trials_done}/{self.total_trials}{scheduled}"
            f"{training} groups {self.groups_done}/{self.total_groups}")

  def _best_text(self) -> str:
    return ("" if self.best is None
            else f"best {self.metric} {self.best:.4g}")

  def __enter__(self) -> "SweepProgress":
    if self._progress is not None:
      self._progress.start()
    return self

  def __exit__(self, *exc) -> None:
    if self._progress is not None:
      self._progress.stop()

  def advance(self, trial_steps: int) -> None:
    if self._progress is not None:
      self._progress.advance(self._task, trial_steps)

  def trials_finished(self, num_trials: int, *, pruned: int = 0,
                      refilled: int = 0, steps_saved: int = 0,
                      running: int = 0) -> None:
    """Trials finished at an evaluation; ``steps_saved``: trial-steps the
    ones stopped early will not train (out of the total); ``running``:
    trials the group now trains."""
    self.trials_done += num_trials
    self.pruned += pruned
    self.refilled += refilled
    self.running = running
    if self._progress is not None:
      total = self._progress.tasks[0].total
      self._progress.update(self._task, description=self._describe(),
                            total=max(total - steps_saved, 1))

  def training(self, running: int) -> None:
    """A group starts with ``running`` trials."""
    self.running = running
    if self._progress is not None:
      self._progress.update(self._task, description=self._describe())

  def group_done(self, best: float | None) -> None:
    self.groups_done += 1
    self.best = best
    if self._progress is not None:
      self._progress.update(self._task, description=self._describe(),
                            best=self._best_text())

  def group_split(self, more: int = 1) -> None:
    """A group was split (out of memory): ``more`` groups to run."""
    self.total_groups += more
    if self._progress is not None:
      self._progress.update(self._task, description=self._describe())

  def group_skipped(self, num_trials: int, trial_steps: int) -> None:
    """A group this process will not train (recorded, or trained by
    another process): out of the totals."""
    self.total_trials -= num_trials
    self.total_groups -= 1
    if self._progress is not None:
      total = self._progress.tasks[0].total
      self._progress.update(self._task, description=self._describe(),
                            total=max(total - trial_steps, 1))

  def wrap_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
    """A log function that prints above the bar instead of through it."""
    if self._progress is None:
      return log
    return lambda line: self.console.print(line, highlight=False,
                                           markup=False)
