#!/usr/bin/env bash
# The one prepared check for a machine with an NVIDIA GPU whose python3 already has JAX, PyTorch,
# transformers and PEFT, and no network: parity tests on the GPU, then benchmarks/throughput.py
# against Hugging Face PyTorch for the rows the performance targets name (BERT-base full, frozen
# and LoRA, T5-base full; HF eager, torch.compile, frozen, PEFT LoRA and T5), in under 6 minutes:
# about 20 s to start, 45 s of tests on the GPU (XLA takes 5-10 s per small program there; the
# cuDNN tests first), then rows started until a 240 s budget is spent, the HF rows first (about
# 100 s on an H100), and a started row is killed 45 s past the budget (on the H100 of
# 2026-11-27 a BERT-base full row took 45 s, 34 s of it compiling, and the T5 row 2 minutes,
# 94 s of it compiling; compiled on the 2-core machine without a card, the BERT step now takes
# 13.5-16.6 s against 24-25 s for that day's code, and the T5 step 22.6-24.7 s against 48 s for
# the eighth session's, so the T5 row, the plan's last, should now fit).
#
# --long adds, in about 9.5 minutes in all, before/after rows after the targets (cuDNN's flash
# attention with its own dropout for the full, frozen and LoRA steps and T5; Triton matmuls; XLA's
# fusion autotuner; GEMM autotuning; XLA's Q/K/V matmul merging) with a 330 s budget, the card's
# XLA target config and the compile-time split (gpu_hlo.py --phases, 75 s at most). Set
# ABLATIONS=1 for every speed-option ablation instead (about 45 s each more). Everything it
# prints also lands in $OUT (default benchmarks/results/gpu_check): gpu_check.log, parity.log,
# throughput.{json,md}, the optimized HLO of the BERT full and frozen steps and of the T5 step,
# each default and with cudnn_dropout (hlo_*.txt.gz, for hlo_bytes.py), and with --long the
# card's XLA target config (gpu_target_config.pbtxt, for gpu_hlo.py --target) and
# compile_phases/.
#
#   bash benchmarks/gpu_check.sh          # GPU preset when nvidia-smi sees a GPU, else CPU/tiny
#   bash benchmarks/gpu_check.sh --long   # the targets, then the before/after rows (~9.5 min)
#   bash benchmarks/gpu_check.sh --cpu    # force the CPU path (tiny sizes): how CI tests it
#
# Missing pure-Python dependencies (ml_collections) travel as wheels in .whl/ (see README).
# Environment: PYTHON (default python3), THROUGHPUT_ARGS (extra flags for throughput.py),
# PARITY_SELECT (pytest -k), PARITY_TIMEOUT / THROUGHPUT_BUDGET (seconds), JAXFT_XLA_FLAGS (XLA
# flags for the throughput run, checked first; a "full" row without them is then measured too,
# into $OUT/default_flags/, so the flags' effect is measured side by side), PROFILE=1 (then a
# kernel-by-kernel profile of the BERT full step, benchmarks/profile_step.py, into $OUT/profile/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
exec > >(tee "$OUT/gpu_check.log") 2>&1

mode=gpu long=0
for arg in "$@"; do
  case "$arg" in
    --cpu) mode=cpu ;;
    --long) long=1 ;;
    *) echo "gpu_check.sh: unknown option $arg (options: --long, --cpu)"; exit 2 ;;
  esac
done
nvidia-smi -L >/dev/null 2>&1 || mode=cpu
echo "== gpu_check $(date -u +%FT%TZ) mode=$mode long=$long"

if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/jaxft_site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/jaxft_site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "ml_collections is missing and .whl/ has no wheels: see README (GPU check)"; exit 1
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [[ $mode == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  export JAX_PLATFORMS=cuda,cpu  # the CPU builds each row's random init (throughput.py)
  preset=gpu
else
  export JAX_PLATFORMS=cpu
  preset=tiny
fi
timeout 90 "$PY" -c "import jax, flax, torch, transformers, peft; print('jax', jax.__version__, \
jax.devices(), '| flax', flax.__version__, '| torch', torch.__version__, \
'| transformers', transformers.__version__, '| peft', peft.__version__)"

if [[ $mode == gpu && $long == 1 ]]; then  # the card as XLA reads it: gpu_hlo.py --target's input
  rm -rf /tmp/jaxft_target
  XLA_FLAGS="--xla_dump_to=/tmp/jaxft_target" timeout 60 "$PY" -c \
    "import jax; jax.jit(lambda x: x + 1)(1.0)" >/dev/null 2>&1
  cp "$(compgen -G '/tmp/jaxft_target/*gpu_target_config.pbtxt' | head -1)" \
    "$OUT/gpu_target_config.pbtxt" 2>/dev/null || echo "(XLA wrote no target config)"
fi

# 1. Parity with HF PyTorch (float32, max abs diff <= 1e-4), JAX on this device. The real MiniLM
#    test needs its asset package, which is not on the GPU machine (90 MB, over what travels).
echo "== parity tests"
# The GPU-only attention tests first: jaxft's flash kernels compiled by Triton against their
# reference (the same masks written out, the projections' biases added), alone and in a BERT
# model, then cuDNN's (cuDNN's dropout: new masks each step, the backward's masks the
# forward's, each layer its own). Then dropout masks as the GPU compiles them (rate and
# independence of neighbours).
parity_tests=(tests/test_flash.py::test_triton_kernels_match_the_reference_in_bf16
  tests/test_flash.py::test_bert_attention_runs_in_the_kernel_with_each_layers_seeds
  tests/test_attention_kernels.py::test_cudnn_attention_matches_explicit_in_bf16
  tests/test_attention_kernels.py::test_cudnn_dropout_masks_change_every_step_and_the_backward_uses_the_forward_mask
  tests/test_attention_kernels.py::test_cudnn_dropout_bert_trains_and_its_layers_draw_their_own_masks
  tests/test_attention_kernels.py::test_t5_cudnn_dropout_trains_and_draws_new_masks_each_step
  tests/test_attention_kernels.py::test_t5_cudnn_attention_matches_explicit_in_bf16
  "tests/test_dropout.py::test_each_element_is_kept_at_the_rate_and_independently_of_its_neighbours"
  tests/test_fused_ops.py tests/test_attention_kernels.py tests/test_bert_parity.py
  tests/test_t5_parity.py)
# SIGINT at the timeout: pytest then still prints the failures it has seen.
timeout -s INT "${PARITY_TIMEOUT:-45}" "$PY" -m pytest -q -p no:cacheprovider --tb=short \
  "${parity_tests[@]}" -k "${PARITY_SELECT:-not real_minilm}" 2>&1 | tee "$OUT/parity.log"
parity=${PIPESTATUS[0]}

# 2. Throughput against HF PyTorch, same shapes, same process tree.
echo "== throughput ($preset)"
budget="${THROUGHPUT_BUDGET:-$((long ? 330 : 240))}"
grace=$((long ? 60 : 45))  # for the row running when the budget ends
cpu_extra=()
[[ $mode == cpu ]] && cpu_extra=(--steps 2 --warmup 1 --no-torch_compile)
# HF rows for the targets and PEFT LoRA (LoRA's target is against jaxft's own full step; the
# PEFT row, about 15 s in the torch child, gives the jaxft/PEFT ratio the issue asks for too).
extra=(--strategies full,frozen --hf_strategies full,frozen,lora
  --save_hlo bert_full,bert_frozen,bert_full_flash,bert_full_cudnn_dropout,bert_frozen_cudnn_dropout,t5_full,t5_full_cudnn_dropout
  "${cpu_extra[@]}")
# After full and frozen, the other target rows: LoRA as the library runs it (its target is
# against jaxft's own full step; never measured on a card yet), then T5 (t5:default: its rows,
# jaxft's and HF's, go here instead of between frozen and LoRA).
TARGET_ROWS=lora:default,t5:default
# --long, in this order after the targets, first what would decide a default: jaxft's own
# Pallas flash attention with its dropout drawn in the kernel (attention=flash: jaxft's masks,
# a function of the step's key and the example, no caveat) with every matmul in cuBLAS
# (no_triton_gemm), then with XLA's autotuned mix: compiled for an H100 by jax and XLA 0.11.2
# on the 2-core machine they moved 13.70 and 14.68 GB per full step against the default's
# 18.12 (781 and 819 kernels against 1,072) and compiled faster (cuBLAS alone leaves XLA no
# Triton matmuls to emit), so these rows decide the full-step and compile-time targets; the
# same two for the frozen and LoRA steps (a default would change them all); then cuDNN's
# kernel (attention=cudnn_dropout: cuDNN's masks, which follow this process's step count),
# no_triton_gemm alone, cudnn_dropout for T5 (jaxft's kernel takes no position bias), the
# frozen and LoRA steps; then the library's past choices measured again: the full
# step with a dropout bank per block (block_masks: the library before its one bank per model,
# 18.4 s there and 3% fewer bytes), with XLA's fusion autotuner back on (XLA's default, off in
# jaxft on a GPU since 2026-11-27) and without any autotuning; the frozen and full steps with
# cudnn_dropout and without XLA's merging of the Q, K and V matmuls (no_dot_merger: each keeps
# its bias in its epilogue); T5 as the ninth session left it: its position bias's gradient
# summed by autodiff, its tied LM head in float32 and optax's cross-entropy
# (t5:autodiff_bias+f32_head_loss: 12 GB more compiled for an H100, and the 32,128-way matmuls
# in float32). A row's compile s is measured in the process that compiled the rows before it,
# whose GEMM autotuning results XLA keeps and reuses: the first row's (the default full step)
# is the fresh figure; step 3 compiles the candidate without autotuning.
DIAGNOSTIC_ROWS=flash+no_triton_gemm,flash,frozen:flash+no_triton_gemm,lora:flash+no_triton_gemm,frozen:flash,lora:flash,cudnn_dropout,no_triton_gemm,t5:cudnn_dropout,frozen:cudnn_dropout,lora:cudnn_dropout,cudnn_dropout+no_triton_gemm,block_masks,fusion_autotuner,autotune0,frozen:cudnn_dropout+no_dot_merger,cudnn_dropout+no_dot_merger,t5:autodiff_bias+f32_head_loss
rows=$TARGET_ROWS
[[ $long == 1 ]] && rows+=",$DIAGNOSTIC_ROWS"
[[ "${ABLATIONS:-0}" == 1 ]] || extra+=(--ablations "$rows")
if [[ -n "${JAXFT_XLA_FLAGS:-}" ]]; then
  if XLA_FLAGS="$JAXFT_XLA_FLAGS" "$PY" -c "import jax, jax.numpy as jnp; \
      jax.block_until_ready(jax.jit(lambda x: x @ x)(jnp.ones((64, 64))))"; then
    export XLA_FLAGS="$JAXFT_XLA_FLAGS"; echo "XLA_FLAGS=$XLA_FLAGS"
  else
    echo "JAXFT_XLA_FLAGS=$JAXFT_XLA_FLAGS rejected by this XLA: running without"
    JAXFT_XLA_FLAGS=""
  fi
fi
# shellcheck disable=SC2086
timeout $((budget + grace)) "$PY" benchmarks/throughput.py --preset "$preset" --budget_s "$budget" \
  --out "$OUT" "${extra[@]}" ${THROUGHPUT_ARGS:-}
throughput=$?
if [[ -n "${JAXFT_XLA_FLAGS:-}" ]]; then
  echo "== the full row again, with XLA's default flags"
  XLA_FLAGS="" timeout 150 "$PY" benchmarks/throughput.py --preset "$preset" --only bert \
    --strategies full --ablations "" --no_torch --out "$OUT/default_flags" "${cpu_extra[@]}"
fi

# 3. Where the BERT full step's compile time goes on this host: the same step compiled for the
#    card's target config without running it (no GEMM autotuning), split by XLA's own timers
#    (HLO passes, the slowest of them, LLVM and PTX), by default and with the compile-time
#    candidate (flash+no_triton_gemm), with no autotuning whose results the second could
#    reuse. Set against the throughput rows' compile s, it tells host compiling from
#    autotuning. About 35 s.
if [[ $mode == gpu && $long == 1 && -s "$OUT/gpu_target_config.pbtxt" ]]; then
  echo "== compile phases (gpu_hlo.py --phases)"
  timeout 75 "$PY" benchmarks/gpu_hlo.py --target "$OUT/gpu_target_config.pbtxt" \
    --variants default,flash+no_triton_gemm --phases --out "$OUT/compile_phases" 2>&1 \
    | grep -v "^[WI][0-9]"
fi

if [[ "${PROFILE:-0}" == 1 ]]; then  # where the full step's device time goes, per kernel
  echo "== profile of the BERT full step"
  timeout 150 "$PY" benchmarks/profile_step.py --preset "$preset" --out "$OUT/profile" --top 30
fi

echo "== gpu_check done: parity exit $parity, throughput exit $throughput"
[[ $parity == 0 && $throughput == 0 ]]
