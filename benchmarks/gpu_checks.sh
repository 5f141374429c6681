#!/usr/bin/env bash
# GPU correctness checks and the main job on CUDA, in one short run on a lent GPU:
#   1. the speed-switch tests on CUDA (bf16 vs fp32 loss, compiled vs eager outputs, channels-last, fused AdamW);
#   2. the synthetic bundle's training (defaults, cronos_discrete) with bf16 + torch.compile + fused AdamW, then its
#      evaluation; the metrics and wall times go to $OUT (docs/results/gpu_checks.md).
# Usage: OUT=dir [BENCH_COMMIT=sha] bash benchmarks/gpu_checks.sh   (wheels for missing packages in .whl/, optional)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
source benchmarks/device_wheels.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_speed_switches.py -k cuda -rs 2>&1 | tail -8 \
    | tee "$OUT/pytest_cuda.txt"
RUN=/tmp/synthetic_gpu
B=bundles/synthetic_forecasting/configs
t0=$(date +%s)
timeout 200 python3 -m monai.bundle run training --config_file $B/train.yaml --output_dir $RUN --amp true \
    --compile true --fused_optimizer true > "$OUT/train_log.txt" 2>&1
echo "training rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/summary.txt"
t0=$(date +%s)
timeout 120 python3 -m monai.bundle run evaluating --config_file "['$B/train.yaml','$B/evaluate.yaml']" \
    --output_dir $RUN > "$OUT/eval_log.txt" 2>&1
echo "evaluation rc=$? wall_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/summary.txt"
find $RUN -maxdepth 2 -name "*.json" -o -maxdepth 2 -name "*.csv" | head -20 | tee -a "$OUT/summary.txt"
for f in $(find $RUN/eval_test -maxdepth 1 -name "*.json" -o -maxdepth 1 -name "*summary*" | head -4); do
    cp "$f" "$OUT/eval_$(basename "$f")"
done
tail -n 5 "$OUT/train_log.txt" "$OUT/eval_log.txt"
