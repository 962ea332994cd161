#!/usr/bin/env bash
# The GPU window of the real runs (issues 3, 4, 6, 8, 9, 16), as run through the device tool (one H100 on
# 2026-11-24, one H200 on 2026-12-02).
#
# The device machine is bare and keeps files only while it stays warm, and one call carries at most
# 64 MiB, so the data and the FID weights travel in three parts (../shared/device/stage-assets.sh)
# and the wheels the image lacks in .whl (../shared/device/stage-wheels.sh; then also `pip wheel --no-deps -w
# .whl ./plugins/ganzoo-example-plugin`, so that the plugin's blocks are registered there: its GPU tests and
# its row in the attention benchmark; stage3 warns when it is missing). Calls, back to back:
#
#   run carry [.devcache/p1]        bash benchmarks/device/gpu_window.sh stage1   # notes the window's start
#   run carry [.devcache/p2]        bash benchmarks/device/gpu_window.sh stage2
#   run carry [.devcache/p3, .whl]  bash benchmarks/device/gpu_window.sh stage3   # tests, prewarm, starts jobs
#   run                             bash benchmarks/device/gpu_window.sh wait     # (repeat) progress + results
#
# stage3 starts the long work in the background (setsid, so it outlives the call), one job at a time
# (JOBS, default "bench stepeq ablate"; see the jobs phase; SKIP_TESTS=1 skips the gpu tests, GPU_TESTS
# picks them). `wait` polls until everything is done (or its time is up) and packs results into
# $OUT/results.tar.gz.
#
# The ablation's step budget is not fixed here: it is what fits before WINDOW_MINUTES (default 25.5)
# after stage1, from the training speed the prewarm run measured (ABLATE_STEPS overrides it); see the
# ablate job.
#
# The long run (JOBS=long) crosses windows: before a window ends, `run bash benchmarks/device/gpu_window.sh
# ckpt_out long-s0 0` and `... ckpt_out long-s0 4` bring its last checkpoint back in 15 MiB parts; here
# `bash benchmarks/device/keep_parts.sh long-s0 /work/.device/N /work/.device/M` checks and files them under
# .devcache/ckpt/long-s0/; the next window carries them in (`ckpt_in long-s0 a`, `b`, `c`, one call each, before
# stage3) and the long job resumes.
#
# A study (JOBS=study; issues 19 and 20: 12 recipes x 4 seeds x 60k steps, about 14 minutes a run alone on one
# H100, so about 11 GPU-hours, two runs a single-GPU window) also crosses windows, by its finished runs alone: on a multi-GPU kind
# (`run kind=nvidia-h100-x8 ...`) it trains one run per GPU; after the window, `bash benchmarks/device/
# keep_study.sh docs/ablations/runs-60k /work/.device/N/results.tar.gz` keeps the finished runs' small files,
# commit them, and the next window's study job skips them. A run still training when the window must end keeps
# its progress the long run's way: `run bash benchmarks/device/gpu_window.sh stop` (SIGTERM: each run writes a
# checkpoint and exits; it names the cut runs), `ckpt_out RUN 0` and `ckpt_out RUN 4`, `keep_parts.sh RUN ...`
# here, and `ckpt_in RUN a` (b, c) in the next window before stage3: the study job rebuilds it and ablate resumes
# it. The study's budget (STUDY_STEPS, default 60000) must be settled before its first run: issue 19 asks for
# 50k steps or until the no-attention curve flattens, whichever is later, and a kept run is only small files, so
# a later, larger budget cannot continue it. The finished long run's curve settles it: `ganzoo report
# docs/quality/runs/long3-s0 --variant-from folder --baseline long3 --out ...` finds it flat from step 60,000
# (no later evaluation better by more than 1 FID; long2-s0, cut at 68,100, had said 40,000), so 60k it is. The
# study is ~11 GPU-hours: ~4 windows of an 8-GPU host, which is not lent now, against ~27 of one GPU. The two reports come from that one folder:
#   ganzoo report docs/ablations/runs-60k/ablation-* --out docs/ablations/cifar10.md --notes ...          (issue 19)
#   ganzoo report docs/ablations/runs-60k/ablation-feat16-* docs/ablations/runs-60k/ablation-none-* \
#     docs/ablations/runs-60k/attn-* --out docs/ablations/attention-variants.md \
#     --block-bench docs/benchmarks/runs/h100-2026-12-06-attnvar/attention.json --notes ...              (issue 20)
#
# Issue 20's "which attention block?" study alone, on one GPU (its budget is the study's to state; blocks that touch
# training are judged over tens of thousands of steps and 2 seeds, not a short run): its 7 recipes x 2 seeds x 20k
# steps. Alone on an H100 one run took 429 s, a cold compile's 77 s included (attn-efficient-s0, 2026-12-07), so
# ~90 minutes of an H100 in all (less with the warm order's warm starts, and with two runs at once), three or four
# windows. Two at once pay: the `concur` job (2026-12-07, one H100, under MPS, this study's sagan recipe with the
# fastest settings) timed 12,791 real img/s for one process and 8,901 + 8,899 = 17,800 for two, 1.39x in all
# (docs/benchmarks/runs/h100-2026-12-07-concur/). So STUDY_JOBS=2 in a window of ~13 minutes or more, with
# STUDY_EXPECT=10.5 (estimated from those rates, not yet timed over a whole run: 20k steps x 200 real images at
# 8,900 img/s is 450 s, plus evaluations and a cold compile, both slower when shared); STUDY_JOBS=1 (STUDY_EXPECT=7.2)
# in a shorter one, as two runs at once would not both end in it. Each window's study ablates with --deadline (see
# the job), so it starts no run the window cannot finish; after it, keep_study.sh keeps the finished runs (as
# above) and the next window trains the rest (WINDOW_MINUTES: the budget left at stage1 less ~2.5 minutes;
# STUDY_EXPECT: a run's minutes at STUDY_JOBS):
#   JOBS=study STUDY_RECIPES="recipes/ablations/attention-variants/*.yaml" STUDY_SEEDS="0 1" STUDY_STEPS=20000 \
#     STUDY_EVAL=5000 STUDY_JOBS=2 STUDY_EXPECT=10.5 STUDY_DIR=docs/ablations/attention-variants-runs SKIP_TESTS=1 \
#     STAGE_STEPEQ=0 PREWARM_STEPS=0 WINDOW_MINUTES=27  (stage3; then `wait 540` calls until FINISHED)
#   (then, after every window, the report of the runs finished so far; its paired differences are against
#   attn-none, the variant named `none`, once that has runs)
#   ganzoo report docs/ablations/attention-variants-runs/attn-* --no-paper-table \
#     --title "Which attention block? SAGAN on CIFAR-10" --notes docs/ablations/attention-variants-runs/NOTES.md \
#     --out docs/ablations/attention-variants.md --block-bench docs/benchmarks/runs/h100-2026-12-06-attnvar/attention.json
#
# A window with time left after FINISHED (a study whose deadline left runs, say): call stage3 again at once, with
# STUDY_DEADLINE=<minutes> (the budget left less ~1) in place of WINDOW_MINUTES, which counts from stage1. The
# machine has the assets unpacked already, so stage1 and stage2 need not run again, and the study's folder keeps
# the runs this window finished; carry [.whl] is enough. (On 2026-12-07 a second stage3 failed on its missing parts
# until stage1 and stage2 had run again, 20 s of budget; it then trained one more run, attn-global_context-s1.)
#
# Call the next `run` at once: a machine idle for 30 s is given back with everything on it (this lost a
# whole window on 2026-11-24, and the last seconds of a 10-minute run on 2026-12-06). A machine also goes
# back after 30 minutes held. Make the stage1 call alone first and the others only once it has answered:
# when no machine can start, every call is refused and each costs device time (on 2026-12-06 three
# rounds of refused back-to-back calls cost 9.5 of the session's 30 minutes). Size the first `wait` to
# end after a 10-minute run's final evaluation (stage3 returns about 10 s after the run starts).
#
# Since 2026-12-06 recipes/sagan.yaml evaluates with standing statistics (eval.standing_stats: 50); its
# 10-minute runs of both seeds are docs/quality/runs/sagan10-standing-s0/-s1. Issue 16's long run finished on
# 2026-12-07 in one window (docs/quality/runs/long3-s0: 100k steps in 1,583 s of the run's clock on an H100, cold
# cache; two earlier attempts were cut with their checkpoints lost). How a long run (or any run longer than a
# window holds) is run, keeping its progress:
#   1. stage1 (alone first), stage2; `status` gives the budget B (s) left;
#   2. stage3 with JOBS=long SKIP_TESTS=1 STAGE_STEPEQ=0 PREWARM_STEPS=0 LONG_MINUTES=<(B - 180) / 60>; with
#      B >= 1690 (a machine that started at once) 100k steps fit (~1590 s of the run's clock on an H100, ~10 s of
#      start-up before it): LONG_MINUTES=<(B - 90) / 60> (28 with B = 1770 on 2026-12-07), no ckpt_out at the
#      end, the streamed parts (3.) the fallback if it falls short;
#   3. `SEND_CKPT=long-s0 bash benchmarks/device/gpu_window.sh wait 420`, repeated (each call at once after the
#      last): each call also brings back 3-4 parts of the newest checkpoint (a whole one every second call);
#   4. if it stopped at its time limit short of its steps (FINISHED: the final evaluation and checkpoint
#      written): `ckpt_out long-s0 0` and `ckpt_out long-s0 4`;
#   5. here: `bash benchmarks/device/keep_parts.sh long-s0 /work/.device/N...` (every call's folder of the window:
#      it keeps the newest complete checkpoint), then `bash benchmarks/device/park_parts.sh park long-s0` (the parts
#      into git's history, out of the tree), and the run's small files under docs/quality/runs/<name>/;
#   6. the next session: `park_parts.sh restore long-s0`, stage1, stage2, `ckpt_in long-s0 a` (b, c), stage3 with
#      JOBS=long (and what follows it): the long job rebuilds the run folder and resumes it to 100k.
set -uo pipefail
phase=${1:?phase}
ROOT=${GPU_WINDOW_ROOT:-/root/assets}   # staged data and weights (and checkpoint parts, ckpt_in)
WORK=${GPU_WINDOW_WORK:-/root/work}     # run folders and logs
export GANZOO_CACHE=/root/cache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$WORK"
# the ablation's speed options: CUDA graph + resampling folded into the convs (the same maths: exact
# identities, and the graph replays the eager step; docs/benchmarks/training.md)
FAST_SET="--set train.cuda_graph=true --set generator.fused_resample=true --set discriminator.fused_resample=true"
# the study's recipes: issue 19's ablation (recipes/ablations/*.yaml) and issue 20's attention blocks; issue 20's
# `sagan` and `none` rows are issue 19's feat16 and none runs (the same training up to the name, tested in
# tests/test_attention_variants.py), so they are trained once: 12 recipes, not 14. Issue 19's seven go first,
# every seed of them, then issue 20's other five (STUDY_GROUPS, ';'-separated groups of recipes, run in order)
STUDY_GROUPS_BOTH="recipes/ablations/*.yaml; $(printf 'recipes/ablations/attention-variants/%s.yaml ' mhsa non_local \
  efficient global_context squeeze_excitation)"
# the fastest settings of docs/training.md (issue 16's 10-minute runs and the long run)
SAGAN10_SET="$FAST_SET --set train.compile=true --set train.d_concat=true --set train.channels_last=true"

gpu_tests() {  # every test marked gpu (GPU_TESTS picks them): gpu_tests TIMEOUT WORKERS
  # -v: each result is logged as it comes, so a run cut by its timeout still names its failures
  # (on 2026-12-05 two windows ended before pytest's summary and the failures stayed unnamed)
  timeout "$1" python3 -m pytest -m gpu -v -rf -W ignore -p no:cacheprovider -n "$2" \
    ${GPU_TESTS:-tests plugins/ganzoo-example-plugin/tests} > "$WORK/gpu_tests.log" 2>&1
  echo "gpu tests exit $?" | tee -a "$WORK/gpu_tests.log"; grep -E "FAILED|ERROR" "$WORK/gpu_tests.log" | head -20
}

standing_evals() {  # a run folder's best and last checkpoints, evaluated (10k samples, FID/KID, noise seed 0)
                    # with the running statistics and with standing statistics over 50 batches of 200
  for ck in ${STANDING_CKPTS:-best last}; do
    for b in 0 50; do
      timeout 120 python3 -m ganzoo eval "$1" --checkpoint "$ck" --standing-stats "$b" --device cuda --json \
        >> "$1.standing.jsonl" 2>> "$1.standing.log"
    done
  done
  cat "$1.standing.jsonl"
}

ASSETS=(cifar10-jpeg.tar.gz fid-inception-2015-12-05.pth)  # what the three parts of stage1-3 unpack to
missing_assets() {  # the names of $ASSETS not (or empty) in $ROOT, one a line; nothing when all are there
  local f
  for f in "${ASSETS[@]}"; do [ -s "$ROOT/$f" ] || echo "$f"; done
}
unpack_assets() {  # the data and weights in $ROOT from stage1-3's parts; a machine that has both keeps them
  local missing
  if [ -z "$(missing_assets)" ]; then  # a warm machine's second stage3 (stage1-2 need not run again): no parts needed
    rm -f "$ROOT"/part-*; echo "assets: ${ASSETS[*]} are in $ROOT already (a warm machine): kept"; return 0
  fi
  cp .devcache/p3/* "$ROOT"/ && (cd "$ROOT" && cat part-* | tar x && rm part-*) || return 1
  missing=$(missing_assets)
  if [ -n "$missing" ]; then
    echo "assets: $(echo $missing) not in the parts (stage1, stage2 and stage3 each carry one)" >&2; return 1
  fi
}

minutes_left() {  # minutes from now until $1 minutes after stage1 (/root/window-start), less $2, and at least $3
  python3 -c "import sys, time; start, end, margin, floor = map(float, sys.argv[1:])
print(round(max(floor, (start + 60 * end - time.time()) / 60 - margin), 2))" "$(cat /root/window-start)" "$1" "$2" "$3"
}

start_mps() {  # MPS daemon for runs sharing the GPU (MPS=0: off); sets mps=1 only if a CUDA matmul works under it
  mps=0
  if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
    nvidia-cuda-mps-control -d && sleep 1 \
      && timeout 60 python3 -c "import torch; x = torch.randn(512, 512, device='cuda'); print('mps check', (x @ x).sum().item())" \
      && mps=1 || { echo quit | nvidia-cuda-mps-control; echo "MPS did not start: runs time-slice the GPU"; }
  fi
}

stop_mps() {  # the daemon start_mps started, if it did
  if [ "$mps" = 1 ]; then echo quit | nvidia-cuda-mps-control; fi
}

pack() {  # small files only: metrics, recipes, commands, logs, last sample grids, reports
  local dest=${OUT:-/tmp}/results.tar.gz
  mkdir -p "$(dirname "$dest")"
  (cd "$WORK" && find . -type f \( -name '*.jsonl' -o -name '*.yaml' -o -name '*.txt' -o -name '*.log' \
      -o -name '*.json' -o -name '*.md' -o -name '*.png' \) -size -4M -print0 \
      | tar czf "$dest" --null -T - 2>/dev/null)
  ls -la "$dest"
}

PART_SIZE=${GPU_WINDOW_PART_SIZE:-15M}  # a checkpoint part (split -b): 4 of them and the run's small files fit one
                                        # call's 64 MiB back (16 MiB a file); the CPU test uses small parts

group_alive() {  # whether process group $1 has a process that is not a zombie (a dead leader not yet reaped counts
                # as gone; /proc/PID/stat: field 3 the state, field 5 the group)
  local f state grp
  for f in /proc/[0-9]*/stat; do
    read -r _ _ state _ grp _ < "$f" 2> /dev/null || continue
    [ "$grp" = "$1" ] && [ "$state" != Z ] && return 0
  done
  return 1
}

run_home() {  # the folder under $WORK that holds run $1: runs (sagan10, long) or study (a study's runs)
  local kind
  for kind in runs study; do [ -d "$WORK/$kind/$1" ] && { echo "$kind"; return 0; }; done
  return 1
}

rebuild_run() {  # run folder $WORK/KIND/$1 from carried parts (KIND: runs or study, as sent with the digest): its
                 # small files, then its last checkpoint, reassembled and checked against the sha256 it was sent
                 # with (ganzoo checks its own digest too)
  local run=$1 parts=("$ROOT/ckpt/$1".step-*.pt.part-*)
  [ -f "${parts[0]}" ] || { echo "rebuild_run: no checkpoint parts of $run in $ROOT/ckpt"; return 1; }
  local name; name=$(basename "${parts[0]}"); name=${name#"$run".}; name=${name%.part-*}
  local kind; kind=$(cut -d' ' -f3 "$ROOT/ckpt/$run.sha256"); kind=${kind:-runs}
  mkdir -p "$WORK/$kind" && tar xzf "$ROOT/ckpt/$run.small.tar.gz" -C "$WORK/$kind" \
    && mkdir -p "$WORK/$kind/$run/checkpoints" && cat "${parts[@]}" > "$WORK/$kind/$run/checkpoints/$name" \
    && (cd "$WORK/$kind/$run/checkpoints" && echo "$(cut -d' ' -f1 "$ROOT/ckpt/$run.sha256")  $name" | sha256sum -c --quiet) \
    || { echo "rebuild_run: $run could not be rebuilt (or $name does not match its sha256)"; rm -rf "${WORK:?}/$kind/$run"
         return 1; }
  echo "rebuild_run: $run from $name ($(ls "${parts[@]}" | wc -l) parts) into $kind/"
}

cut_parts() {  # `cut_parts RUN newest|sent`: cut RUN's newest checkpoint into parts under $WORK/parts/RUN, with its
               # sha256 and the run's small files, unless that checkpoint is cut already. `sent`: only once every part
               # of the current cut has been sent (`wait` with SEND_CKPT), so that no call mixes two checkpoints
  local run=$1 d="$WORK/parts/$1" kind ck
  kind=$(run_home "$run") || { echo "cut_parts: no run folder $run in $WORK/runs or $WORK/study"; return 1; }
  ck=$(ls "$WORK/$kind/$run/checkpoints"/step-*.pt 2>/dev/null | sort | tail -1)
  [ -n "$ck" ] || { echo "cut_parts: no checkpoint in $WORK/$kind/$run/checkpoints yet"; return 1; }
  [ "$(cat "$d/done" 2>/dev/null)" = "$(basename "$ck")" ] && return 0
  [ "$2" = sent ] && [ "$(unsent_parts "$run")" -gt 0 ] && return 0  # the current cut is still being sent
  rm -rf "$d" && mkdir -p "$d" || return 1
  split -b "$PART_SIZE" -d -a 2 "$ck" "$d/$run.$(basename "$ck").part-" || return 1
  # digest, part count, where the run folder goes back (rebuild_run)
  echo "$(sha256sum "$ck" | cut -d' ' -f1) $(ls "$d"/*.part-* | wc -l) $kind" > "$d/$run.sha256"
  # (no sample grids: `wait` packs them, and with 4 parts of 15 MiB they would bring a call near its 64 MiB)
  (cd "$WORK/$kind" && tar czf "$d/$run.small.tar.gz" --exclude='*.pt' --exclude="$run/samples" "$run") || return 1
  basename "$ck" > "$d/done"; echo 0 > "$d/sent"
}

unsent_parts() {  # how many parts of RUN's current cut no call has sent yet (0 when none is cut)
  local d="$WORK/parts/$1" n
  n=$(ls "$d"/*.part-* 2>/dev/null | wc -l)
  echo $(( n > 0 ? n - $(cat "$d/sent" 2>/dev/null || echo 0) : 0 ))
}

send_parts() {  # `send_parts RUN FIRST [COUNT]`: COUNT (default 4) parts of RUN's current cut from part FIRST into
                # $OUT (with the sha256 and the small files when FIRST is 0)
  local run=$1 first=$2 count=${3:-4} d="$WORK/parts/$1" n f
  mkdir -p "${OUT:?}"
  ls "$d"/*.part-* | tail -n +$(( first + 1 )) | head -"$count" | while read -r f; do cp "$f" "$OUT"/; done
  if [ "$first" = 0 ]; then cp "$d/$run.sha256" "$d/$run.small.tar.gz" "$OUT"/; fi
  n=$(ls "$d"/*.part-* | wc -l)
  [ $(( first + count )) -gt "$(cat "$d/sent" 2>/dev/null || echo 0)" ] && echo $(( first + count )) > "$d/sent"
  echo "parts of $run ($(cat "$d/done")): $n; sent from part $first:"; ls -la "$OUT"
  if [ $(( first + count )) -lt "$n" ]; then echo "more parts: from part $(( first + count ))"; fi
}

case "$phase" in
ckpt_out)  # `ckpt_out RUN FIRST`: RUN's last checkpoint back to this machine in 15 MiB parts, 4 per call from
           # part FIRST (0, then 4; a 100 MB CIFAR checkpoint is 7 parts), the run's small files (no
           # checkpoints, no sample grids) and the checkpoint's sha256 with the first call. Files come back under $OUT.
           # RUN is a run folder of $WORK/runs (the long run) or of $WORK/study (a study run cut by `stop`).
  # (parts are cut once per checkpoint: a run resumed on the same machine since is cut again from its newer one)
  run=${2:?run}; first=${3:-0}
  cut_parts "$run" newest || exit 1
  send_parts "$run" "$first" ;;
pack)  # results.tar.gz of the small files under $WORK into $OUT (what `wait` sends back at its end)
  pack ;;
ckpt_in)  # `run carry [.devcache/ckpt/RUN/a]  bash benchmarks/device/gpu_window.sh ckpt_in RUN a` (then b, c): carried
          # parts to $ROOT/ckpt, where the long job (long-s*) or the study job (a cut study run) finds them
  mkdir -p "$ROOT/ckpt" && cp ".devcache/ckpt/${2:?run}/${3:?folder}"/* "$ROOT/ckpt"/ && ls -la "$ROOT/ckpt" ;;
stop)  # `stop`: end the background jobs now, so that a study run cut by the window's end keeps its progress: SIGTERM
       # to the jobs' process group (each `ganzoo run` finishes its step, writes a checkpoint and exits), wait for
       # them (STOP_SECONDS, default 120), name the cut study runs to bring back with ckpt_out, and pack the results
  pgid=$(cat "$WORK/jobs.pgid" 2>/dev/null)
  if [ -n "$pgid" ] && group_alive "$pgid"; then
    kill -TERM -- "-$pgid"; t0=$(date +%s)
    while group_alive "$pgid" && [ $(( $(date +%s) - t0 )) -lt "${STOP_SECONDS:-120}" ]; do sleep 1; done
    if group_alive "$pgid"; then echo "stop: jobs still running after ${STOP_SECONDS:-120} s"
    else echo "stop: jobs ended after $(( $(date +%s) - t0 )) s"; fi
  else
    echo "stop: no jobs running"
  fi
  for dir in "$WORK"/study/*/; do
    run=$(basename "$dir"); ck=$(ls "$dir"checkpoints/step-*.pt 2>/dev/null | sort | tail -1)
    if [ ! -f "$dir/ablate-done.json" ] && [ -n "$ck" ]; then
      echo "cut: $run at $(basename "$ck"): bring it back with ckpt_out $run 0 (then 4)"
    fi
  done
  pack ;;  # the window's small files, as `wait` sends them (finished study runs for keep_study.sh)
rebuild)  # `rebuild RUN`: the run folder from the carried parts, as the long job does before it resumes
  rebuild_run "${2:?run}" ;;
stage1) date +%s > /root/window-start  # the ablation's budget counts from here
  mkdir -p "$ROOT" && cp .devcache/p1/* "$ROOT"/ && ls -la "$ROOT"
  nvidia-smi -L; command -v nvidia-cuda-mps-control || echo "no nvidia-cuda-mps-control" ;;
stage2) cp .devcache/p2/* "$ROOT"/ && ls -la "$ROOT" ;;
assets) unpack_assets ;;  # stage3's first step alone
stage3)
  unpack_assets || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  ls .whl/ganzoo_example_plugin-*.whl > /dev/null 2>&1 \
    || echo "stage3: no example-plugin wheel in .whl: its blocks are not registered here (see the header)"
  # the recipes name ../shared/...: give the device the same layout as a checkout beside shared/
  mkdir -p ../shared/data ../shared/weights
  ln -sf "$ROOT/cifar10-jpeg.tar.gz" ../shared/data/cifar10-jpeg.tar.gz
  ln -sf "$ROOT/fid-inception-2015-12-05.pth" ../shared/weights/fid-inception-2015-12-05.pth
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/gpu.txt"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$WORK/gpu.txt"
  # GPU property tests (issue 3 blocks, issue 5 backends): every test marked gpu (SKIP_TESTS=1: not again)
  # beside the prewarm (nothing here is timed): the GPU tests (SKIP_TESTS=1: not again) and the
  # step-equivalence check of the CUDA-graph runner against the eager step (STAGE_STEPEQ=0: not)
  if [ "${SKIP_TESTS:-0}" != 1 ]; then gpu_tests 240 6 & fi
  if [ "${STAGE_STEPEQ:-1}" = 1 ]; then
    timeout 200 python3 benchmarks/step_equivalence.py --recipes cifar imagenet128 --out "$WORK/equivalence" \
      > "$WORK/equivalence.log" 2>&1 &
    timeout 240 python3 -m ganzoo check --device cuda > "$WORK/check_cuda.log" 2>&1 &
  fi
  # prewarm: decode CIFAR-10 once into the cache, compute the 10k test-split reference statistics once,
  # and measure the ablation's training speed: a whole `ganzoo run` with the ablation's fast settings
  # (PREWARM_STEPS steps, one 10k-sample evaluation at the end)
  # (PREWARM_SET replaces the fast settings: e.g. sagan10's, so that Inductor's on-disk cache is warm for it)
  # (PREWARM_STEPS=0: no prewarm; the first job compiles, decodes and computes the statistics itself: a long run
  # that must fit one window starts ~40 s sooner)
  if [ "${PREWARM_STEPS:-400}" != 0 ]; then
    timeout 300 python3 -m ganzoo run recipes/sagan.yaml --out "$WORK" --name prewarm --device cuda ${PREWARM_SET:-$FAST_SET} \
      --set train.steps="${PREWARM_STEPS:-400}" --set eval.every="${PREWARM_STEPS:-400}" --set train.sample_every=0 \
      --set train.checkpoint_every=100000 > "$WORK/prewarm.log" 2>&1; echo $? > "$WORK/prewarm.rc"
    echo "prewarm exit $(cat "$WORK/prewarm.rc")"; tail -4 "$WORK/prewarm.log"
  fi
  wait
  tail -5 "$WORK/gpu_tests.log" "$WORK/equivalence.log" "$WORK/check_cuda.log" 2>/dev/null
  bash benchmarks/device/gpu_window.sh start
  sleep 5; cat "$WORK/jobs.log"; pack ;;
start)  # the jobs phase in the background, from a snapshot of the tree: the next call re-sends the working
        # tree, and a job that imports ganzoo while files are being replaced finds its registries empty
        # (this happened twice). Also what benchmarks/device/restart_jobs.sh runs.
  rm -rf /root/snap && cp -a "$PWD" /root/snap && mkdir -p /root/shared && cp -a ../shared/. /root/shared/
  rm -f "$WORK/finished.txt"
  (cd /root/snap && setsid nohup bash benchmarks/device/gpu_window.sh jobs >> "$WORK/jobs.log" 2>&1 < /dev/null &) ;;
jobs)  # JOBS (default "bench stepeq ablate", in this order, one at a time on the GPU; also: quality sagan10 long ddp concur
       # gputests fidcheck)
  export PYTHONPATH=/tmp/site:$PWD
  # started by `start` (setsid): this shell leads the jobs' process group, which `stop` signals
  read -r _ _ _ _ pgrp _ < /proc/$$/stat  # (field 5: the process group)
  if [ "$pgrp" = "$$" ]; then echo $$ > "$WORK/jobs.pgid"; fi
  date -u +%FT%TZ > "$WORK/started.txt"
  for job in ${JOBS:-bench stepeq ablate}; do
    echo "$(date -u +%T) start $job"
    case "$job" in
    bench)  # issue 8: the training step on an idle GPU (the benchmark does not evaluate: no metrics needed);
            # BENCH_VARIANTS picks variants (default: the benchmark's), BENCH_SECONDS its total budget,
            # BENCH_ARGS more arguments (e.g. --max-seconds 300 --recipes cifar imagenet128);
            # 3 more iterations of each variant under torch.profiler (profile-*.txt, not timed)
      timeout $(( ${BENCH_SECONDS:-260} + 70 )) python3 benchmarks/train_step.py --out "$WORK/train_step" --set 'eval.metrics=[]' \
        --total-seconds "${BENCH_SECONDS:-260}" --profile 3 ${BENCH_VARIANTS:+--variants $BENCH_VARIANTS} ${BENCH_ARGS:-} \
        --data-root "$ROOT/cifar10-jpeg.tar.gz" > "$WORK/train_step.log" 2>&1 ;;
    stepeq)  # issue 8: the fast step computes what the plain fp32 step does (same weights, same batch)
      # (STEPEQ_RECIPES, default both; STEPEQ_SET: overrides of both steps, e.g. train.d_concat=true)
      timeout 150 python3 benchmarks/step_equivalence.py --recipes ${STEPEQ_RECIPES:-cifar imagenet128} \
        --out "$WORK/equivalence" ${STEPEQ_FAST:+--fast-set $STEPEQ_FAST} ${STEPEQ_SET:+--set $STEPEQ_SET} \
        > "$WORK/equivalence.log" 2>&1 ;;
    concur)  # how many SAGAN-32 trainings share the GPU best: 1 to CONCUR_MAX (default 4) processes of CONCUR_RECIPE
             # (default the ablation's heaviest variant) with CONCUR_SET (default none; CONCUR_FAST=1 puts the fastest
             # settings, as the study runs, before it), under MPS when its daemon starts (MPS=0: time-sliced), each capped at
             # CONCUR_TIMEOUT seconds (default 180: a cold compile took more than 110 on 2026-12-07, so the first
             # process count, which compiles cold, timed nothing then; a count without a result says so)
      mkdir -p "$WORK/concur"; start_mps; echo "mps $mps" > "$WORK/concur/summary.txt"
      concur_set="${CONCUR_SET:-}"; if [ "${CONCUR_FAST:-0}" = 1 ]; then concur_set="$SAGAN10_SET $concur_set"; fi
      for n in $(seq "${CONCUR_MAX:-4}"); do
        for k in $(seq "$n"); do
          timeout "${CONCUR_TIMEOUT:-180}" python3 benchmarks/train_step.py --out "$WORK/concur/n$n-$k" \
            --recipes "${CONCUR_RECIPE:-recipes/ablations/feat32.yaml}" --variants recipe --set 'eval.metrics=[]' \
            $concur_set --no-flops --warmup 20 --iters 100000 --min-iters 200 \
            --timed-seconds 20 > "$WORK/concur/n$n-$k.log" 2>&1 &
        done
        wait
        python3 - "$WORK/concur" "$n" <<'PY' | tee -a "$WORK/concur/summary.txt"
import json, sys
from pathlib import Path
root, n = Path(sys.argv[1]), int(sys.argv[2])
rows = [root / f"n{n}-{k}" / "rows.jsonl" for k in range(1, n + 1)]  # absent: killed before the benchmark began
rates = [json.loads(l)["img_per_s"] for f in rows if f.exists() for l in f.read_text().splitlines() if '"ok"' in l]
if len(rates) < n:  # a process timed out (a cold compile) or failed: no total, which the pick below skips
    print(f"processes {n}: {len(rates)} of {n} timed (see {root}/n{n}-*.log; CONCUR_TIMEOUT too short?)")
else:
    print(f"processes {n}: img/s each {' '.join(f'{r:.0f}' for r in rates)}; together {sum(rates):.0f}")
PY
      done
      # the ablation's --jobs: the most processes that still add 15% or more in total throughput
      python3 - "$WORK/concur/summary.txt" > "$WORK/concur/jobs.txt" <<'PY' || rm -f "$WORK/concur/jobs.txt"
import re, sys
tot = {int(m[1]): float(m[2]) for m in re.finditer(r"processes (\d+):.*together (\d+)", open(sys.argv[1]).read())}
if 1 not in tot:  # nothing to compare with: no pick, and the ablate job keeps its default
    sys.exit("concur: one process was not timed, so no --jobs is picked")
best = 1
for n in sorted(tot):
    if n > 1 and tot[n] >= 1.15 * tot[best]:
        best = n
print(best)
PY
      stop_mps
      cat "$WORK/concur/summary.txt"; cat "$WORK/concur/jobs.txt" 2>/dev/null || echo "no --jobs picked" ;;
    gputests)  # every test marked gpu, as stage3 runs them (for a window that runs them beside other jobs)
      gpu_tests 300 8 ;;
    fidcheck)  # issue 8: does the fast step train like the plain one? recipes/ablations/feat16.yaml (= sagan.yaml)
               # with the plain fp32 eager step (TF32 off, NCHW, for-each Adam) at seeds FID_SEEDS (default 0 1),
               # FID_STEPS steps (default 4200, FID/KID with 10k EMA samples every 1400, as the ablation's runs,
               # whose feat16 runs are the graph + folded-resampling bf16 side), plus one run with every speed
               # option on (graph, folded resampling, d_concat, compile) at seed 0. All at once, under MPS
               # if it starts, each capped at FID_MINUTES (default 8) of training; beside them the
               # step-equivalence check of the compiled step and the gpu tests (nothing here is timed).
      mkdir -p "$WORK/fidcheck"
      start_mps
      common=(--out "$WORK/fidcheck" --device cuda --set eval.every=1400 --set train.sample_every=1400
              --set train.checkpoint_every=1400 --set train.steps="${FID_STEPS:-4200}"
              --set train.time_limit_minutes="${FID_MINUTES:-8}")
      plain=(--set train.precision=fp32 --set train.tf32=false --set train.channels_last=false
             --set train.fused_optim=false --set train.cuda_graph=false --set train.compile=false)
      for seed in ${FID_SEEDS:-0 1}; do
        OMP_NUM_THREADS=2 python3 -m ganzoo run recipes/ablations/feat16.yaml --name "fp32-eager-s$seed" "${common[@]}" \
          "${plain[@]}" --set seed="$seed" > "$WORK/fidcheck/fp32-eager-s$seed.log" 2>&1 &
      done
      OMP_NUM_THREADS=2 python3 -m ganzoo run recipes/ablations/feat16.yaml --name "all-fast-compile-s0" "${common[@]}" \
        $FAST_SET --set train.d_concat=true --set train.compile=true --set train.channels_last=true --set seed=0 \
        > "$WORK/fidcheck/all-fast-compile-s0.log" 2>&1 &
      timeout 400 python3 benchmarks/step_equivalence.py --recipes cifar imagenet128 --compile --set train.d_concat=true \
        --out "$WORK/equivalence-compile" > "$WORK/equivalence-compile.log" 2>&1 &
      gpu_tests 400 4
      wait
      stop_mps
      grep -h '"eval/fid"' "$WORK"/fidcheck/*/metrics.jsonl | head -20; tail -3 "$WORK/equivalence-compile.log" ;;
    quality)  # issue 16: why the fast run collapsed, and a candidate CIFAR recipe. All at once (the GPU is
              # shared: their speeds are not the 10-minute target's), each capped so that it ends (final
              # evaluation and checkpoint included) QUALITY_END_MIN minutes (default 26) after stage1:
              #   fast-s0:  recipes/sagan.yaml with the fastest settings of docs/training.md (the issue's run)
              #   graph-s0: the same recipe with the CUDA graph and folded resampling only (the eager maths:
              #             exact identities; no compile, no d_concat, no channels_last)
              #   cand-s0:  the candidate CIFAR recipe: BigGAN-PyTorch's CIFAR optimisation (batch 50, 4 D
              #             steps, lr 2e-4 both, Adam (0, 0.999)) + DiffAugment (color, translation, cutout)
              #             + horizontal flips, fastest settings
              # FID/KID with 10k EMA samples: every 10k steps (fast, graph; to QUALITY_STEPS, default 40000)
              # and every 4k (candidate, CAND_STEPS default 12000); beside them the augment GPU tests.
      mkdir -p "$WORK/quality"
      left=$(minutes_left "${QUALITY_END_MIN:-26}" 1.2 2.0)
      echo "quality: each run capped at $left minutes" | tee "$WORK/quality/budget.txt"
      fast="--set train.cuda_graph=true --set train.compile=true --set train.d_concat=true --set train.channels_last=true
            --set generator.fused_resample=true --set discriminator.fused_resample=true"
      common=(--out "$WORK/quality" --device cuda --set seed=0 --set train.time_limit_minutes="$left"
              --set train.checkpoint_every=5000)
      long=(--set train.steps="${QUALITY_STEPS:-40000}" --set eval.every=10000 --set train.sample_every=10000)
      cand=(--set train.steps="${CAND_STEPS:-12000}" --set eval.every=4000 --set train.sample_every=4000
            --set train.batch_size=50 --set train.d_steps=4 --set train.g_optim.lr=2e-4 --set train.d_optim.lr=2e-4
            --set "augment=[color, translation, cutout]" --set train.hflip=true)
      OMP_NUM_THREADS=2 python3 -m ganzoo run recipes/sagan.yaml --name fast-s0 "${common[@]}" "${long[@]}" $fast \
        > "$WORK/quality/fast-s0.log" 2>&1 &
      OMP_NUM_THREADS=2 python3 -m ganzoo run recipes/sagan.yaml --name graph-s0 "${common[@]}" "${long[@]}" $FAST_SET \
        > "$WORK/quality/graph-s0.log" 2>&1 &
      OMP_NUM_THREADS=2 python3 -m ganzoo run recipes/sagan.yaml --name cand-s0 "${common[@]}" "${cand[@]}" $fast \
        > "$WORK/quality/cand-s0.log" 2>&1 &
      GPU_TESTS="tests/test_augment.py" gpu_tests 300 2
      wait
      grep -h '"eval/fid"' "$WORK"/quality/*/metrics.jsonl | head -30 ;;
    sagan10)  # issue 16's target: recipes/sagan.yaml with the fastest settings ($SAGAN10_SET) for 10 minutes of
              # wall time, alone on the GPU, one seed after the other (SEEDS, default 0 1), then standing_evals of
              # each (after both runs, so that a window cut short keeps whole runs). The clock starts with the
              # process (compilation included): training stops 9.5 minutes after t_start, a few seconds after
              # the process starts (start.txt / end.txt record both ends); FID/KID with 10k EMA samples every
              # SAGAN10_EVAL steps (default 5000; a few seconds each on the GPU, inside the 10 minutes) and at the end.
              # A lever to try over whole runs: SAGAN10_EXTRA (more --set options, e.g. "--set train.d_steps=2")
              # with SAGAN10_TAG naming its runs (sagan10<TAG>-s<seed>), so they never mix with the recipe's own.
      mkdir -p "$WORK/runs"; name="sagan10${SAGAN10_TAG:-}"
      for seed in ${SEEDS:-0 1}; do
        date -u +%FT%T.%NZ > "$WORK/runs/$name-s$seed.start.txt"
        python3 -m ganzoo run recipes/sagan.yaml --out "$WORK/runs" --name "$name-s$seed" --device cuda \
          --set seed="$seed" --set train.time_limit_minutes=9.5 --set eval.every="${SAGAN10_EVAL:-5000}" \
          --set train.sample_every=10000 --set train.checkpoint_every="${SAGAN10_EVAL:-5000}" $SAGAN10_SET \
          ${SAGAN10_EXTRA:-} > "$WORK/runs/$name-s$seed.log" 2>&1
        date -u +%FT%T.%NZ > "$WORK/runs/$name-s$seed.end.txt"
      done
      for seed in ${SEEDS:-0 1}; do standing_evals "$WORK/runs/$name-s$seed"; done ;;
    study)  # issues 19 and 20 in one study folder: STUDY_RECIPES (default the groups of $STUDY_GROUPS_BOTH) x STUDY_SEEDS (default 0 1 2 3) at
            # STUDY_STEPS G steps (default 60000), STUDY_JOBS runs at once on each GPU (default 1; 2 on one GPU
            # overlaps one run's compilation, ~115 s cold for each attention block, with another's training,
            # and their kernels under MPS when its daemon starts),
            # the fastest settings, FID/KID with 10k EMA samples every STUDY_EVAL
            # steps (default 10000), one sample grid at the end (results.tar.gz is one file of at most 16 MiB),
            # spread over every GPU of the host (ganzoo ablate --device cuda:0 ... cuda:N-1:
            # one run per GPU, each alone on it). A study takes several windows: commit the finished runs' small
            # files after each under STUDY_DIR (default docs/ablations/runs-60k; keep_study.sh does it), and the
            # next window copies them in with their ablate-done.json, so ablate skips them. A run cut by the
            # window's end starts again, unless `stop` and ckpt_out brought its checkpoint back (see the header).
            # So that no run is cut, each ablate call gets --deadline: the minutes left until WINDOW_MINUTES
            # (default 25.5) after stage1 (STUDY_DEADLINE, minutes, overrides it; 0: none); a run that would end
            # after it, at the pace of the runs finished so far, is left to the next window; STUDY_EXPECT (minutes
            # a run takes at STUDY_JOBS, as an earlier window measured it) judges the first runs too, so that a
            # short window starts none it would cut (attn-efficient-s0: 7.2 minutes alone on an H100, cold). The
            # runs start in ablate's --order warm (STUDY_ORDER): a recipe's later seeds follow its first in the same window and
            # find Inductor's on-disk cache warm, where a machine's first compile of each block takes ~60-100 s more.
      out="$WORK/study"; mkdir -p "$out"; kept=0
      for d in "${STUDY_DIR:-docs/ablations/runs-60k}"/*/; do
        if [ -f "$d/ablate-done.json" ]; then cp -a "$d" "$out"/ && kept=$(( kept + 1 )); fi
      done
      for sum in "$ROOT"/ckpt/*.sha256; do  # runs cut by an earlier window's `stop`, carried in by ckpt_in
        [ -f "$sum" ] && [ "$(cut -d' ' -f3 "$sum")" = study ] || continue
        run=$(basename "$sum" .sha256)
        if [ -f "$out/$run/ablate-done.json" ]; then echo "study: $run is finished: its carried checkpoint is not used"
        elif [ ! -d "$out/$run" ]; then rebuild_run "$run" && echo "study: $run resumes from its carried checkpoint"; fi
      done | tee -a "$WORK/study_plan.txt"
      devices=${STUDY_DEVICES:-$(nvidia-smi -L | awk '{ printf "cuda:%d ", NR - 1 }')}  # (the CPU test: "cpu cpu")
      mps=0; if [ "${STUDY_JOBS:-1}" -gt 1 ]; then start_mps; fi  # runs sharing a GPU overlap their kernels under MPS
      echo "study: $kept finished runs kept from earlier windows; devices: $devices; mps $mps" | tee -a "$WORK/study_plan.txt"
      IFS=';' read -ra groups <<< "${STUDY_RECIPES:-${STUDY_GROUPS:-$STUDY_GROUPS_BOTH}}"; rc=0
      for group in "${groups[@]}"; do  # one after the other, into one folder (ablate skips what is done)
        deadline=${STUDY_DEADLINE:-0}  # (no window start, as in the CPU tests: none)
        if [ -z "${STUDY_DEADLINE:-}" ] && [ -f /root/window-start ]; then
          deadline=$(minutes_left "${WINDOW_MINUTES:-25.5}" 0 0.1)
        fi
        [ "$deadline" = 0 ] && deadline=""
        echo "study group: $(echo $group)${deadline:+ (--deadline $deadline minutes)}" >> "$WORK/study.log"
        lines=$(wc -l < "$WORK/study.log")
        python3 -m ganzoo ablate $group --seeds ${STUDY_SEEDS:-0 1 2 3} ${deadline:+--deadline $deadline} \
          ${deadline:+${STUDY_EXPECT:+--expect $STUDY_EXPECT}} --order "${STUDY_ORDER:-warm}" \
          --steps "${STUDY_STEPS:-60000}" --device $devices ${STUDY_JOBS:+--jobs $STUDY_JOBS} --out "$out" ${STUDY_SET-$SAGAN10_SET} \
          --set eval.every="${STUDY_EVAL:-10000}" --set train.sample_every="${STUDY_STEPS:-60000}" \
          --set train.checkpoint_every="${STUDY_EVAL:-10000}" --report "$out/report.md" >> "$WORK/study.log" 2>&1 \
          || { rc=$?; break; }
        # runs of this group left by the deadline: the groups after it wait too (with no run of their own finished
        # yet, their first runs would start and be cut)
        if tail -n +$(( lines + 1 )) "$WORK/study.log" | grep -q '^deadline: '; then
          echo "study: the deadline left runs of this group to the next window, and the groups after it" >> "$WORK/study.log"
          break
        fi
      done
      stop_mps
      (exit $rc) ;;
    attnvar)  # issue 20: every registered attention block at 32x32/C256, 64x64/C128, 128x128/C64, batch 64,
              # fp32 and bf16, forward+backward (benchmarks/attention.py's variants table), alone on the GPU
      timeout 300 python3 benchmarks/attention.py --variants-only --out "$WORK/attention-variants" \
        > "$WORK/attention-variants.log" 2>&1 ;;
    long)  # issue 16's long run: recipes/sagan.yaml with the fastest settings, seed LONG_SEED (default 0), to
           # 100k G steps (the recipe's), FID/KID every 10k; capped at LONG_MINUTES (default 24) so that it
           # ends, final evaluation and checkpoint included, inside one window (the machine's files do not outlive it)
           # Across windows: `wait` with SEND_CKPT=long-s0 while it trains and `ckpt_out long-s0 0` / `4` after it
           # bring its checkpoints back in parts, benchmarks/device/keep_parts.sh files the newest complete one under
           # .devcache/ckpt/long-s0/ (park_parts.sh keeps it to the next session), and the next window's `ckpt_in`
           # calls carry them in; this job then rebuilds the run folder and continues it with --resume.
      mkdir -p "$WORK/runs"; seed=${LONG_SEED:-0}; run="long-s$seed"
      date -u +%FT%T.%NZ >> "$WORK/runs/$run.start.txt"
      if [ ! -d "$WORK/runs/$run" ] && [ -f "$ROOT/ckpt/$run.small.tar.gz" ]; then
        rebuild_run "$run" || echo "long: $run could not be rebuilt from the carried parts: it starts afresh"
      fi
      if [ -d "$WORK/runs/$run" ]; then
        python3 -m ganzoo run --resume "$WORK/runs/$run" --set train.time_limit_minutes="${LONG_MINUTES:-24}" \
          >> "$WORK/runs/$run.log" 2>&1
      else
        python3 -m ganzoo run recipes/sagan.yaml --out "$WORK/runs" --name "$run" --device cuda \
          --set seed="$seed" --set train.time_limit_minutes="${LONG_MINUTES:-24}" --set eval.every=10000 \
          --set train.sample_every=10000 --set train.checkpoint_every=10000 $SAGAN10_SET >> "$WORK/runs/$run.log" 2>&1
      fi
      date -u +%FT%T.%NZ >> "$WORK/runs/$run.end.txt" ;;
    ddp)  # issue 9: torchrun --nproc_per_node=1 against a plain run (and a second plain run as the control),
          # fp32 without TF32, deterministic kernels, for a tight comparison
      CONTROL=1 FP32=1 OUT="$WORK/ddp" PYTHON=python3 timeout 400 bash benchmarks/ddp_check.sh recipes/sagan.yaml 200 1 \
        > "$WORK/ddp_check.log" 2>&1 ;;
    ablate)  # issue 6: every recipe of recipes/ablations at seeds 0 and 1 (ABLATE_RECIPES / ABLATE_SEEDS),
             # resumable, with the CUDA graph and folded resampling ($FAST_SET). Several runs share the GPU
             # (ABLATE_JOBS, default 4 through MPS when its daemon starts, so their small kernels overlap, else 3);
             # the step budget (the same for every run) is what fits before the window's end: from the
             # prewarm's steps/s, the runs' start-up and evaluations, rounded down to a multiple of 400
             # (ABLATE_STEPS overrides it). FID/KID with 10k EMA samples four times per run.
      recipes=(${ABLATE_RECIPES:-recipes/ablations/*.yaml}); seeds=(${ABLATE_SEEDS:-0 1})
      if [ "$(cat "$WORK/prewarm.rc" 2>/dev/null)" != 0 ]; then  # the fast settings failed in a whole run
        FAST_SET=""; ABLATE_STEPS=${ABLATE_STEPS:-1200}; echo "prewarm failed: eager steps, ${ABLATE_STEPS} each"
      fi
      start_mps
      # runs at once: ABLATE_JOBS, else what the concur job measured (if it ran), else 4 under MPS or 3
      jobs=${ABLATE_JOBS:-$(cat "$WORK/concur/jobs.txt" 2>/dev/null || echo $(( mps ? 4 : 3 )))}
      steps=${ABLATE_STEPS:-$(python3 - "$WORK/prewarm/metrics.jsonl" "$(cat /root/window-start)" \
          "${WINDOW_MINUTES:-25.5}" "$(( ${#recipes[@]} * ${#seeds[@]} ))" "$jobs" "$mps" <<'PY'
import json, statistics, sys, time
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = statistics.median(r["speed/img_per_s"] for r in rows if "speed/img_per_s" in r) / 64  # steps/s (batch 64)
start, minutes, runs, jobs, mps = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
left = start + 60 * minutes - time.time() - 60  # a minute for the report and the packing
# runs overlap: one run's start-up and evaluations (mostly host work: decoding, eigh, KID) while the
# others train, so each run costs the GPU its steps plus ~10 s (capture, Inception on 4 x 10k images),
# and the last round adds a tail of ~120 s that nothing overlaps
# sharing the GPU is counted as no faster than one run alone: on 2026-12-02 (when 1.3x was assumed for
# MPS) four runs under MPS trained 59.6 steps/s together, evaluations included, against 65.7 for one alone
steps = int(((left - 120) / runs - 10) * rate) // 400 * 400
print(min(max(steps, 800), 8000))
print(f"budget: {left:.0f} s left, {rate:.1f} steps/s alone, {runs} runs, {jobs} at once, mps {mps}: "
      f"{steps} steps", file=sys.stderr)
PY
)}
      echo "ablate: ${steps} steps per run, ${jobs} at once, mps ${mps}" | tee "$WORK/ablate_budget.txt"
      every=$(( steps / 4 ))
      OMP_NUM_THREADS=4 python3 -m ganzoo ablate "${recipes[@]}" --seeds "${seeds[@]}" --steps "$steps" --jobs "$jobs" \
        $FAST_SET --out "$WORK/ablate" --device cuda --set eval.every=$every --set train.sample_every=0 \
        --set train.checkpoint_every=$every --report "$WORK/ablate/cifar10.md" \
        --title "Where should attention go? SAGAN ablation on CIFAR-10" > "$WORK/ablate.log" 2>&1
      rc=$?  # the job's exit status is ganzoo ablate's, not the MPS shutdown's
      stop_mps
      (exit $rc) ;;
    esac
    status=$?  # (before the date's command substitution, which resets $?: until 2026-12-06 every job logged exit 0)
    echo "$(date -u +%T) $job exit $status"
  done
  date -u +%FT%TZ > "$WORK/finished.txt"
  echo "all jobs done" ;;
wait)
  # at most 570 s of polling: with the 15-s sleeps and the packing after it, a longer wait outlasts the device
  # tool's 600-s call and returns nothing at all (`wait 590` did, 2026-12-06)
  limit=${2:-540}; t0=$(date +%s)
  if [ "$limit" -gt 570 ]; then echo "wait: $limit s would outlast the 600-s call; waiting 570"; limit=570; fi
  while [ ! -f "$WORK/finished.txt" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 15; done
  cat "$WORK/jobs.log"; cat "$WORK/ablate_budget.txt" 2>/dev/null; tail -12 "$WORK/train_step.log" 2>/dev/null
  tail -4 "$WORK/equivalence.log" 2>/dev/null; tail -n 2 "$WORK"/runs/*.log 2>/dev/null
  grep -h '"eval/fid"' "$WORK"/runs/*/metrics.jsonl 2>/dev/null | cut -c1-160; cat "$WORK"/runs/*.standing.jsonl 2>/dev/null
  tail -3 "$WORK/equivalence-compile.log" "$WORK/gpu_tests.log" 2>/dev/null; tail -n 2 "$WORK"/fidcheck/*.log 2>/dev/null
  tail -5 "$WORK/ablate.log" 2>/dev/null; tail -6 "$WORK/study.log" 2>/dev/null; tail -3 "$WORK/attention-variants.log" 2>/dev/null; cat "$WORK/concur/summary.txt" 2>/dev/null;
  for f in "$WORK"/quality/*/metrics.jsonl; do [ -f "$f" ] && { echo "$f"; grep '"eval/fid"' "$f" | cut -c1-200; tail -1 "$f" | cut -c1-300; }; done
  tail -n 2 "$WORK"/quality/*.log 2>/dev/null; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
  [ -f "$WORK/finished.txt" ] && echo FINISHED
  pack
  # SEND_CKPT=RUN: each call also brings back the next 3-4 parts of RUN's newest checkpoint (a whole one every
  # second call), so that a machine lost mid-window loses minutes, not the run (on 2026-12-06 one was given back
  # between two calls, and long2-s0's 68,100 steps with it); keep_parts.sh keeps the newest complete one
  if [ -n "${SEND_CKPT:-}" ] && cut_parts "$SEND_CKPT" sent; then
    first=$(cat "$WORK/parts/$SEND_CKPT/sent")
    # (3 parts with the first call: beside results.tar.gz and the small files, whose sample grids grow with the
    # run, 4 would come near the 64 MiB a call brings back; a 7-part checkpoint still takes two calls)
    if [ "$(unsent_parts "$SEND_CKPT")" -gt 0 ]; then
      send_parts "$SEND_CKPT" "$first" $(( first == 0 ? 3 : 4 ))
    else echo "SEND_CKPT: every part of $(cat "$WORK/parts/$SEND_CKPT/done") is sent already"; fi
  fi ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
