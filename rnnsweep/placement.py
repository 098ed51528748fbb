"""Which devices a sweep uses, and how a group's slots fit on them.

A group's trial axis is sharded over the chosen devices (see
:class:`~rnnsweep.engine.Program`), so its number of slots is padded to a
multiple of the device count; padding slots hold no trial and never reach
the store, the leaderboard or the plots. A trial's numbers do not depend on
the device count (vmap invariance), so the choice changes only speed and
is not part of a sweep's settings: a sweep may be continued on another
number of devices.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple, Sequence

import jax

#: ``devices=`` values besides a positive integer.
DEVICE_CHOICES = ("all", "cpu")
#: A setting chosen by rnnsweep (``max_group_size``, ``cpu_devices``).
AUTO = "auto"


def select_devices(spec: Any = "all") -> list[Any]:
  """The devices ``spec`` names.

  Args:
    spec: ``"all"`` (every device of the default backend, on every
      process), a positive integer N (the first N of them, as an ``int`` or
      a string of digits), ``"cpu"`` (every CPU device, also on a host
      with accelerators), or a list or tuple of devices (those).

  Raises:
    ValueError: one line naming ``devices`` and what is wrong.
  """
  if isinstance(spec, (list, tuple)):
    return list(spec)
  if isinstance(spec, str) and spec.strip().isdigit():
    spec = int(spec)
  if spec == "all":
    return list(jax.devices())
  if spec == "cpu":
    return list(jax.devices("cpu"))
  if isinstance(spec, bool) or not isinstance(spec, int):
    raise ValueError(f"devices must be 'all', 'cpu' or a positive integer, "
                     f"got {spec!r}")
  available = jax.devices()
  if not 1 <= spec <= len(available):
    raise ValueError(f"devices must be between 1 and the {len(available)} "
                     f"{available[0].platform} device(s) this run has, got "
                     f"{spec}")
  return list(available[:spec])


def check_spans_processes(devices: Sequence[Any]) -> None:
  """In a job of several processes every group runs on every process, so
  the devices must include some of each process's.

  Raises:
    ValueError: one line naming ``devices``.
  """
  processes = jax.process_count()
  if processes > 1:
    have = {d.process_index for d in devices}
    if len(have) < processes:
      raise ValueError(
          f"devices: in a job of {processes} processes every group is "
          f"sharded over all of them, but the {len(devices)} devices chosen "
          f"belong to {len(have)} (use devices='all')")


def describe(devices: Sequence[Any]) -> str:
  """E.g. ``4 devices (cpu) in 1 process``."""
  kinds = sorted({d.platform for d in devices})
  processes = len({d.process_index for d in devices})
  return (f"{len(devices)} device{'s' if len(devices) != 1 else ''} "
          f"({', '.join(kinds)}) in {processes} "
          f"process{'es' if processes != 1 else ''}")


def usable_cores() -> int:
  """The CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def auto_or_positive(value: Any, name: str) -> int | str:
  """``"auto"`` or a positive integer (an integer string is accepted).

  Raises:
    ValueError: one line naming ``name`` and the value.
  """
  if value == AUTO:
    return AUTO
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be 'auto' or a positive integer, got "
                     f"{value!r}")
  return value


def cpu_device_count(spec: Any, num_trials: int | None = None,
                     cores: int | None = None,
                     name: str = "cpu_devices") -> int:
  """The CPU devices :func:`split_cpu` makes of ``spec``: the number given,
  or for ``"auto"`` one per core (default :func:`usable_cores`), at most
  ``num_trials``."""
  spec = auto_or_positive(spec, name)
  if spec != AUTO:
    return spec
  n = usable_cores() if cores is None else cores
  return n if num_trials is None else max(1, min(n, num_trials))


def split_cpu(spec: Any, num_trials: int | None = None,
              name: str = "cpu_devices") -> int:
  """Makes this host's CPU ``spec`` JAX devices, before JAX starts.

  XLA makes a host's CPU one device (see :func:`cpu_split_hint` for what
  that costs); split, each group's trials are sharded over the devices, or
  groups train side by side, to the same numbers. This sets
  ``jax_num_cpu_devices``, which JAX reads once, when its backend starts
  (it takes precedence over ``XLA_FLAGS``'
  ``--xla_force_host_platform_device_count``). It changes nothing on an
  accelerator's devices.

  Args:
    spec: a positive integer, or ``"auto"``: one device per core this
      process may use (:func:`usable_cores`), at most ``num_trials``.
    num_trials: the sweep's trials, bounding ``"auto"`` (more devices than
      trials would only hold padding).
    name: how an error names the setting.

  Returns:
    The number of CPU devices.

  Raises:
    ValueError: one line, for a bad ``spec``, or once JAX has started with
      another number of CPU devices (the same number is no error).
  """
  n = cpu_device_count(spec, num_trials, name=name)
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    have = len(jax.devices("cpu"))
    if have != n:
      raise ValueError(
          f"{name}: JAX has already started with {have} CPU device(s), so "
          f"its CPU cannot be split into {n} now; split it before any JAX "
          f"operation") from None
  return n


def cpu_split_hint(devices: Sequence[Any], num_trials: int,
                   cores: int | None = None) -> str | None:
  """A line telling a CPU user how to train on every core, or None.

  XLA makes a host's CPU one device by default. A group there trains its
  trials one after another on one core from LSTM(64), batch 32, upwards
  (trial chunks), and two groups do not train at the same time, so most
  of a multi-core host sits idle; split into devices, each group is
  sharded over them, or groups train side by side (the README's default
  sweep: 1.27-1.40x faster on 2 cores, the same numbers;
  benchmarks/RESULTS.md). The split must be made before JAX starts
  (:func:`split_cpu`), so a running sweep can only say it. Nothing is
  said where there is nothing to gain or the user has chosen: a device
  other than the CPU, several devices, a CPU already split (``devices=1``
  chosen from it), one core, one trial, or several processes.
  """
  cores = usable_cores() if cores is None else cores
  if (len(devices) != 1 or devices[0].platform != "cpu" or cores < 2
      or num_trials < 2 or jax.process_count() > 1
      or len(jax.devices("cpu")) > 1):
    return None
  n = min(cores, num_trials)
  return (f"hint: this CPU's {cores} cores are one JAX device, which trains "
          f"one group at a time; split into {n} devices they share each "
          f"group's trials (the default sweep ran 1.3x faster that way on 2 "
          f"cores, to the same numbers): --cpu_devices=auto in "
          f"experiments/sweep.py, or before JAX starts "
          f"rs.placement.split_cpu({n}) or XLA_FLAGS=--xla_force_host_"
          f"platform_device_count={n}")


def padded_size(k: int, num_devices: int) -> int:
  """The smallest multiple of ``num_devices`` that holds ``k`` slots."""
  return max(1, math.ceil(k / num_devices)) * num_devices


def lanes(devices: Sequence[Any], num_groups: int) -> list[list[Any]]:
  """Disjoint device sets that train groups at the same time.

  With fewer groups than devices, sharding each group over every device in
  turn would leave most of each device's capacity to a handful of slots;
  instead the devices are cut into ``min(num_groups, len(devices))`` lanes
  as evenly as possible (contiguous, sizes differing by at most one), and
  each lane takes the next group whenever it is free (each group is its own
  program on its lane's devices). One group, or one device: one lane.
  """
  devices = list(devices)
  count = max(1, min(num_groups, len(devices)))
  size, extra = divmod(len(devices), count)
  out, start = [], 0
  for i in range(count):
    end = start + size + (1 if i < extra else 0)
    out.append(devices[start:end])
    start = end
  return out


class LanePlan(NamedTuple):
  """Lanes (:func:`lanes`), the index of each group's lane, and why (a
  line for the log; empty where nothing was weighed)."""
  lanes: list[list[Any]]
  homes: list[int]
  why: str = ""


def plan_lanes(devices: Sequence[Any],
               groups: Sequence[tuple[float, int]]) -> LanePlan:
  """How to lay ``devices`` out in lanes for ``groups``, each a cost of
  one trial (any unit, e.g. FLOPs per update) and a number of trials, and
  which lane each group is planned on.

  On a GPU or TPU: one lane per group while devices are to spare
  (:func:`lanes`), groups in turn. On a CPU split into devices a trial
  costs about the same in any group, each device running its share of a
  group's slots, so a group of ``k`` trials on a lane of ``s`` devices
  takes about ``ceil(k / s) * cost``, its padding included. Every layout
  ``lanes(devices, L)``, L = 1 .. min(groups, devices), is scored by the
  time its busiest lane takes when the groups, the largest first, each go
  to the lane that would finish them soonest; the fastest layout wins (of
  equal ones, the most lanes). Side by side, a lane whose groups are
  small sits idle while another trains a large one; sharded over all the
  devices, each group runs on every core in turn.
  """
  devices = list(devices)
  if not devices or devices[0].platform != "cpu" or len(devices) == 1:
    return in_turn(devices, len(groups))
  best, spans = None, []
  for num_lanes in range(1, max(1, min(len(groups), len(devices))) + 1):
    layout = lanes(devices, num_lanes)
    span, homes = _largest_first(layout, groups)
    spans.append((_layout_name(layout), span))
    if best is None or span <= best[0] * (1 + 1e-9):
      best = (span, LanePlan(layout, homes))
  if len(spans) == 1:
    return best[1]
  chosen = _layout_name(best[1].lanes)
  return best[1]._replace(why=(
      f"lane plan for {len(devices)} CPU devices, each layout's estimated "
      f"time (from the trials' FLOPs) against the chosen one: " +
      ", ".join(f"{name} {span / max(best[0], 1e-30):.2f}"
                f"{' (chosen)' if name == chosen else ''}"
                for name, span in spans)))


def in_turn(devices: Sequence[Any], num_groups: int) -> LanePlan:
  """One lane per group while devices last (:func:`lanes`), the groups
  given to the lanes in turn: a GPU's or TPU's plan."""
  out = lanes(devices, num_groups)
  return LanePlan(out, [i % len(out) for i in range(num_groups)])


def _layout_name(layout: Sequence[Sequence[Any]]) -> str:
  """``one lane`` or ``lanes of 2+1+1``."""
  if len(layout) == 1:
    return "one lane"
  return "lanes of " + "+".join(str(len(l)) for l in layout)


def _largest_first(layout: Sequence[Sequence[Any]],
                   groups: Sequence[tuple[float, int]]
                   ) -> tuple[float, list[int]]:
  """The busiest lane's time (:func:`plan_lanes`) and each group's lane
  when groups, the most work first, go to the lane that ends them
  soonest (the first such lane)."""
  finish = [0.0] * len(layout)
  homes = [0] * len(groups)
  for g in sorted(range(len(groups)),
                  key=lambda g: -groups[g][0] * groups[g][1]):
    cost, k = groups[g]
    took = [cost * math.ceil(k / len(lane)) for lane in layout]
    lane = min(range(len(layout)), key=lambda l: finish[l] + took[l])
    finish[lane] += took[lane]
    homes[g] = lane
  return max(finish), homes


def describe_lanes(lane_list: Sequence[Sequence[Any]]) -> str:
  """How groups are placed, for the start-up line."""
  if len(lane_list) == 1:
    n = len(lane_list[0])
    return ("each group on the device" if n == 1 else
            f"each group sharded over all {n} devices, one after another")
  sizes = "+".join(str(len(l)) for l in lane_list)
  return (f"{len(lane_list)} groups at a time on disjoint device sets "
          f"({sizes} devices), each sharded over its set")
