#!/usr/bin/env bash
# The issue-6 GPU figures in one short run (docs/results/speed_gpu*.md): the ACDC paper setting (batch 4, 11 frames,
# 128 x 128 x 32, CRONOS UNet width 32) on one CUDA device.
#   1. main table: discrete vs continuous at T = 11, 7, 3 (fp32, fused AdamW): throughput, CUDA peak memory,
#      counted FLOPs and their fraction of the measured bf16 matmul peak, forecast latency at 1/5/10 Euler steps
#      and dopri5 (T = 11) with NFE;
#   2. each speed switch alone against the fp32 / eager / unfused baseline at the paper setting.
# Usage: OUT=dir [BENCH_COMMIT=sha] bash benchmarks/gpu_speed.sh   (wheels for missing packages in .whl/, optional)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_speed}
mkdir -p "$OUT"
source benchmarks/device_wheels.sh
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/nvidia_smi.txt"
python3 -c "import torch, monai, ignite; print('torch', torch.__version__, 'monai', monai.__version__)" || exit 1
SETTING=(--grid 128 128 32 --channels 32 --batch 4 --steps 10 --warmup 3 --measure-peak --spec-peak-tflops 989)
LABEL="GPU, the ACDC paper setting (batch 4, 128 x 128 x 32, CRONOS UNet width 32, no attention); fp32 with TF32 convolutions (PyTorch default) unless a row says otherwise"
timeout "${MAIN_S:-240}" python3 benchmarks/speed.py "${SETTING[@]}" --context 11 7 3 --grid-slots 11 \
    --variants discrete continuous --dopri5-context 11 --out "$OUT/speed_gpu" --label "$LABEL" 2>&1 | tail -20
timeout "${SWITCH_S:-330}" python3 benchmarks/speed.py "${SETTING[@]}" --switches --variant discrete --t 11 --context 11 \
    --timeout 200 --out "$OUT/speed_gpu" --label "$LABEL" 2>&1 | tail -20
cat "$OUT"/speed_gpu*.md
