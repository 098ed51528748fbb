#!/usr/bin/env bash
# The whole GPU measurement, into the folder given as the first argument:
# the fused kernel checked against XLA at real shapes, a profile of S and L,
# S and L throughput with each speed lever alone (bf16 + unroll, unroll of
# the whole window, hoisted input projection, donation, the fused Pallas
# recurrence in bfloat16: in float32 and at L's H=512 it falls back, see
# kernel_resources.py; the XLA scan with the kernels' backward; XLA's command buffers with while loops, while-loop
# double buffering, no command buffers, GEMM autotuning off for the
# compiles, each through XLA_FLAGS), the baselines (PyTorch cuDNN, torch.func.vmap, a whole
# 1024-trial sweep against its steady state), max_group_size=auto against
# fixed K, a sweep's programs compiled at once against one after another,
# several GPUs when present, and the table of goals vs measured.
# Run from a checkout (PYTHONPATH=. is set here); needs jax with CUDA, flax,
# optax and, for the PyTorch rows, torch. The commands come in order of
# what they are for: first what the goals table needs and one profile of
# S and L (QUICK=1 runs that block alone: five commands, about 4 minutes
# on an H200 by the commands' times on 2026-12-04), then the XLA path at
# S and its profile, the levers one by one and the rest (about 16 minutes
# in all, more than one device session's budget, which then skips the
# end: the kernel's launch settings, L's levers). Each command's seconds
# go to OUT/times.tsv, and the suite's own time is a row of the goals
# table.
# DRY_RUN=1 runs nothing: it checks every command's flags (on any machine).
# REHEARSE=1 runs every command for real at the toy workloads toyS and
# toyL (K up to 4, a few updates) in place of S and L, so the whole suite,
# goals table included, can be run end to end on a CPU with the GPU
# machine's versions before device time is spent on it; its numbers mean
# nothing.
# A command that fails or runs past STEP_TIMEOUT_S (default 240 s) is
# listed in OUT/failed.txt and the suite goes on; once BUDGET_S seconds
# (default 540; QUICK=1: 360) have passed, the commands left are skipped
# and listed there too, so one run fits a device session's time (a
# rehearsal's budget is 1800 s). The exit
# status is non-zero when any command failed or was skipped.
set -euo pipefail
out="${1:?usage: benchmarks/gpu_suite.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  : > "$out/commands.txt"
  run() { echo "$*" >> "$out/commands.txt"; }
else
  nvidia-smi -L 2>/dev/null | tee "$out/device.txt" || true
  : > "$out/failed.txt"
  # Each command's seconds and how it ended, then the suite's own, a line
  # each (goals.py reads them: the suite's time is a goal too).
  printf 'kind\tseconds\tstatus\tcommand\n' > "$out/times.tsv"
  # run [NAME=value ...] SCRIPT FLAGS...: the script under python3, with
  # those variables set for it alone (XLA_FLAGS for a lever, say: added to
  # the XLA_FLAGS the suite was started with, if any).
  run() {
    local left=$((deadline - SECONDS)) limit=$step_limit rc why=ok envs=()
    local start=$SECONDS
    while [[ "${1:-}" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
      if [[ "$1" == XLA_FLAGS=* && -n "${XLA_FLAGS:-}" ]]; then
        envs+=("XLA_FLAGS=$XLA_FLAGS ${1#XLA_FLAGS=}")
      else
        envs+=("$1")
      fi
      shift
    done
    if (( left < 30 )); then
      echo "skipped (the suite's ${budget}s budget is spent): $*" | tee -a "$out/failed.txt"
      printf 'command\t0\tskipped\t%s\n' "$*" >> "$out/times.tsv"
      return 0
    fi
    (( left < limit )) && limit=$left
    echo "+ ${envs[*]+${envs[*]} }$*"
    set +e
    timeout -k 10 "$limit" env ${envs[@]+"${envs[@]}"} python3 "$@" 2>&1 | grep --line-buffered -v "Unable to initialize backend" | tee -a "$out/suite.log"
    rc=${PIPESTATUS[0]}
    set -e
    if (( rc != 0 )); then
      why="exit $rc"
      (( rc == 124 || rc == 137 )) && why="past its ${limit}s limit"
      echo "FAILED ($why): ${envs[*]+${envs[*]} }$*" | tee -a "$out/suite.log" "$out/failed.txt"
    fi
    printf 'command\t%d\t%s\t%s\n' $((SECONDS - start)) "$why" \
      "${envs[*]+${envs[*]} }$*" >> "$out/times.tsv"
  }
fi
# The workloads and group sizes; REHEARSE=1 shrinks them all.
S=S; L=L; K=1024; LK=256; WHOLE=32; SMALL=(); PROFILE_FLAGS=()
S_KS=1,64,256,1024,2048; L_KS=1,64,256; SWEEP=8; AUTO_KS=256,1024; ROUNDS=2
if [[ "${REHEARSE:-0}" == 1 ]]; then
  S=toyS; L=toyL; K=4; LK=2; WHOLE=8; S_KS=1,4; L_KS=1,2; SWEEP=2
  AUTO_KS=2,4
  SMALL=(--batch=4 --hidden=16 --input=8 --window=4 --k=2 --repeats=1)
  PROFILE_FLAGS=(--updates=2)
fi
# A rehearsal's CPU compiles slowly: it gets a half hour.
default_budget=$([[ "${QUICK:-0}" == 1 ]] && echo 360 || echo 540)
[[ "${REHEARSE:-0}" == 1 ]] && default_budget=1800
step_limit="${STEP_TIMEOUT_S:-240}"
budget="${BUDGET_S:-$default_budget}"
deadline=$((SECONDS + budget))
BF="--precision=bfloat16"
# XLA's command buffer kinds with loops and conditionals added to its usual.
CMDBUF_WHILE=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,WHILE,CONDITIONAL
# First what the goals table needs, at each path's best settings of the
# last run (H200, 2026-12-04: the fused kernel in bfloat16 for S, bfloat16
# with unroll 8 for L, where it falls back), and one profile of both:
# QUICK=1 runs this block alone. Five commands, each paying CUDA's
# start-up and its compiles (23 to 115 s each on 2026-12-04: about 4
# minutes in all by those times; OUT/times.tsv has each one's). A budget
# cut skips the end.
run benchmarks/fused_check.py --num_warps=auto --forward_stages=1 ${SMALL[@]+"${SMALL[@]}"} --out_dir="$out"
# S's trial-steps/s (its K-trial group), PyTorch, the whole sweep.
run benchmarks/baselines.py --workload=$S --k=$K --sweep_trials=0 --full_sweep_trials=$K $BF --recurrence=pallas --out_dir="$out"
run benchmarks/throughput.py --workload=$L --ks=$LK $BF --unroll=8 --out_dir="$out"
# L cannot use the kernel (H=512): its XLA scan with the kernels' backward,
# whose recurrent-kernel gradient is one matmul per window instead of 32
# read-modify-writes of a float32 [K, 512, 2048] accumulator (2 GiB a
# step at K=256).
run benchmarks/throughput.py --workload=$L --ks=$LK $BF --unroll=8 --recurrence=xla_vjp --out_dir="$out"
# S through the kernel, L through its fallback (the XLA scan, unroll 8).
run benchmarks/profile_gpu.py --workloads=$S,$L ${PROFILE_FLAGS[@]+"${PROFILE_FLAGS[@]}"} $BF --unroll=8 --recurrence=pallas --out_dir="$out"
if [[ "${QUICK:-0}" != 1 ]]; then
  # Then the XLA path against the kernel at S and its profile, each lever
  # alone against its neighbour, the XLA path's baselines, auto against
  # fixed K, compiles at once, and the kernel's launch settings.
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --recurrence=pallas --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --out_dir="$out"
  # The profile of 2026-12-04 found the GPU idle 42% of a tick: XLA runs a
  # while loop's condition on the host unless its command buffers hold loops.
  run XLA_FLAGS=--xla_gpu_enable_command_buffer=$CMDBUF_WHILE benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --tag=throughput_${S}_lstm_bfloat16_u8_cmdbuf_while --out_dir="$out"
  run benchmarks/profile_gpu.py --workloads=$S,$L ${PROFILE_FLAGS[@]+"${PROFILE_FLAGS[@]}"} $BF --unroll=8 --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$S_KS --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=$WHOLE --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --hoist_input --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --donate --out_dir="$out"
  run benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --recurrence=xla_vjp --out_dir="$out"
  run XLA_FLAGS=--xla_gpu_enable_command_buffer=$CMDBUF_WHILE benchmarks/throughput.py --workload=$S --ks=$K $BF --recurrence=pallas --tag=throughput_${S}_lstm_bfloat16_pallas_cmdbuf_while --out_dir="$out"
  run XLA_FLAGS=--xla_gpu_enable_while_loop_double_buffering=true benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --tag=throughput_${S}_lstm_bfloat16_u8_double_buffer --out_dir="$out"
  run XLA_FLAGS=--xla_gpu_enable_command_buffer= benchmarks/throughput.py --workload=$S --ks=$K $BF --unroll=8 --tag=throughput_${S}_lstm_bfloat16_u8_no_cmdbuf --out_dir="$out"
  # The whole sweep's time beyond training is mostly compiles: XLA's GEMM
  # autotuning off (level 0), for compile time, steady speed and the
  # whole-sweep ratio side by side with the goals block's fused row.
  run XLA_FLAGS=--xla_gpu_autotune_level=0 benchmarks/baselines.py --workload=$S --k=$K --sweep_trials=0 --full_sweep_trials=$K $BF --recurrence=pallas --notorch --out_dir="$out/autotune0"
  run benchmarks/baselines.py --workload=$S --k=$K --sweep_trials=$SWEEP --full_sweep_trials=$K $BF --unroll=8 --out_dir="$out"
  run benchmarks/group_size.py --workload=$S --trials=$K --ks=$AUTO_KS --rounds=$ROUNDS $BF --recurrence=pallas --out_dir="$out"
  run benchmarks/compile_at_once.py --workload=$S --trials=$K --updates=50 --rounds=$ROUNDS $BF --recurrence=pallas --out="$out/compile_at_once_$S.json"
  run benchmarks/throughput.py --workload=$L --ks=$L_KS --out_dir="$out"
  run benchmarks/throughput.py --workload=$L --ks=$LK $BF --unroll=8 --hoist_input --out_dir="$out"
  # One layer at L's shapes: the XLA scan against its kernels' backward.
  run benchmarks/fused_check.py --cells=lstm --dtypes=bfloat16 --batch=128 --hidden=512 --k=16 ${SMALL[@]+"${SMALL[@]}"} --out_dir="$out/fused_check_$L"
  run benchmarks/fused_check.py --num_warps=auto,4,16 --forward_stages=1,3 ${SMALL[@]+"${SMALL[@]}"} --out_dir="$out/launch"
fi
# Several GPUs: throughput against the number a group is sharded over.
if [[ "${DRY_RUN:-0}" == 1 || "$(python3 -c 'import jax; print(len(jax.devices()))' 2>/dev/null)" -gt 1 ]]; then
  run benchmarks/devices.py --workload=$S --k_per_device=$K $BF --unroll=8 --out_dir="$out"
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  python3 benchmarks/check_flags.py "$out/commands.txt"
else
  printf 'suite\t%d\t%s\t%s\n' "$SECONDS" \
    "$([[ "${QUICK:-0}" == 1 ]] && echo quick || echo whole)" "$0" >> "$out/times.tsv"
  goals=("$out"); [[ "${REHEARSE:-0}" == 1 ]] && goals+=("$S" "$L")
  python3 benchmarks/goals.py "${goals[@]}" | tee -a "$out/suite.log"
  if [[ -s "$out/failed.txt" ]]; then exit 1; fi
fi
