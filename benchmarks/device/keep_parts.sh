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
# The run's small files (metrics, recipe, best.json; no sample grids) and the sha256 go with the last folder.
set -euo pipefail
run=${1:?usage: keep_parts.sh RUN DIR...}; shift
[ $# -ge 1 ] || { echo "usage: keep_parts.sh RUN DIR..." >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The DIRs may hold parts of several checkpoints (`wait` with SEND_CKPT sends the newest one every second call,
# ckpt_out the last): each DIR with a sha256 names one checkpoint (by the parts sent with it). The newest complete
# one is kept: the DIRs are tried from the last given back, and an older one only when a newer one is incomplete.
cands=()
for (( i = $#; i >= 1; i-- )); do [ -f "${!i}/$run.sha256" ] && cands+=("${!i}"); done
[ ${#cands[@]} -ge 1 ] \
  || { echo "keep_parts: $run.sha256 and $run.small.tar.gz (sent with the first ckpt_out call) not found" >&2; exit 1; }
check() {  # check CAND: gather the parts of CAND's checkpoint from every DIR into $tmp/c and check them
  local cand=$1 first name d i want got; shift
  first=$(ls "$cand/$run".*.part-* 2>/dev/null | sort | head -1)
  [ -n "$first" ] && [ -f "$cand/$run.small.tar.gz" ] \
    || { echo "keep_parts: $cand has $run.sha256 but not the parts and small files sent with it"; return 1; }
  name=$(basename "$first"); name=${name#"$run".}; name=${name%.part-*}
  rm -rf "$tmp/c" && mkdir -p "$tmp/c" && cp "$cand/$run.sha256" "$cand/$run.small.tar.gz" "$tmp/c"/
  for d in "$@"; do
    for f in "$d/$run.$name".part-*; do [ -f "$f" ] && cp "$f" "$tmp/c"/; done
  done
  mapfile -t parts < <(ls "$tmp/c/$run".*.part-* 2>/dev/null | sort)
  read -r digest count _ < "$tmp/c/$run.sha256"  # (a third field: where the run folder goes back)
  for (( i = 0; i < count; i++ )); do  # every part, by number: a gap names the ckpt_out call that sends it
    want=$(printf 'part-%02d' "$i")
    [ -f "$tmp/c/$run.$name.$want" ] || { echo "keep_parts: $run: $want of its $count parts is missing: \
fetch it (gpu_window.sh ckpt_out $run $(( i / 4 * 4 ))) before the machine goes back"; return 1; }
  done
  [ "${#parts[@]}" = "$count" ] || { echo "keep_parts: $run: ${#parts[@]} parts, but $count were sent"; return 1; }
  got=$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$digest" ] \
    || { echo "keep_parts: $run: the ${#parts[@]} parts do not match the checkpoint's sha256 (a part from another checkpoint?)"
         return 1; }
  echo "$name"
}
kept=""; newest_error=""
for cand in "${cands[@]}"; do
  if msg=$(check "$cand" "$@"); then kept=$msg; break; fi
  [ -n "$newest_error" ] || newest_error=$msg
  [ "$cand" = "${cands[-1]}" ] || echo "$msg; trying the checkpoint sent before it" >&2
done
[ -n "$kept" ] || { echo "$newest_error" >&2; exit 1; }
mapfile -t parts < <(ls "$tmp/c/$run".*.part-* | sort)
home=.devcache/ckpt/$run
rm -rf "$home" && mkdir -p "$home"
k=0; folders=(a b c d e f g h)
for i in "${!parts[@]}"; do
  k=$(( i / 3 )); mkdir -p "$home/${folders[$k]}"; cp "${parts[$i]}" "$home/${folders[$k]}/"
done
cp "$tmp/c/$run.sha256" "$tmp/c/$run.small.tar.gz" "$home/${folders[$k]}/"
echo "$run: $kept, ${#parts[@]} parts, sha256 ok; carry them in with:"
for (( j = 0; j <= k; j++ )); do
  echo "  run carry [$home/${folders[$j]}]  bash benchmarks/device/gpu_window.sh ckpt_in $run ${folders[$j]}"
done
