#!/usr/bin/env bash
# What the hosted build's optimistic store costs: N sequential 1 KiB uploads into one directory,
# then N sequential downloads of them (each adds to the bandwidth counter), on the self-hosted build (the anchor: exact compare-and-swap) and on the hosted build under
# the dev host's Fermyon Wasm Functions profile (read, write, settle, confirm), in the same run,
# alternating for ROUNDS rounds; prints ms per upload and per download and the ratios
# hosted/self-hosted, and checks every upload is listed and every download counted once. Informational (no target): the settle time is the price of
# having no atomics.
#
#   bench/hosted.sh                 # after `cargo xtask build-wasm` and a release dev host
#   N=1000 ROUNDS=3 bench/hosted.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVHOST=${DEVHOST_BIN:-$ROOT/target/release/devhost}
N=${N:-300}
ROUNDS=${ROUNDS:-2}
cd "$ROOT"
minted=$("$DEVHOST" new-token bench file.read file.write)
token=$(awk '/^token:/{print $2}' <<<"$minted")
entry=$(awk '/^entry:/{print $2}' <<<"$minted")
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
head -c 1024 /dev/urandom >"$work/one.kib"

# run PLATFORM MANIFEST -> prints "<ms per upload> <ms per download>"
run() {
  local port state start end listed up_ms counted
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  state=$(mktemp -d "$work/state.XXXX")
  "$DEVHOST" up -f "$2" --platform "$1" --listen "127.0.0.1:$port" --state-dir "$state" \
    --variable api_tokens="[$entry]" >"$state/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/.well-known/spin/health" && break; sleep 0.1; done
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    curl -s -f -o /dev/null -X PUT --data-binary @"$work/one.kib" -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$port/bench/f$i.bin"
  done
  end=$(date +%s.%N)
  listed=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/bench/" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))')
  [ "$listed" = "$N" ] || { echo "$1: $listed of $N uploads listed" >&2; exit 1; }
  up_ms=$(python3 -c "print(f'{($end - $start) / $N * 1000:.1f}')")
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    curl -s -f -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/bench/f$i.bin"
  done
  end=$(date +%s.%N)
  counted=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/download/usage" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_sent"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  [ "$counted" = "$((N * 1024))" ] || { echo "$1: $counted bytes counted for $N downloads of 1 KiB" >&2; exit 1; }
  echo "$up_ms $(python3 -c "print(f'{($end - $start) / $N * 1000:.1f}')")"
}

self=(); hosted=(); self_get=(); hosted_get=()
for round in $(seq "$ROUNDS"); do
  read -r up get < <(run spin spin.toml); self+=("$up"); self_get+=("$get")
  read -r up get < <(run wasm-functions spin.wasm-functions.toml); hosted+=("$up"); hosted_get+=("$get")
  echo "==> round $round: self-hosted ${self[-1]} ms, wasm-functions profile ${hosted[-1]} ms per upload;" \
    "self-hosted ${self_get[-1]} ms, wasm-functions profile ${hosted_get[-1]} ms per download"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
s=$(median "${self[@]}"); h=$(median "${hosted[@]}")
echo
echo "| metric | value |"
echo "|---|---|"
echo "| machine | $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores; dev host |"
echo "| uploads per run, rounds | $N x 1 KiB into one directory, $ROUNDS alternating |"
echo "| self-hosted build (ExactKv), ms per upload, median | $s (${self[*]}) |"
echo "| hosted build, wasm-functions profile (OptimisticKv), ms per upload, median | $h (${hosted[*]}) |"
echo "| ratio hosted / self-hosted, uploads | $(python3 -c "print(f'{$h / $s:.2f}')") |"
sg=$(median "${self_get[@]}"); hg=$(median "${hosted_get[@]}")
echo "| self-hosted build, ms per counted download, median | $sg (${self_get[*]}) |"
echo "| hosted build, wasm-functions profile, ms per counted download, median | $hg (${hosted_get[*]}) |"
echo "| ratio hosted / self-hosted, downloads | $(python3 -c "print(f'{$hg / $sg:.2f}')") |"
