#!/usr/bin/env bash
# Keep a run's checkpoint parts from one session to the next (issue 16's long run, a study run cut by `stop`).
#
# keep_parts.sh files them under .devcache/ckpt/RUN/ (git-ignored), but a session's ignored files do not outlive
# it: on 2026-12-06 the step-49,040 checkpoint of long-s0 was lost that way and the run had to start again. Git's
# history is the one store that does, and the working tree must stay small (one device call carries at most
# 64 MiB, the tree included), so the parts go into the history and straight out of the tree again:
#
#   bash benchmarks/device/park_parts.sh park RUN      # two commits: the parts added under parked/RUN, then removed
#   bash benchmarks/device/park_parts.sh restore RUN   # next session: the newest parked parts back under .devcache/ckpt/RUN
#
# restore finds the last commit that added parked/RUN (so it survives commits being re-applied on landing) and
# checks the parts against their sha256 with keep_parts.sh before filing them. Then carry them in as usual:
#   run carry [.devcache/ckpt/RUN/a]  bash benchmarks/device/gpu_window.sh ckpt_in RUN a    # then b, c
set -euo pipefail
mode=${1:?usage: park_parts.sh park|restore RUN}; run=${2:?usage: park_parts.sh park|restore RUN}
here=$(cd "$(dirname "$0")" && pwd)
store=benchmarks/device/parked/$run   # (relative to the root of the repository it runs in)
cd "$(git rev-parse --show-toplevel)"
case "$mode" in
park)
  src=.devcache/ckpt/$run
  [ -d "$src" ] || { echo "park_parts: no parts of $run under $src (keep_parts.sh files them there)" >&2; exit 1; }
  git diff --cached --quiet || { echo "park_parts: the index has staged changes: commit them first" >&2; exit 1; }
  rm -rf "$store" && mkdir -p "$store" && cp -a "$src"/. "$store"/
  git add -f "$store"
  git commit -q -m "Park $run's checkpoint parts in the history ($(du -sh "$store" | cut -f1)): ignored files do not \
outlive a session; restore with benchmarks/device/park_parts.sh restore $run"
  git rm -r -q "$store"
  git commit -q -m "Parked parts of $run out of the working tree again (one device call carries at most 64 MiB); \
they stay in the history for park_parts.sh restore"
  echo "parked $run in $(git rev-parse --short HEAD~1); restore with: bash benchmarks/device/park_parts.sh restore $run" ;;
restore)
  commit=$(git log -1 --diff-filter=A --format=%H -- "$store")
  [ -n "$commit" ] || { echo "park_parts: no parked parts of $run in the history" >&2; exit 1; }
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  git archive "$commit" "$store" | tar x -C "$tmp"
  bash "$here/keep_parts.sh" "$run" "$tmp/$store"/*/
  echo "(from the parts parked in $(git rev-parse --short "$commit"))" ;;
*) echo "park_parts: unknown mode $mode (park or restore)" >&2; exit 2 ;;
esac
