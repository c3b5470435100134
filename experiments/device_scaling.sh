#!/usr/bin/env bash
# Parallel-search throughput on a GPU machine: ResNet-20 / CIFAR-10 at 50% FLOPs, 1, 4 and 8 local workers
# sharing one GPU, default reward and the 30-step KD reward. Rows land in $OUT/scaling_gpu.json as they
# finish; merge them into experiments/results/scaling.json afterwards.
#
# Needs, in ignored folders carried to the machine: .device/wheels/*.whl (the packages its image lacks:
# stable-baselines3, gymnasium, farama-notifications, torch-pruning) and .device/cifar10-jpeg.tar.gz.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD AMC_CACHE=/tmp/amc-cache OUT=${OUT:-/tmp/out}
python3 -m pip install --quiet --no-deps --no-index .device/wheels/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
common=(--set data_dir=.device/cifar10-jpeg.tar.gz --results "$OUT/scaling_gpu.json" --out-dir /tmp/runs)
python3 experiments/benchmark_scaling.py throughput --rows ${ROWS:-local:1 local:4 local:8} "${common[@]}" 2>&1 \
  | grep -v "search: *[0-9]*%" | tee "$OUT/bn.log"
python3 experiments/benchmark_scaling.py throughput --rows ${KD_ROWS:-local:1 local:4 local:8} --finetune-steps 30 \
  --episodes "${KD_EPISODES:-60}" "${common[@]}" 2>&1 | grep -v "search: *[0-9]*%" | tee "$OUT/kd30.log"
