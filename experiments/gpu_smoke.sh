#!/usr/bin/env bash
# GPU checks in one go, for a lent GPU machine (GPU time is scarce: run this script, nothing else):
#   1. `pytest -m gpu`: every search mode, two workers, baseline, apply (refit), finetune, evaluate, export and
#      profile-latency on CUDA with tiny models;
#   2. a short ResNet-20 / CIFAR-10 search at 30% FLOPs with the 30-step KD reward, 1 and 4 workers:
#      seconds per candidate and episodes per minute;
#   3. one KD fine-tune epoch of the uniform 50% student (experiments/benchmark_ddp.py, one process).
# DEVICE=cpu EPISODES=2 WORKERS=1 checks the script itself on a machine without a GPU (it proves nothing about CUDA).
# Figures land in $OUT/gpu.md and $OUT/*.json (the last lent machine's are the record docs/records/gpu.md).
#
# Needs, in ignored folders carried to the machine: .device/wheels/*.whl (what its image lacks: stable-baselines3,
# gymnasium, farama-notifications, torch-pruning, pytest, pluggy, iniconfig) and .device/cifar10-jpeg.tar.gz.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD AMC_CACHE=/tmp/amc-cache OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
step() { echo "== $(date +%T) $*"; }
step install
for wheel in .device/wheels/*.whl; do python3 -m pip install --quiet --no-deps --no-index "$wheel" || true; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"

step pytest
AMC_GPU_TEST_DEVICE=${DEVICE:-cuda} python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -rA 2>&1 \
  | tail -40 | tee "$OUT/pytest_gpu.log"

data=.device/cifar10-jpeg.tar.gz
for workers in ${WORKERS:-1 4}; do
  step "search, $workers workers"
  timeout "${SEARCH_TIMEOUT:-180}" python3 -m agents.cli search --config experiments/configs/resnet20_c10_flops30.yaml \
    --set data_dir=$data --set device="${DEVICE:-cuda}" --set workers="$workers" --set episodes="${EPISODES:-40}" \
    --set warmup_episodes="${EPISODES:-40}" --set report_samples=2000 --set out_dir=/tmp/runs \
    --set name="gpu-smoke-w$workers" --json 2>&1 | grep -v "search: *[0-9]*%" | tail -1 > "$OUT/search_w$workers.json"
done

step "fine-tune epoch"
timeout "${DDP_TIMEOUT:-150}" python3 experiments/benchmark_ddp.py run --processes 1 --device "${DEVICE:-cuda}" --data-dir $data \
  --results "$OUT/ddp.json" 2>&1 \
  | tail -5 | tee "$OUT/ddp.log"

step report
python3 - <<'PY'
import json, os, pathlib
out = pathlib.Path(os.environ["OUT"])
lines = ["# GPU smoke figures", "", "```", (out / "gpu.txt").read_text().strip(), "```", "",
         "## pytest -m gpu", "", "```", (out / "pytest_gpu.log").read_text().strip().splitlines()[-1], "```", "",
         "## ResNet-20 search, 30% FLOPs, 30-step KD reward, random warm-up episodes", "",
         "| workers | episodes | episodes/min | s per candidate | precision | device |", "|---|---|---|---|---|---|"]
for path in sorted(out.glob("search_w*.json")):
    try:
        r = json.loads(path.read_text())
        lines.append(f"| {r['workers']} | {r['episodes']} | {r['episodes_per_minute']:.1f} | "
                     f"{r['seconds_per_candidate']:.2f} | {r['precision']} | {r['device']} |")
    except (ValueError, KeyError):
        lines.append(f"| {path.stem} | failed: see the logs | | | | |")
if (out / "ddp.md").exists():
    lines += ["", (out / "ddp.md").read_text().strip()]
(out / "gpu.md").write_text("\n".join(lines) + "\n")
print((out / "gpu.md").read_text())
PY
