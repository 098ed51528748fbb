"""Several processes, one sweep: JAX's multi-controller model.

Every process of a ``jax.distributed`` job (one per host, or one per GPU)
runs the same sweep: the same trials, the same groups in the same order,
each group's trial axis sharded over the devices of *all* processes (the
mesh spans every host). The numbers a host reads back (metrics, steps,
divergence flags) are gathered from every process, so every process takes
the same decisions from the same values. Whatever touches the workdir —
the store, ``results.csv``, checkpoints, the progress bar and the log —
happens on process 0 alone, and what it decides from the workdir (which
groups are left, whether a claim was granted, a restored checkpoint) is
broadcast to the others. So the workdir needs to exist only on process 0's
host; a sweep continues from it on any number of processes and devices.

If one process dies the job cannot go on (every program runs on every
process); JAX's coordination service notices the missing heartbeat and
stops the others, and the sweep is resumed from the last checkpoint by
running the same command again, on as many processes as are at hand.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Sequence

import jax
import numpy as np

#: ``distributed=`` values.
MODES = ("auto", "on", "off")
#: Seconds without a heartbeat after which the coordination service
#: declares a process dead and stops the job (JAX's default is 100).
HEARTBEAT_TIMEOUT_SECONDS = 30


def cluster_detected(environ: Any = None) -> str | None:
  """The kind of multi-process job the environment says this process is
  part of (``"slurm"``, ``"tpu"``, ``"jax"``), or ``None``.

  Slurm: a job step of several tasks (``srun``). TPU: a multi-host TPU VM
  slice (``TPU_WORKER_HOSTNAMES`` lists several workers, or a Megascale
  coordinator is set). ``JAX_COORDINATOR_ADDRESS``: set by hand. JAX
  detects the coordinator, process count and index of each itself.
  """
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "jax"
  tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
  if env.get("SLURM_STEP_ID") is not None and tasks and tasks.isdigit() and (
      int(tasks) > 1):
    return "slurm"
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get(
      "MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  return None


def initialize(mode: str = "auto", *, coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               heartbeat_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS
               ) -> bool:
  """Joins this process to a ``jax.distributed`` job when asked or when
  the environment is one (call before anything else touches JAX's
  devices).

  Args:
    mode: ``"auto"`` (join when the three addresses are given or
      :func:`cluster_detected` finds a job), ``"on"`` (always join; JAX
      detects what is not given, or fails) or ``"off"``.
    coordinator_address: ``host:port`` of process 0's coordinator.
    num_processes, process_id: the job's size and this process's index.
    heartbeat_timeout_seconds: how soon a dead process stops the job.

  Returns:
    Whether the process is now part of a multi-process job.

  Raises:
    ValueError: one line naming the setting that is wrong.
  """
  if mode not in MODES:
    raise ValueError(f"distributed must be one of {', '.join(MODES)}, got "
                     f"{mode!r}")
  given = {"coordinator_address": coordinator_address,
           "num_processes": num_processes, "process_id": process_id}
  if mode == "off":
    named = [k for k, v in given.items() if v is not None]
    if named:
      raise ValueError(f"{named[0]} needs distributed 'auto' or 'on', not "
                       f"'off'")
    return False
  if coordinator_address is not None and (
      ":" not in coordinator_address or
      not coordinator_address.rsplit(":", 1)[1].isdigit()):
    raise ValueError(f"coordinator_address must be host:port, got "
                     f"{coordinator_address!r}")
  if num_processes is not None and (isinstance(num_processes, bool) or
                                    num_processes < 1):
    raise ValueError(f"num_processes must be a positive integer, got "
                     f"{num_processes!r}")
  if process_id is not None and (
      process_id < 0 or (num_processes is not None and
                         process_id >= num_processes)):
    raise ValueError(f"process_id must be in [0, num_processes), got "
                     f"{process_id!r}")
  if mode == "auto" and None in given.values():
    if any(v is not None for v in given.values()):
      missing = [k for k, v in given.items() if v is None]
      raise ValueError(f"{missing[0]} is needed with "
                       f"{', '.join(k for k, v in given.items() if v is not None)}"
                       f" (or none of them, to detect the job)")
    if cluster_detected() is None:
      return False
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  return jax.process_count() > 1


def multi_process() -> bool:
  """Whether this process is one of several."""
  return jax.process_count() > 1


def is_leader() -> bool:
  """Whether this process owns the workdir (process 0)."""
  return jax.process_index() == 0


def spans_processes(devices: Sequence[Any] | None) -> bool:
  """Whether ``devices`` include another process's devices."""
  me = jax.process_index()
  return any(d.process_index != me for d in devices or ())


def broadcast(value: Any = None) -> Any:
  """Process 0's ``value`` (any picklable object), on every process; the
  others' ``value`` is ignored. Every process must call it, in the same
  order. One process: ``value`` itself."""
  if not multi_process():
    return value
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  payload = (np.frombuffer(pickle.dumps(value), np.uint8) if is_leader()
             else np.zeros((0,), np.uint8))
  size = int(multihost_utils.broadcast_one_to_all(
      np.asarray(payload.size, np.int64)))
  buffer = np.zeros((size,), np.uint8)
  if is_leader():
    buffer[:] = payload
  data = multihost_utils.broadcast_one_to_all(buffer)
  return pickle.loads(np.asarray(data, np.uint8).tobytes())


class _Raised:
  """An exception raised on process 0, carried to the others."""

  def __init__(self, error: BaseException):
    self.error = error


def on_leader(fn: Callable[[], Any]) -> Any:
  """``fn()`` run on process 0 only, its result (or the exception it
  raised) on every process: a decision taken from the workdir. One
  process: ``fn()``."""
  if not multi_process():
    return fn()
  out = None
  if is_leader():
    try:
      out = fn()
    except Exception as e:  # pylint: disable=broad-except
      out = _Raised(e)
  out = broadcast(out)
  if isinstance(out, _Raised):
    raise out.error
  return out


def to_host(tree: Any) -> Any:
  """Every leaf of ``tree`` as a NumPy array holding its whole value,
  gathered from every process when it is sharded across processes (every
  process must call it then, in the same order)."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not any(isinstance(x, jax.Array) and not x.is_fully_addressable
             for x in leaves):
    return jax.tree_util.tree_map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.tree_util.tree_map(
      np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def place(tree: Any, sharding: Any) -> Any:
  """``tree`` as global arrays with ``sharding`` (which may span other
  processes): each process puts the pieces its devices hold of the value
  it has (the same on every process). Leaves already spread over the
  sharding's processes, and shape-only leaves, pass unchanged."""

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct) or (
        isinstance(x, jax.Array) and not x.is_fully_addressable):
      return x
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])

  return jax.tree_util.tree_map(one, tree)


class OnLeader:
  """``target``'s methods and attributes, run or read on process 0 only
  and the outcome handed to every process (:func:`on_leader`), so that
  every process follows the same path through code that asks the workdir.
  One process: a thin wrapper.

  Args:
    target: the object on process 0, ``None`` on the others.
    cls: its class (known on every process: it tells a method from an
      attribute without asking process 0).

  Attributes:
    target: as given (for what only process 0 does, such as a heartbeat
      thread).
  """

  def __init__(self, target: Any, cls: type):
    self.target = target
    self._cls = cls

  def __getattr__(self, name: str) -> Any:
    target = self.__dict__["target"]
    if not callable(getattr(self.__dict__["_cls"], name, None)):
      return on_leader(lambda: getattr(target, name))

    def call(*args, **kwargs):
      return on_leader(lambda: getattr(target, name)(*args, **kwargs))
    return call
