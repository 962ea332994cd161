#!/usr/bin/env bash
# Keep the finished runs of a GPU window's `study` job (gpu_window.sh; issues 19 and 20) in the repository.
#
#   bash benchmarks/device/keep_study.sh DEST RESULTS.tar.gz...   # DEST, e.g. docs/ablations/runs-50k
#
# From each results.tar.gz, every run folder under study/ that holds ablate-done.json (a run ganzoo ablate
# finished) is copied to DEST/<run> with its small files only: recipe.yaml, metrics.jsonl, command.txt,
# ablate-done.json, gammas.json, its last sample grid and its log (train.log). Commit DEST after every
# window: the next window's study job copies these folders in, and ganzoo ablate skips them. A run that
# the window's end cut is left out (it starts again next time). Runs already in DEST are replaced.
set -euo pipefail
dest=${1:?usage: keep_study.sh DEST RESULTS.tar.gz...}; shift
[ $# -ge 1 ] || { echo "usage: keep_study.sh DEST RESULTS.tar.gz..." >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
kept=(); cut=()
for t in "$@"; do
  rm -rf "$tmp/x" && mkdir -p "$tmp/x" && tar xzf "$t" -C "$tmp/x"
  [ -d "$tmp/x/study" ] || { echo "keep_study: $t holds no study/ folder" >&2; exit 1; }
  for d in "$tmp/x/study"/*/; do
    name=$(basename "$d")
    [ -f "$d/recipe.yaml" ] || continue  # logs/, not a run
    if [ ! -f "$d/ablate-done.json" ]; then cut+=("$name"); continue; fi
    rm -rf "${dest:?}/$name" && mkdir -p "$dest/$name/samples"
    for f in recipe.yaml metrics.jsonl command.txt ablate-done.json gammas.json; do
      if [ -f "$d/$f" ]; then cp "$d/$f" "$dest/$name/"; fi
    done
    last=$(ls "$d"/samples/*.png 2>/dev/null | sort | tail -1 || true)
    if [ -n "$last" ]; then cp "$last" "$dest/$name/samples/"; fi
    if [ -f "$tmp/x/study/logs/$name.log" ]; then cp "$tmp/x/study/logs/$name.log" "$dest/$name/train.log"; fi
    kept+=("$name")
  done
done
echo "kept ${#kept[@]} finished runs in $dest: ${kept[*]:-none}"
if [ ${#cut[@]} -gt 0 ]; then echo "not finished (they start again next window): ${cut[*]}"; fi
