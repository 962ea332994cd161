#!/usr/bin/env bash
# DDP check on GPUs: the same recipe, seed and global batch trained by a plain `ganzoo run` and by
# `torchrun --nproc_per_node=NPROC -m ganzoo run`, then the logged losses side by side.
#
#   benchmarks/ddp_check.sh [RECIPE] [STEPS] [NPROC] [extra --set overrides...]
#   benchmarks/ddp_check.sh recipes/quickstart.yaml 300 1
#   FP32=1 benchmarks/ddp_check.sh recipes/quickstart.yaml 300 1   # fp32, no TF32, deterministic kernels
#   CONTROL=1 ...                                                    # + a second plain run, for the run-to-run spread
#
# NPROC=1 runs the DDP code path (process group, DDP wrappers, agreed decisions) on one GPU with the
# very same data and noise as the plain run: the losses should agree to the last digits printed,
# up to cuDNN's run-to-run differences (cudnn.benchmark picks kernels per run), which grow slowly
# over the steps. NPROC>1 (as many GPUs) splits every global batch over the processes; the losses
# then follow the plain run closely at first and drift apart within bf16 noise (batch-norm
# statistics are per process unless train.sync_batchnorm=true, which this script sets).
# Writes into ${OUT:-/tmp/ganzoo-ddp-check}; prints both runs' wall times and the largest differences.
# DEVICE=cpu runs the same comparison on the CPU (gloo; NPROC processes on the CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:-recipes/quickstart.yaml}
STEPS=${2:-300}
NPROC=${3:-1}
shift $(( $# < 3 ? $# : 3 ))
OUT=${OUT:-/tmp/ganzoo-ddp-check}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
rm -rf "$OUT"
mkdir -p "$OUT"

SETS=(--set "train.steps=$STEPS" --set train.log_every=10 --set train.sample_every=0
      --set "train.checkpoint_every=$STEPS" --set train.time_limit_minutes=null --set "eval.metrics=[]"
      --set train.sync_batchnorm=true)
if [ "${FP32:-0}" = 1 ]; then  # fp32 without TF32, deterministic kernels: two plain runs agree exactly
  SETS+=(--set train.precision=fp32 --set train.tf32=false --set train.deterministic=true)
fi
for s in "$@"; do SETS+=(--set "$s"); done

echo "== plain run: $RECIPE, $STEPS steps"
t0=$(date +%s.%N)
"$PY" -m ganzoo run "$RECIPE" "${SETS[@]}" --device ${DEVICE:-cuda} --out "$OUT" --name plain --no-progress > "$OUT/plain.log" 2>&1 \
  || { tail -30 "$OUT/plain.log"; exit 1; }
t1=$(date +%s.%N)
if [ "${CONTROL:-0}" = 1 ]; then  # a second plain run: how far two identical runs drift on this GPU
  echo "== control: the plain run again"
  "$PY" -m ganzoo run "$RECIPE" "${SETS[@]}" --device ${DEVICE:-cuda} --out "$OUT" --name control --no-progress \
    > "$OUT/control.log" 2>&1 || { tail -30 "$OUT/control.log"; exit 1; }
fi
t1c=$(date +%s.%N)
echo "== torchrun --nproc_per_node=$NPROC"
"$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m ganzoo run "$RECIPE" "${SETS[@]}" \
  --device ${DEVICE:-cuda} --out "$OUT" --name ddp --no-progress > "$OUT/ddp.log" 2>&1 \
  || { tail -40 "$OUT/ddp.log"; exit 1; }
t2=$(date +%s.%N)

"$PY" - "$OUT" "$t0" "$t1" "$t1c" "$t2" <<'EOF'
import json, sys
from pathlib import Path

out, t0, t1, t1c, t2 = Path(sys.argv[1]), *map(float, sys.argv[2:])

def lines(name):
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r for r in rows if "loss/d" in r}

a, b = lines("plain"), lines("ddp")
keys = ("loss/d", "loss/g", "logits/real", "logits/fake")
if (out / "control" / "metrics.jsonl").exists():
    c = lines("control")
    both = sorted(set(a) & set(c))
    ctl = max(abs(a[s][k] - c[s][k]) for s in both for k in keys)
    print(f"control (plain vs plain again, {len(both)} logged steps): largest difference {ctl:.3e}")
print(f"{'step':>6} | {'plain loss/d':>12} {'ddp loss/d':>12} | {'plain loss/g':>12} {'ddp loss/g':>12} | max |diff|")
worst = 0.0
for step in sorted(set(a) & set(b)):
    diff = max(abs(a[step][k] - b[step][k]) for k in keys)
    worst = max(worst, diff)
    print(f"{step:>6} | {a[step]['loss/d']:12.5f} {b[step]['loss/d']:12.5f} | "
          f"{a[step]['loss/g']:12.5f} {b[step]['loss/g']:12.5f} | {diff:.2e}")
first = min(set(a) & set(b))
print(f"largest difference of {', '.join(keys)}: {worst:.3e} (first logged step {first}: "
      f"{max(abs(a[first][k] - b[first][k]) for k in keys):.3e})")
print(f"wall time: plain {t1 - t0:.1f} s, torchrun {t2 - t1c:.1f} s (both include start-up); "
      f"img/s at the end: plain {a[max(a)]['speed/img_per_s']:.0f}, ddp {b[max(b)]['speed/img_per_s']:.0f}")
EOF
