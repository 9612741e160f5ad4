#!/usr/bin/env bash
# GPU smoke run: every first-party task for STEPS optimiser steps on one GPU in bf16 mixed precision through
# the real CLI (`polydiff fit --config <task>`), then CSDI's batched imputation timed against the one-sample-
# at-a-time loop on the same GPU. Prints one markdown table per part (for docs/benchmarks.md).
#
#   bash benchmarks/gpu_smoke.sh                      # all tasks, 50 steps, GPU, bf16-mixed
#   STEPS=2 ACCELERATOR=cpu PRECISION=32-true TASKS="image/digits" bash benchmarks/gpu_smoke.sh   # CPU check
#
# Environment: STEPS (50), ACCELERATOR (gpu), PRECISION (bf16-mixed), TASKS (all first-party tasks),
# SHARED (../shared/data: the project's real data; the tasks read it instead of downloading), OUT
# (/tmp/polydiff_gpu_smoke), IMPUTE_SAMPLES (100), PYTHON (.venv/bin/python if present, else python3).
# Seconds are wall time of the whole command (start-up, data set-up, STEPS steps, 4 final samples).
set -uo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-50}
ACCELERATOR=${ACCELERATOR:-gpu}
PRECISION=${PRECISION:-bf16-mixed}
SHARED=$(cd "${SHARED:-../shared/data}" 2>/dev/null && pwd || echo "${SHARED:-../shared/data}")
OUT=${OUT:-/tmp/polydiff_gpu_smoke}
IMPUTE_SAMPLES=${IMPUTE_SAMPLES:-100}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
ALL_TASKS="image/digits timeseries/csdi_physionet timeseries/csdi_aqi36 timeseries/csdi_etth1
timeseries/sssd_physionet timeseries/sssd_etth1 pointcloud/dpm_chair pointcloud/dpm_airplane
pointcloud/completion_chair medical/anoddpm_ixi medical/cfg_brats medical/wolleb_brats"
TASKS=${TASKS:-$ALL_TASKS}

# Where each task's data lives under SHARED (the shipped configs point at a download or a relative path).
data_args() {
  case "$1" in
    timeseries/*physionet) echo "--data.init_args.root=$SHARED/timeseries/physionet2012" ;;
    timeseries/csdi_aqi36) echo "--data.init_args.root=$SHARED/timeseries/pm25_aqi36" ;;
    timeseries/*etth1) echo "--data.init_args.root=$SHARED/timeseries/ett_small" ;;
    pointcloud/*) echo "--data.init_args.root=$SHARED/pointcloud/procedural" ;;
    medical/anoddpm_ixi) echo "--data.init_args.path=$SHARED/medical/derived/ixi_synth_64.npz" ;;
    medical/*brats) echo "--data.init_args.root=$SHARED/medical/wolleb_brats2020_slices" ;;
  esac
}

mkdir -p "$OUT"
rows=()
for task in $TASKS; do
  name=${task//\//_}
  log="$OUT/$name.log"
  start=$(date +%s.%N)
  # shellcheck disable=SC2046 # data_args prints one argument or none
  "$PYTHON" -m polydiff.cli fit --config "$task" $(data_args "$task") \
    --trainer.accelerator="$ACCELERATOR" --trainer.devices=1 --trainer.precision="$PRECISION" \
    --trainer.max_steps="$STEPS" --trainer.limit_val_batches=0 --trainer.enable_progress_bar=false \
    --trainer.default_root_dir="$OUT/$name" --model.init_args.final_num_samples=4 >"$log" 2>&1
  rc=$?
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  if [[ $rc -eq 0 ]]; then status=ok; else status="FAILED (rc $rc, see $log)"; fi
  rows+=("| $task | $status | $(printf '%.1f' "$secs") | $(printf '%.2f' "$(echo "scale=4; $STEPS / $secs" | bc)") |")
  echo "$task: $status" >&2
done

echo
echo "### GPU smoke: $STEPS steps per task, accelerator $ACCELERATOR, precision $PRECISION"
echo
echo "| task | status | seconds (whole command) | steps/s (incl. start-up) |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"

echo
"$PYTHON" - "$ACCELERATOR" "$PRECISION" "$IMPUTE_SAMPLES" <<'EOF'
"""CSDI imputation of one PhysioNet-shaped series (35 features x 48 steps, T = 50): all samples folded into
one batch vs one sample at a time, on the chosen device (bf16 autocast when asked)."""
import sys
import time

import torch

from polydiff import Denoiser
from polydiff.plugins.timeseries import csdi
from polydiff.plugins.timeseries.imputation import impute

accelerator, precision, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = torch.device("cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
model = csdi.CSDIBackbone(35, channels=64, layers=4).to(device).eval()
den = Denoiser(model, csdi.csdi_process(), "eps").to(device)
x = torch.randn(1, 35, 48, device=device)
known = torch.rand(1, 35, 48, device=device) < 0.6
autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))


def timed(fn):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


with torch.no_grad(), autocast:
    g = torch.Generator(device=device).manual_seed(0)
    impute(den, x, known, 2, generator=g)  # warm-up (kernels, allocator)
    batched = timed(lambda: impute(den, x, known, n, generator=g))
    looped = timed(lambda: [impute(den, x, known, 1, generator=g) for _ in range(n)])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"### CSDI batched imputation: {n} samples of one series, T = 50, {name}, {precision}\n")
print("| method | seconds |\n|---|---|")
print(f"| samples folded into the batch (polydiff) | {batched:.2f} |\n| one sample at a time | {looped:.2f} |")
print(f"\nspeed-up {looped / batched:.1f}x")
EOF
