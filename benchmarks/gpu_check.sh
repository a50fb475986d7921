#!/usr/bin/env bash
# Module 2 on one GPU, in one go (issue #14): the `full` preset's generator against a plain
# PyTorch loop of the same networks (images/s), then that generator trained on Fashion-MNIST-100
# (semi: the 100 labels plus a CPU label run's pseudo-labels) for as many steps as fit
# GEN_SECONDS, and scored by `semigen evaluate` (FID, KID, class consistency, worst class).
#
#   bash benchmarks/gpu_check.sh FMNIST_DIR PSEUDO_LABELS_CSV OUT_DIR
#
# Needs semigen's dependencies (kornia is the one a stock GPU image lacks: bring its wheels).
set -euo pipefail
FMNIST_DIR=$1 PSEUDO=$2 OUT=$3
GEN_SECONDS=${GEN_SECONDS:-240}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu STEPS=20 MEASURE_STEPS=20 EVALUATE="--per-class 20
                        # --evaluator-steps 30": a dry run of the script on a CPU
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
start=$(date +%s)

# 1. images/s: semigen's loop and the plain loop, full preset, on the GPU
$PY benchmarks/step_time.py --data fmnist --preset full --device "$DEVICE" \
    --steps "${MEASURE_STEPS:-200}" --repeats 2 \
    --set data.fmnist_dir="$FMNIST_DIR" --json "$OUT/step_time.json" | tee "$OUT/step_time.md"
echo "step_time: $(( $(date +%s) - start )) s"

# 2. as many generator steps as GEN_SECONDS allow at the measured rate, then the scores
steps=${STEPS:-$($PY -c "
import json, yaml
rate = json.load(open('$OUT/step_time.json'))['images_per_second']['semigen at this checkout']
batch = yaml.safe_load(open('src/semigen/configs/full.yaml'))['generate']['batch_size']
print(min(40000, max(1000, int(rate * $GEN_SECONDS / batch) // 500 * 500)))")}
echo "training the full preset's generator for $steps steps"
run=${RUN:-/tmp/semigen-gpu-check}  # outside OUT: only a few files come back from there
rm -rf "$run"; mkdir -p "$run"
cp "$PSEUDO" "$run/pseudo_labels.csv"
t0=$(date +%s)
$PY -m semigen generate fmnist --preset full --out "$run" --labels-per-class 10 --split-seed 0 \
    --seed 0 --device "$DEVICE" --generate.mode semi --generate.steps "$steps" \
    --data.fmnist_dir "$FMNIST_DIR" \
    --run.progress false 2>&1 | tail -n 3
echo "generator training: $(( $(date +%s) - t0 )) s for $steps steps" | tee "$OUT/train_time.txt"
$PY -m semigen evaluate "$run" ${EVALUATE:-} 2>&1 | tail -n 20  # the run's config: full, GPU
cp "$run/metrics.json" "$OUT/metrics.json"
cp "$run/log.txt" "$OUT/log.txt"
cp "$(ls "$run"/samples/generate-step-*.png | tail -n 1)" "$OUT/samples.png"
echo "total: $(( $(date +%s) - start )) s"
