"""What the fused recurrence's Triton kernels need on an NVIDIA GPU, found
on any machine, a CPU included: each kernel is lowered for CUDA by jax (no
GPU needed) and compiled for a chosen compute capability by the `triton`
package (`pip install -e '.[kernels]'`, Linux x86_64), whose cuobjdump reads
the program's registers a thread, its stack (register spills) and its
shared memory, and from those how many programs (trials) an SM runs at
once. One row per cell, dtype, shape, kernel (forward, backward), warps and
pipelining stages.

It also checks the rules the engine decides by without compiling: a row
whose shared memory is over `fused.shared_memory_bytes` (the estimate
behind the fallback to XLA), or over what a program may use on that GPU
while `fused.unsupported` lets the shape run fused, is an error, and the
script exits non-zero.

These are the `triton` package's numbers: on a GPU, XLA compiles the same
Triton IR with its own build of Triton, whose numbers can differ somewhat.
They say nothing of speed. The kernels are lowered at jax's default matmul
precision, as the engine runs them (`--matmul_precision=highest`: as
fused_check.py compares their numbers).

  python benchmarks/kernel_resources.py                         # S, sm_90
  python benchmarks/kernel_resources.py --num_warps=auto,4,8,16 \\
      --num_stages=1,3 --batch=32,128 --hidden=64,128 --out_dir=/tmp/k
"""

import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax

from rnnsweep.models import fused

_CELLS = flags.DEFINE_list("cells", ["lstm", "gru", "simple"], "Cells.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                            "Compute dtypes.")
_BATCH = flags.DEFINE_list("batch", ["32"], "Batch sizes B.")
_HIDDEN = flags.DEFINE_list("hidden", ["128"], "Hidden sizes H.")
_INPUT = flags.DEFINE_integer("input", 64, "Input width D.", lower_bound=1)
_WINDOW = flags.DEFINE_integer("window", 32, "Time steps T.", lower_bound=1)
_NUM_WARPS = flags.DEFINE_list(
    "num_warps", ["auto"], "Warps of a program: auto (fused.num_warps) "
    "and/or powers of two from 1 to 32.")
_NUM_STAGES = flags.DEFINE_list(
    "num_stages", [str(fused.NUM_STAGES)],
    "Software-pipelining stages (the engine's: fused.NUM_STAGES).")
_ARCH = flags.DEFINE_enum("arch", "9.0", sorted(fused.MAX_SHARED_BYTES),
                          "The GPU's compute capability (9.0: H100/H200).")
_PRECISION = flags.DEFINE_enum(
    "matmul_precision", "default", ["default", "high", "highest"],
    "jax_default_matmul_precision while lowering (float32 dots: default "
    "and high are TF32 on a GPU, highest is IEEE float32).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where kernel_resources.json "
                               "goes.")


def _positive_ints(name: str, values: list[str]) -> list[int]:
  """A list flag's integers, or its one-line error."""
  for value in values:
    if not value.isdigit() or int(value) < 1:
      raise flags.ValidationError(
          f"--{name}: {value!r} is not a positive integer")
  return [int(value) for value in values]


def _warps_list(values: list[str]) -> list[int | None]:
  """--num_warps' settings (``None``: auto), or its one-line error."""
  try:
    return [fused.warps_setting(value) for value in values]
  except ValueError as e:
    raise flags.ValidationError(f"--num_warps: {e}") from None


for _name in ("batch", "hidden", "num_stages"):
  # _positive_ints raises the one-line error.
  flags.register_validator(
      _name, lambda v, n=_name: _positive_ints(n, v) is not None)
flags.register_validator("num_warps", lambda v: _warps_list(v) is not None)

#: 32-bit registers of one SM (every NVIDIA GPU from Volta to Blackwell).
SM_REGISTERS = 65536


def _reserved_bytes(arch: str) -> int:
  """Shared memory the system reserves per block: 1 KiB from sm_80 on."""
  return 1024 if float(arch) >= 8.0 else 0


#: Shared memory of one SM, by compute capability: what one program may use
#: (``fused.MAX_SHARED_BYTES``) and the block's reserve (CUDA C Programming
#: Guide, "Technical Specifications per Compute Capability").
SM_SHARED_BYTES = {arch: limit + _reserved_bytes(arch)
                   for arch, limit in fused.MAX_SHARED_BYTES.items()}


def programs_per_sm(registers: int, warps: int, shared_bytes: int,
                    arch: str) -> int:
  """How many programs (CUDA blocks) of a kernel one SM holds at once, by
  the occupancy calculator's rules: the SM's registers, allocated per warp in
  units of 256; the SM's shared memory, with 1 KiB reserved per block
  (sm_80 and later); 2048 threads; 32 blocks."""
  per_warp = -(-registers * 32 // 256) * 256
  return max(0, min(SM_REGISTERS // (per_warp * warps),
                    SM_SHARED_BYTES[arch] // (shared_bytes +
                                              _reserved_bytes(arch)),
                    2048 // (32 * warps), 32))


@dataclasses.dataclass
class Resources:
  registers: int     # 32-bit registers a thread
  stack_bytes: int   # a thread's stack: register spills
  shared_bytes: int  # a program's shared memory, dynamic and static


def compile_kernel(ttir: str, arch: str, warps: int, stages: int
                   ) -> Resources:
  """Compiles one kernel's Triton IR for ``sm_<arch>`` with the `triton`
  package and reads its resources with the cuobjdump it bundles."""
  # XLA fuses multiply-adds in its Triton kernels; so does Triton 3.9 by
  # default, which says so in a warning unless this is set.
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
  import triton  # pylint: disable=g-import-not-at-top
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as folder:
    source = os.path.join(folder, "kernel.ttir")
    with open(source, "w", encoding="utf-8") as f:
      f.write(ttir)
    # Triton prints a failed ptxas run's whole PTX; the error says enough.
    with contextlib.redirect_stdout(io.StringIO()):
      kernel = triton.compile(
          source, target=GPUTarget("cuda", int(arch.replace(".", "")), 32),
          options={"num_warps": warps, "num_stages": stages})
    cubin = os.path.join(folder, "kernel.cubin")
    with open(cubin, "wb") as f:
      f.write(kernel.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends",
                        "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([tool, "-res-usage", cubin], capture_output=True,
                           text=True, check=True).stdout

  def field(name):
    found = re.search(rf"\b{name}:(\d+)", usage)
    if not found:
      raise RuntimeError(f"cuobjdump -res-usage printed no {name}: {usage!r}")
    return int(found.group(1))

  return Resources(registers=field("REG"), stack_bytes=field("STACK"),
                   shared_bytes=kernel.metadata.shared + field("SHARED"))


def rows_for(cell: str, dtype: str, batch: int, hidden: int,
             warps_list: list, stages_list: list[int], arch: str,
             window: int, input_size: int) -> list[dict]:
  """Every kernel of one layer shape at each warps and stages setting,
  with the verdicts of the engine's rules."""
  limit = fused.MAX_SHARED_BYTES[arch]
  estimate = fused.shared_memory_bytes(cell, batch, hidden, dtype)
  why = fused.unsupported(cell, batch, hidden, platform="gpu", dtype=dtype,
                          arch=arch)
  rows = []
  for kernel in fused.triton_kernels(cell, batch, hidden, dtype, window,
                                     input_size):
    for warps in warps_list:
      for stages in stages_list:
        warps_used = warps or fused.num_warps(cell, batch, hidden)
        row = dict(cell=cell, dtype=dtype, batch=batch, hidden=hidden,
                   kernel=kernel["name"], warps=warps_used,
                   auto=warps is None, stages=stages,
                   estimate_bytes=estimate, fallback=why)
        engine = stages == fused.NUM_STAGES
        try:
          used = compile_kernel(kernel["ttir"], arch, warps_used, stages)
        except Exception as e:  # pylint: disable=broad-except
          # A kernel that does not compile (ptxas out of registers) is a
          # row, and a wrong rule where the engine would run it fused.
          lines = [l.strip() for l in str(e).splitlines() if l.strip()]
          error = next((l for l in lines if "fatal" in l), lines[0])
          rows.append(dict(row, compiled=False, fits=False, error=error,
                           errors=[f"does not compile: {error}"]
                           if engine and why is None else []))
          continue
        fits = (used.shared_bytes <= limit and
                used.registers * 32 * warps_used <= SM_REGISTERS)
        errors = []
        if engine and used.shared_bytes > estimate:
          errors.append(f"needs {used.shared_bytes} bytes of shared memory, "
                        f"over fused.shared_memory_bytes' {estimate}")
        if engine and why is None and not fits:
          errors.append(f"does not fit on sm_{arch.replace('.', '')} but "
                        f"fused.unsupported lets it run fused")
        rows.append(dict(row, compiled=True, **dataclasses.asdict(used),
                         programs_per_sm=programs_per_sm(
                             used.registers, warps_used, used.shared_bytes,
                             arch),
                         fits=fits, errors=errors))
  return rows


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    import triton  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit("kernel_resources.py: error: compiling the kernels needs the "
             "triton package (pip install -e '.[kernels]'; Linux x86_64)")
  jax.config.update("jax_default_matmul_precision",
                    None if _PRECISION.value == "default"
                    else _PRECISION.value)
  arch = _ARCH.value
  header = (f"fused kernels compiled for sm_{arch.replace('.', '')} "
            f"(a program may use {fused.MAX_SHARED_BYTES[arch] >> 10} KiB of "
            f"shared memory) by triton {triton.__version__}, lowered "
            f"by jax {jax.__version__} at {_PRECISION.value} matmul "
            f"precision; T={_WINDOW.value} D={_INPUT.value}")
  print(header)
  print(f"  {'cell':<7}{'dtype':<10}{'B':>4}{'H':>5} {'kernel':<21}"
        f"{'warps':>8}{'stages':>7}{'regs':>6}{'spill B':>8}{'shared KiB':>11}"
        f"{'per SM':>7}  verdict")
  warps_list = _warps_list(_NUM_WARPS.value)
  stages_list = _positive_ints("num_stages", _NUM_STAGES.value)
  rows = []
  for cell in _CELLS.value:
    for dtype in _DTYPES.value:
      for batch in _positive_ints("batch", _BATCH.value):
        for hidden in _positive_ints("hidden", _HIDDEN.value):
          for row in rows_for(cell, dtype, batch, hidden, warps_list,
                              stages_list, arch, _WINDOW.value,
                              _INPUT.value):
            rows.append(row)
            verdict = ("fits" if row["fits"] else "DOES NOT FIT") + (
                "; the engine falls back to XLA" if row["fallback"] else "")
            used = (f"{row['registers']:>6}{row['stack_bytes']:>8}"
                    f"{row['shared_bytes'] / 1024:>11.1f}"
                    f"{row['programs_per_sm']:>7}  {verdict}"
                    if row["compiled"] else
                    f"  DOES NOT COMPILE: {row['error']}")
            print(f"  {cell:<7}{dtype:<10}{batch:>4}{hidden:>5} "
                  f"{row['kernel']:<21}{row['warps']:>3}"
                  f"{' auto' if row['auto'] else '     '}{row['stages']:>7}"
                  + used + "".join(f"; RULE WRONG: {e}"
                                   for e in row["errors"]), flush=True)
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    with open(os.path.join(_OUT_DIR.value, "kernel_resources.json"), "w",
              encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)
  wrong = [f"{r['cell']}/{r['dtype']}/B={r['batch']}/H={r['hidden']}/"
           f"{r['kernel']}/{r['warps']} warps" for r in rows if r["errors"]]
  if wrong:
    sys.exit(f"kernel_resources.py: error: the engine's rules are wrong for "
             f"{', '.join(wrong)}")


if __name__ == "__main__":
  app.run(main)
