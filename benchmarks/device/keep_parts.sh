#!/usr/bin/env bash
# Keep a run's checkpoint parts between GPU windows (issue 16's long run, a study run cut by `stop`;
# gpu_window.sh `ckpt_out`).
#
#   bash benchmarks/device/keep_parts.sh RUN DIR...   # DIR: the folders the device calls' files came back to
#
# Checks that the parts of RUN's checkpoint are all there (part-00 to the last, none missing) and that
# together they match the sha256 sent with them, then files them under .devcache/ckpt/RUN/a, b, ... (git-ignored;
# other runs' parts stay), three parts a folder, so that one `run` call carries one folder beside the working
# tree (64 MiB a call):
#
#   run carry [.devcache/ckpt/RUN/a]  bash benchmarks/device/gpu_window.sh ckpt_in RUN a    # then b, c
#
# The run's small files (metrics, recipe, best.json, grids) and the sha256 go with the last folder.
set -euo pipefail
run=${1:?usage: keep_parts.sh RUN DIR...}; shift
[ $# -ge 1 ] || { echo "usage: keep_parts.sh RUN DIR..." >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for d in "$@"; do
  for f in "$d/$run".*; do [ -f "$f" ] && cp "$f" "$tmp"/; done
done
[ -f "$tmp/$run.sha256" ] && [ -f "$tmp/$run.small.tar.gz" ] \
  || { echo "keep_parts: $run.sha256 and $run.small.tar.gz (sent with the first ckpt_out call) not found" >&2; exit 1; }
mapfile -t parts < <(ls "$tmp/$run".*.part-* 2>/dev/null | sort)
[ ${#parts[@]} -ge 1 ] || { echo "keep_parts: no parts of $run" >&2; exit 1; }
read -r digest count _ < "$tmp/$run.sha256"  # (a third field: where the run folder goes back)
for (( i = 0; i < count; i++ )); do  # every part, by number: a gap names the ckpt_out call that sends it
  want=$(printf 'part-%02d' "$i")
  ls "$tmp/$run".*."$want" > /dev/null 2>&1 || { echo "keep_parts: $run: $want of its $count parts is missing: \
fetch it (gpu_window.sh ckpt_out $run $(( i / 4 * 4 ))) before the machine goes back" >&2; exit 1; }
done
[ "${#parts[@]}" = "$count" ] || { echo "keep_parts: $run: ${#parts[@]} parts, but $count were sent (parts of \
two checkpoints?)" >&2; exit 1; }
got=$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)
[ "$got" = "$digest" ] \
  || { echo "keep_parts: $run: the ${#parts[@]} parts do not match the checkpoint's sha256 (a part from another checkpoint?)" >&2; exit 1; }
home=.devcache/ckpt/$run
rm -rf "$home" && mkdir -p "$home"
k=0; folders=(a b c d e f g h)
for i in "${!parts[@]}"; do
  k=$(( i / 3 )); mkdir -p "$home/${folders[$k]}"; cp "${parts[$i]}" "$home/${folders[$k]}/"
done
cp "$tmp/$run.sha256" "$tmp/$run.small.tar.gz" "$home/${folders[$k]}/"
echo "$run: ${#parts[@]} parts, sha256 ok; carry them in with:"
for (( j = 0; j <= k; j++ )); do
  echo "  run carry [$home/${folders[$j]}]  bash benchmarks/device/gpu_window.sh ckpt_in $run ${folders[$j]}"
done
