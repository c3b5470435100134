#!/usr/bin/env bash
# Issue 3's figures on the committed ResNet-20 teacher: the uniform 50%-FLOPs student with and without
# BatchNorm recalibration, its 15-epoch KD fine-tune, and the latency table's prediction error.
# Usage: bash experiments/engine_resnet20.sh [OUT_DIR]   (writes JSON lines to OUT_DIR, default runs/engine)
set -euo pipefail
T=experiments/teachers/resnet20_cifar10.pt
OUT=${1:-runs/engine}
mkdir -p "$OUT"
amc() { .venv/bin/amc "$@"; }
last() { tail -n 1; }

amc evaluate "$T" --json | last > "$OUT/teacher.json"
amc baseline uniform --teacher "$T" --flops 0.5 --out "$OUT/uniform50.json" --json | last > "$OUT/baseline.json"
amc apply --teacher "$T" --policy "$OUT/uniform50.json" --out "$OUT/student_raw.pt" --json | last > "$OUT/apply.json"
amc evaluate "$OUT/student_raw.pt" --json | last > "$OUT/student_raw.json"
amc apply --teacher "$T" --policy "$OUT/uniform50.json" --out "$OUT/student.pt" --recalibrate-bn 20 --json | last
amc evaluate "$OUT/student.pt" --json | last > "$OUT/student_recal.json"
amc profile-latency "$T" --out "$OUT/resnet20_lut_b1.json" --batch-size 1 --threads 1 --check 20 --json | last > "$OUT/lut.json"
amc finetune --student "$OUT/student.pt" --teacher "$T" --epochs 15 --out "$OUT/student_ft.pt" --json | last > "$OUT/finetune.json"
amc evaluate "$OUT/student_ft.pt" --json | last > "$OUT/student_ft.json"
