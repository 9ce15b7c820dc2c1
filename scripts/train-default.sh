#!/usr/bin/env bash
# Trains the bundled default models (models/default/) from scratch on generated shapes, with the
# exact commands and seeds behind the committed weights, then evaluates them on the generated
# validation split. About an hour on 2 CPU cores; CUDA: CSP_TRAIN_FEATURES=cuda DEVICE=cuda.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${WORK:-target/default-models}
device=${DEVICE:-cpu}
features=${CSP_TRAIN_FEATURES:-}
cargo build --release -p csp-train ${features:+--features "$features"}
train=target/release/csp-train
# candle's CPU pool spins between ops; one compute thread per process is faster on 2 cores.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

rm -rf "$work"
mkdir -p "$work"
"$train" synth --out "$work/det" --images 3000 --seed 1 --format coco --val-fraction 0.1
"$train" synth --out "$work/cls" --images 3000 --seed 2 --format folder --val-fraction 0.1

"$train" detect --data "$work/det" --arch csppeleenet_ref_efm_sam --width 0.25 --size 160 --batch-size 16 \
  --steps 900 --lr 0.005 --workers 1 --seed 1 --checkpoint-every 100 --device "$device" --out "$work/run-det"
"$train" classify --data "$work/cls" --arch cspresnet10 --width 0.25 --size 64 --batch-size 32 \
  --steps 600 --lr 0.1 --power 1 --weight-decay 0.0005 --workers 1 --seed 1 --checkpoint-every 200 --eval-every 200 --device "$device" \
  --out "$work/run-cls"

out=models/default
mkdir -p "$out"
cp "$work/run-det/model.safetensors" "$out/shapes-detector.safetensors"
cp "$work/run-det/labels.txt" "$out/shapes-detector.labels.txt"
cp "$work/run-cls/model.safetensors" "$out/shapes-classifier.safetensors"
cp "$work/run-cls/labels.txt" "$out/shapes-classifier.labels.txt"
"$train" eval --weights "$out/shapes-detector.safetensors" --data "$work/det" --json | tee "$out/shapes-detector.eval.json"
"$train" eval --weights "$out/shapes-classifier.safetensors" --data "$work/cls" --json | tee "$out/shapes-classifier.eval.json"
