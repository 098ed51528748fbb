"""Creating a sweep's store, or continuing the one a workdir holds.

The policy lives here, beside the runner; :class:`~rnnsweep.store.Store`
only runs the SQL. Continuing needs the same settings (every key of
:data:`~rnnsweep.settings.COMPARED`; a refusal names the first entry that
differs, down inside nested settings such as the space), the same trials
(ids, parameters, seeds), and may grow the sweep when ``extend`` is set.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from rnnsweep.groups import Group, GroupSizer, plan_groups
from rnnsweep.samplers import seeds_of
from rnnsweep.schedulers import SchedulerSettings
from rnnsweep.settings import COMPARED
from rnnsweep.space import PARAMS
from rnnsweep.store import Store, clean_json


def prepare(store: Store, record: Mapping[str, Any], trials: Sequence[Any],
            max_group_size: int | GroupSizer, extend: bool = False, *,
            queue: bool = False) -> list[Group]:
  """Creates the sweep in ``store``, or checks the stored one and returns
  what is left of it.

  Args:
    store: the workdir's store.
    record: the run's settings (:meth:`SweepSettings.record`, plus
      anything else worth saving, such as library versions).
    trials: every trial of the sweep, ids ``0..n-1``.
    max_group_size: largest K for planning new groups, or a function of
      the bucket giving it (only called when groups are planned).
    extend: allow ``trials`` to hold more trials than the stored sweep;
      the new ones are planned into new groups.
    queue: plan one group per static configuration whose slots take its
      trials in turn (an early-stopping scheduler).

  Returns:
    The groups that still need to run, in plan order.
  """
  store.remove_leftovers()
  if not store.exists():
    plan = plan_groups(trials, max_group_size, queue=queue)
    if store.create(record, trials, plan):
      return plan
    # Another process created the sweep first: continue it instead.
  store.open_for_writing()
  stored = stored_settings(store)
  diffs = [k for k in COMPARED if _json(stored.get(k)) != _json(record.get(k))]
  n_old = stored["num_trials"]
  growing = extend and len(trials) > n_old
  if diffs and not (growing and diffs == ["num_trials"]):
    hint = (" (pass extend / --extend to add trials)"
            if diffs == ["num_trials"] and len(trials) > n_old else "")
    _refuse(store, stored, record, diffs, hint)
  by_id = {t.trial_id: t for t in trials}
  for tid, params, seed in store.stored_trials():
    t = by_id.get(tid)
    if t is None or params != _stored_view(t.params, params) or seed != t.seed:
      raise ValueError(
          f"workdir {store.workdir!r}: stored trial {tid} differs from the "
          f"trial the sampler gives now; use another workdir")
  plan, statuses = store.plan(by_id)
  todo = [g for g, status in zip(plan, statuses) if status != "done"]
  if growing:
    new = plan_groups(trials[n_old:], max_group_size, queue=queue)
    first = max((g.group_id for g in plan), default=-1) + 1
    new = [dataclasses.replace(g, group_id=first + i)
           for i, g in enumerate(new)]
    store.add_trials(trials[n_old:], new, num_trials=len(trials))
    todo += new
  return todo


def stored_settings(store: Store) -> dict[str, Any]:
  """The store's settings, with what older versions did not store filled
  in as they ran."""
  stored = store.settings()
  if "num_trials" not in stored:
    raise store.unreadable("no sweep settings in it")
  # Sweeps stored before schedulers existed ran without one.
  stored.setdefault("scheduler", SchedulerSettings().record())
  stored.setdefault("sampler_options", {})
  # ... and before the fused recurrence, with the XLA one.
  if isinstance(stored.get("engine"), dict):
    stored["engine"].setdefault("recurrence", "xla")
    # ... and before trial chunks, with the whole group vmapped: what
    # "auto" still does on an accelerator; on a CPU it now runs one trial
    # at a time, which changes a trial's numbers only by rounding, as K
    # does (vmap invariance), so such a sweep continues under "auto".
    stored["engine"].setdefault("trial_chunk", "auto")
  return stored


def check_same_sweep(store: Store, record: Mapping[str, Any]) -> int:
  """Refuses (one line, naming each differing entry) a workdir whose sweep
  has other settings than ``record``, the trial count aside; writes
  nothing. Returns the stored trial count."""
  stored = stored_settings(store)
  diffs = [k for k in COMPARED if k != "num_trials" and
           _json(stored.get(k)) != _json(record.get(k))]
  if diffs:
    _refuse(store, stored, record, diffs, "")
  return stored["num_trials"]


def _refuse(store, stored, record, diffs, hint) -> None:
  shown = "; ".join(_difference(k, clean_json(stored.get(k)),
                                clean_json(record.get(k))) for k in diffs)
  per = [seeds_of(s) for s in (stored, record)]
  if "num_trials" in diffs and max(per) > 1:
    # Trials, not the configurations --num_trials counts.
    shown += " (" + ", ".join(
        f"{s['num_trials']} = {s['num_trials'] // n} configurations x {n} "
        f"seed{'s' if n > 1 else ''}"
        for s, n in zip((stored, record), per)) + ")"
  raise ValueError(f"workdir {store.workdir!r} holds a sweep with other "
                   f"settings: {shown}; use another workdir{hint}")


def _stored_view(params: Mapping[str, Any], stored: Mapping[str, Any]
                 ) -> dict[str, Any]:
  """A trial's params as a store written before some parameters existed
  would hold them: a parameter the stored trial lacks is dropped if it
  sits at its default (what the older version trained with)."""
  out = clean_json(dict(params))
  for name in set(out) - set(stored):
    if name in PARAMS and out[name] == clean_json(PARAMS[name].default):
      del out[name]
  return out


def _json(value: Any) -> str:
  return json.dumps(clean_json(value), sort_keys=True)


def _difference(path: str, old: Any, new: Any) -> str:
  """``path.to.entry: stored X, now Y`` for the first entry that differs
  (nested settings such as the space are followed down to it)."""
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new), key=str):
      if k not in old or k not in new:
        return (f"{path}.{k}: " + (f"only now {_short(new[k])}" if k in new
                                   else f"only stored {_short(old[k])}"))
      if _json(old[k]) != _json(new[k]):
        return _difference(f"{path}.{k}", old[k], new[k])
  return f"{path}: stored {_short(old)}, now {_short(new)}"


def _short(v: Any) -> str:
  text = json.dumps(v, sort_keys=True)
  return text if len(text) <= 80 else text[:77] + "..."
