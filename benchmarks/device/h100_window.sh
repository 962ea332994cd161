#!/usr/bin/env bash
# The GPU session of the real runs (issues 3, 4, 6, 8, 9), as run through the device tool on one H100.
#
# The device machine is bare and keeps files only while it stays warm, and one call carries at most
# 64 MiB, so the data and the FID weights travel in three parts (../shared/device/stage-assets.sh)
# and the wheels the image lacks in .whl (../shared/device/stage-wheels.sh). Calls, back to back:
#
#   run carry [.devcache/p1]        bash benchmarks/device/h100_window.sh stage1
#   run carry [.devcache/p2]        bash benchmarks/device/h100_window.sh stage2
#   run carry [.devcache/p3, .whl]  bash benchmarks/device/h100_window.sh stage3   # tests, prewarm, starts jobs
#   run                             bash benchmarks/device/h100_window.sh wait     # (repeat) progress + results
#
# stage3 starts the long work in the background (setsid, so it outlives the call) in this order:
#   1. benchmarks/train_step.py on an otherwise idle GPU (issue 8)
#   2. together: recipes/sagan.yaml for 10 minutes (issue 4), the ablation study (issue 6) and the
#      torchrun --nproc_per_node=1 vs plain-run loss check (issue 9)
# `wait` polls until everything is done (or its time is up) and packs results into $OUT/results.tar.gz.
set -uo pipefail
phase=${1:?phase}
ROOT=/root/assets
WORK=/root/work
export GANZOO_CACHE=/root/cache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$WORK"

pack() {  # small files only: metrics, recipes, commands, logs, last sample grids, reports
  local dest=${OUT:-/tmp}/results.tar.gz
  (cd "$WORK" && find . -type f \( -name '*.jsonl' -o -name '*.yaml' -o -name '*.txt' -o -name '*.log' \
      -o -name '*.json' -o -name '*.md' -o -name '*.png' \) -size -4M -print0 \
      | tar czf "$dest" --null -T - 2>/dev/null)
  ls -la "$dest"
}

case "$phase" in
stage1) mkdir -p "$ROOT" && cp .devcache/p1/* "$ROOT"/ && ls -la "$ROOT" ;;
stage2) cp .devcache/p2/* "$ROOT"/ && ls -la "$ROOT" ;;
stage3)
  cp .devcache/p3/* "$ROOT"/ && (cd "$ROOT" && cat part-* | tar x && rm part-*) || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # the recipes name ../shared/...: give the device the same layout as a checkout beside shared/
  mkdir -p ../shared/data ../shared/weights
  ln -sf "$ROOT/cifar10-jpeg.tar.gz" ../shared/data/cifar10-jpeg.tar.gz
  ln -sf "$ROOT/fid-inception-2015-12-05.pth" ../shared/weights/fid-inception-2015-12-05.pth
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/gpu.txt"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$WORK/gpu.txt"
  # GPU property tests (issue 3 blocks, issue 5 backends): every test marked gpu
  timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider -n 8 tests plugins/ganzoo-example-plugin/tests \
    > "$WORK/gpu_tests.log" 2>&1; echo "gpu tests exit $?" | tee -a "$WORK/gpu_tests.log"
  tail -5 "$WORK/gpu_tests.log"
  # prewarm: decode CIFAR-10 once into the cache and compute the 10k test-split reference statistics once
  timeout 240 python3 -m ganzoo run recipes/sagan.yaml --out "$WORK/prewarm" --set train.steps=2 \
    --set eval.num_samples=10000 --device cuda > "$WORK/prewarm.log" 2>&1; echo "prewarm exit $?"; tail -3 "$WORK/prewarm.log"
  setsid nohup bash benchmarks/device/h100_window.sh jobs > "$WORK/jobs.log" 2>&1 < /dev/null &
  sleep 5; cat "$WORK/jobs.log"; pack ;;
jobs)
  export PYTHONPATH=/tmp/site:$PWD
  date -u +%FT%TZ > "$WORK/started.txt"
  # 1. issue 8: the training step on an idle GPU
  timeout 420 python3 benchmarks/train_step.py --out "$WORK/train_step" --data-root "$ROOT/cifar10-jpeg.tar.gz" \
    > "$WORK/train_step.log" 2>&1; echo "train_step exit $?"
  # 2. together on the one GPU: issue 4 (10 minutes of sagan.yaml), issue 6 (the ablation, every
  #    variant x 2 seeds, the same 9-minute budget each), issue 9 (torchrun --nproc_per_node=1 vs plain)
  python3 -m ganzoo run recipes/sagan.yaml --out "$WORK/runs" --name sagan-cifar10-10min --device cuda \
    --set train.time_limit_minutes=10 --set eval.every=2000 --set train.sample_every=1000 \
    --set train.checkpoint_every=2000 > "$WORK/sagan10.log" 2>&1 &
  python3 -m ganzoo ablate recipes/ablations/*.yaml --seeds 0 1 --minutes 9 --jobs 14 --out "$WORK/ablate" \
    --device cuda --set eval.every=2000 --set train.sample_every=2000 --set train.checkpoint_every=2000 \
    --report "$WORK/ablate/cifar10.md" --title "Where should attention go? SAGAN ablation on CIFAR-10" \
    > "$WORK/ablate.log" 2>&1 &
  if [ -f benchmarks/ddp_check.sh ]; then
    OUT="$WORK/ddp" PYTHON=python3 timeout 400 bash benchmarks/ddp_check.sh recipes/sagan.yaml 200 1 \
      > "$WORK/ddp_check.log" 2>&1 &
  fi
  wait
  date -u +%FT%TZ > "$WORK/finished.txt"
  echo "all jobs done" ;;
wait)
  limit=${2:-540}; t0=$(date +%s)
  while [ ! -f "$WORK/finished.txt" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 15; done
  cat "$WORK/jobs.log"; tail -3 "$WORK/train_step.log" 2>/dev/null; tail -2 "$WORK/sagan10.log" 2>/dev/null
  tail -5 "$WORK/ablate.log" 2>/dev/null; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
  [ -f "$WORK/finished.txt" ] && echo FINISHED
  pack ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
