"""Training throughput against the number of devices a group is sharded
over (weak scaling: K per device fixed, so K grows with the devices).

For each device count n (1, 2, 4, ... up to what the machine has) one group
of ``--k_per_device * n`` trials of a workload (rnnsweep/bench.py) is
compiled with its trial axis sharded over the first n devices and timed as
benchmarks/throughput.py times one; the table gives trial-steps/s, the
speed-up over one device and the scaling efficiency (speed-up / n). Writes
JSON with the device header.

  python benchmarks/devices.py --workload=S --k_per_device=256
  # On a CPU, split the host into 4 devices (they share its cores, so the
  # efficiency measures overhead, not a speed-up):
  XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
      python benchmarks/devices.py --workload=S --k_per_device=8 --updates=5
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

import rnnsweep as rs
from rnnsweep import bench

_WORKLOAD = flags.DEFINE_enum("workload", "S", sorted(bench.WORKLOADS),
                              "Workload (see rnnsweep/bench.py).")
_K_PER_DEVICE = flags.DEFINE_integer("k_per_device", 256, "Trials per "
                                     "device.", lower_bound=1)
_MAX_DEVICES = flags.DEFINE_integer("max_devices", None, "Most devices "
                                    "(default: all).", lower_bound=1)
_UPDATES = flags.DEFINE_integer("updates", None, "Updates per timed segment "
                                "(default: the workload's).", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed segments per count.",
                                lower_bound=1)
_ENGINE = bench.define_engine_flags()
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON goes.")


def counts(available: int, most: int | None) -> list[int]:
  """1, 2, 4, ... up to the devices there are (and the last count itself
  when it is not a power of two)."""
  top = min(available, most or available)
  out = [2**i for i in range(top.bit_length()) if 2**i <= top]
  return out + ([top] if out[-1] != top else [])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  w = bench.WORKLOADS[_WORKLOAD.value]
  w = dataclasses.replace(w, updates=_UPDATES.value or w.updates)
  options = _ENGINE()
  devices = jax.devices()
  header = (f"workload {w}; {bench.device_header(options)}; "
            f"{rs.placement.describe(devices)}")
  print(header)
  print(f"{'devices':>7} {'K':>6} {'trial-steps/s':>14} {'speed-up':>9} "
        f"{'efficiency':>10}", flush=True)
  task = bench.workload_task(w)
  rows = []
  for n in counts(len(devices), _MAX_DEVICES.value):
    k = _K_PER_DEVICE.value * n
    r = bench.measure_group(w, k, repeats=_REPEATS.value, options=options,
                            task=task, devices=devices[:n])
    r["devices"] = n
    r["speedup"] = r["trial_steps_per_s"] / (
        rows[0]["trial_steps_per_s"] if rows else r["trial_steps_per_s"])
    r["efficiency"] = r["speedup"] / n
    rows.append(r)
    print(f"{n:>7} {k:>6} {r['trial_steps_per_s']:>14.1f} "
          f"{r['speedup']:>9.2f} {r['efficiency']:>10.2f}", flush=True)
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, f"devices_{w.name}_"
                        f"{bench.options_tag(options)}.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
  sys.exit(app.run(main))
