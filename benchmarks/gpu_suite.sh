#!/usr/bin/env bash
# The whole GPU measurement: S and L, the K sweep, the speed levers (bf16 +
# unroll, hoisted input projection, donation), the baselines and
# max_group_size=auto against fixed K, into the folder given as the first
# argument. Run from a checkout (PYTHONPATH=. is set here); needs jax with
# CUDA, flax, optax and, for the PyTorch rows, torch. Aims at under 6
# minutes on one H100/H200.
# QUICK=1 runs a subset (a few K per configuration) for a tight budget.
set -euo pipefail
out="${1:?usage: benchmarks/gpu_suite.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null | tee "$out/device.txt" || true
run() { echo "+ $*"; python3 "$@" 2>&1 | grep -v "Unable to initialize backend" | tee -a "$out/suite.log"; }
if [[ "${QUICK:-0}" == 1 ]]; then
  S_KS=1,1024; L_KS=1,256; LEVER_S_KS=1024,2048; LEVER_L_KS=256; SWEEP=0
  AUTO_KS=1024; ROUNDS=1
else
  S_KS=1,8,64,256,1024,2048; L_KS=1,16,64,256; LEVER_S_KS=256,1024,2048
  LEVER_L_KS=64,256; SWEEP=8; AUTO_KS=256,1024; ROUNDS=2
fi
run benchmarks/throughput.py --workload=S --ks=$S_KS --out_dir="$out"
run benchmarks/throughput.py --workload=S --ks=$LEVER_S_KS --precision=bfloat16 --unroll=8 --out_dir="$out"
run benchmarks/throughput.py --workload=S --ks=$LEVER_S_KS --precision=bfloat16 --unroll=8 --hoist_input --out_dir="$out"
run benchmarks/throughput.py --workload=S --ks=1024 --precision=bfloat16 --unroll=8 --hoist_input --donate --out_dir="$out"
run benchmarks/throughput.py --workload=L --ks=$L_KS --out_dir="$out"
run benchmarks/throughput.py --workload=L --ks=$LEVER_L_KS --precision=bfloat16 --unroll=8 --out_dir="$out"
run benchmarks/throughput.py --workload=L --ks=$LEVER_L_KS --precision=bfloat16 --unroll=8 --hoist_input --out_dir="$out"
run benchmarks/baselines.py --workload=S --k=1024 --sweep_trials=$SWEEP --precision=bfloat16 --unroll=8 --out_dir="$out"
run benchmarks/group_size.py --workload=S --trials=1024 --ks=$AUTO_KS --rounds=$ROUNDS --precision=bfloat16 --unroll=8 --out_dir="$out"
# Several GPUs: throughput against the number a group is sharded over.
if [[ "$(python3 -c 'import jax; print(len(jax.devices()))' 2>/dev/null)" -gt 1 ]]; then
  run benchmarks/devices.py --workload=S --k_per_device=1024 --precision=bfloat16 --unroll=8 --out_dir="$out"
fi
