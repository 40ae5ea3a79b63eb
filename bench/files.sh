#!/usr/bin/env bash
# Throughput benchmark of the file API through the real spin.toml on the dev host.
#
#   bench/files.sh                      # 1 GiB file
#   SIZE_MB=64 bench/files.sh           # smaller file
#   INSTALL_DUFS=1 bench/files.sh       # `cargo install dufs --locked` first if it is missing
#   SKIP_BUILD=1 bench/files.sh         # reuse the existing release builds
#
# Builds the release wasm components and dev host, starts `devhost up` on 127.0.0.1 with a fresh
# state dir and a freshly minted token, uploads a random SIZE_MB file with `curl -T`, downloads it
# to /dev/null, verifies a second download's SHA-256, samples the dev host's peak RSS (VmHWM), and,
# when `dufs` is on PATH, serves the same file from disk with dufs for a GET comparison.
# MB/s means 10^6 bytes per second. Everything runs on 127.0.0.1; every process started here is
# killed on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
SKIP_BUILD=${SKIP_BUILD:-0}
INSTALL_DUFS=${INSTALL_DUFS:-0}
KEEP_TMP=${KEEP_TMP:-0}
CURL_MAX_TIME=${CURL_MAX_TIME:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DEVHOST=${DEVHOST_BIN:-$TARGET_DIR/release/devhost}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/downlink-bench.XXXXXX")
DEVHOST_PID=""
DUFS_PID=""

cleanup() {
    local status=$?
    if [[ -n "$DUFS_PID" ]] && kill -0 "$DUFS_PID" 2>/dev/null; then
        kill "$DUFS_PID" 2>/dev/null || true
        wait "$DUFS_PID" 2>/dev/null || true
    fi
    if [[ -n "$DEVHOST_PID" ]] && kill -0 "$DEVHOST_PID" 2>/dev/null; then
        kill "$DEVHOST_PID" 2>/dev/null || true
        wait "$DEVHOST_PID" 2>/dev/null || true
    fi
    if [[ "$KEEP_TMP" == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# bytes, seconds -> MB/s (10^6 bytes/s)
mbps() { python3 -c 'import sys; b, s = float(sys.argv[1]), float(sys.argv[2]); print(f"{b / s / 1e6:.1f}" if s > 0 else "inf")' "$1" "$2"; }

vmhwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# --- build -------------------------------------------------------------------------------------
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release wasm components and the dev host"
    (cd "$ROOT" && cargo xtask build-wasm && cargo build --release -p devhost)
fi
[[ -x "$DEVHOST" ]] || die "dev host binary not found at $DEVHOST"
command -v curl >/dev/null || die "curl is required"

# --- token -------------------------------------------------------------------------------------
TOKEN="dl_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
TOKEN_HASH=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
API_TOKENS="[{\"name\":\"bench\",\"sha256\":\"$TOKEN_HASH\",\"scopes\":[\"file.read\",\"file.write\"]}]"
AUTH="Authorization: Bearer $TOKEN"

# --- test file ---------------------------------------------------------------------------------
mkdir -p "$WORK/serve" "$WORK/state"
FILE="$WORK/serve/data.bin"
log "creating a ${SIZE_MB} MiB random file"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
SIZE=$(stat -c %s "$FILE")
SHA_ORIG=$(sha256sum "$FILE" | cut -d' ' -f1)

# --- dev host ----------------------------------------------------------------------------------
log "starting the dev host"
"$DEVHOST" up --from "$ROOT/spin.toml" --listen 127.0.0.1:0 --state-dir "$WORK/state" \
    --variable "api_tokens=$API_TOKENS" >"$WORK/devhost.out" 2>"$WORK/devhost.err" &
DEVHOST_PID=$!
BASE=""
for _ in $(seq 1 1800); do
    BASE=$(grep -o 'Serving http://127\.0\.0\.1:[0-9]*' "$WORK/devhost.out" 2>/dev/null | head -n1 | sed 's/^Serving //' || true)
    [[ -n "$BASE" ]] && break
    kill -0 "$DEVHOST_PID" 2>/dev/null || { cat "$WORK/devhost.out" "$WORK/devhost.err" >&2; die "the dev host exited"; }
    sleep 0.1
done
[[ -n "$BASE" ]] || { cat "$WORK/devhost.err" >&2; die "the dev host did not print its Serving line"; }
RSS_START=$(vmhwm_kb "$DEVHOST_PID")
log "dev host at $BASE (pid $DEVHOST_PID, VmHWM ${RSS_START} kB)"

# Sample VmHWM in the background as well, in case the process dies mid-run.
( peak=0; while kill -0 "$DEVHOST_PID" 2>/dev/null; do
      v=$(vmhwm_kb "$DEVHOST_PID"); [[ "${v:-0}" -gt "$peak" ]] && { peak=$v; echo "$peak" >"$WORK/rss.peak"; }
      sleep 0.2
  done ) &
SAMPLER_PID=$!

URL="$BASE/bench/data.bin"

# --- upload ------------------------------------------------------------------------------------
log "PUT $SIZE bytes"
read -r UP_CODE UP_TIME UP_BYTES < <(curl -sS --max-time "$CURL_MAX_TIME" -H "$AUTH" -H 'Expect:' \
    -T "$FILE" -o "$WORK/put.json" -w '%{http_code} %{time_total} %{size_upload}\n' "$URL")
[[ "$UP_CODE" == 201 || "$UP_CODE" == 200 ]] || { cat "$WORK/put.json" >&2; tail -n 20 "$WORK/devhost.err" >&2; die "upload answered $UP_CODE"; }
[[ "$UP_BYTES" == "$SIZE" ]] || die "curl uploaded $UP_BYTES of $SIZE bytes"
RSS_UP=$(vmhwm_kb "$DEVHOST_PID")
UP_MBPS=$(mbps "$SIZE" "$UP_TIME")
log "upload: $UP_CODE in ${UP_TIME}s = $UP_MBPS MB/s; $(cat "$WORK/put.json")"

# --- download ----------------------------------------------------------------------------------
log "GET to /dev/null"
read -r DOWN_CODE DOWN_TIME DOWN_BYTES < <(curl -sS --max-time "$CURL_MAX_TIME" -H "$AUTH" \
    -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' "$URL")
[[ "$DOWN_CODE" == 200 ]] || die "download answered $DOWN_CODE"
[[ "$DOWN_BYTES" == "$SIZE" ]] || die "downloaded $DOWN_BYTES of $SIZE bytes"
DOWN_MBPS=$(mbps "$SIZE" "$DOWN_TIME")
log "download: ${DOWN_TIME}s = $DOWN_MBPS MB/s"

log "GET again through sha256sum"
SHA_DOWN=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$URL" | sha256sum | cut -d' ' -f1)
if [[ "$SHA_DOWN" == "$SHA_ORIG" ]]; then SHA_OK=yes; else SHA_OK="NO ($SHA_DOWN != $SHA_ORIG)"; fi
RSS_DOWN=$(vmhwm_kb "$DEVHOST_PID")
RSS_PEAK=$(cat "$WORK/rss.peak" 2>/dev/null || echo "$RSS_DOWN")
[[ "$RSS_DOWN" -gt "$RSS_PEAK" ]] && RSS_PEAK=$RSS_DOWN
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)

# --- dufs --------------------------------------------------------------------------------------
DUFS_MBPS="-"
RATIO="-"
if ! command -v dufs >/dev/null && [[ "$INSTALL_DUFS" == 1 ]]; then
    log "installing dufs (cargo install dufs --locked)"
    cargo install dufs --locked >&2
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if command -v dufs >/dev/null; then
    DUFS_PORT=$(free_port)
    dufs "$WORK/serve" --bind 127.0.0.1 --port "$DUFS_PORT" >"$WORK/dufs.log" 2>&1 &
    DUFS_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$DUFS_PORT/" && break
        sleep 0.1
    done
    log "dufs GET to /dev/null"
    read -r DUFS_CODE DUFS_TIME DUFS_BYTES < <(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null \
        -w '%{http_code} %{time_total} %{size_download}\n' "http://127.0.0.1:$DUFS_PORT/data.bin")
    if [[ "$DUFS_CODE" == 200 && "$DUFS_BYTES" == "$SIZE" ]]; then
        DUFS_MBPS=$(mbps "$SIZE" "$DUFS_TIME")
        RATIO=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$DOWN_MBPS" "$DUFS_MBPS")
    else
        DUFS_MBPS="failed ($DUFS_CODE, $DUFS_BYTES bytes)"
    fi
else
    log "dufs not on PATH (INSTALL_DUFS=1 installs it); skipping the comparison"
fi

# --- report ------------------------------------------------------------------------------------
kb_to_mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f} MiB")' "$1"; }
printf '\n'
printf '| %-34s | %-28s |\n' "metric" "value"
printf '|%s|%s|\n' "------------------------------------" "------------------------------"
printf '| %-34s | %-28s |\n' "file size" "$SIZE bytes (${SIZE_MB} MiB)"
printf '| %-34s | %-28s |\n' "upload (curl -T) MB/s" "$UP_MBPS ($UP_CODE, ${UP_TIME}s)"
printf '| %-34s | %-28s |\n' "download (curl -> /dev/null) MB/s" "$DOWN_MBPS (${DOWN_TIME}s)"
printf '| %-34s | %-28s |\n' "download sha256 matches" "$SHA_OK"
printf '| %-34s | %-28s |\n' "dev host VmHWM after start" "$(kb_to_mib "$RSS_START")"
printf '| %-34s | %-28s |\n' "dev host VmHWM after upload" "$(kb_to_mib "$RSS_UP")"
printf '| %-34s | %-28s |\n' "dev host VmHWM peak" "$(kb_to_mib "$RSS_PEAK")"
printf '| %-34s | %-28s |\n' "state dir on disk" "$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 2**20:.1f} MiB")' "$STATE_BYTES")"
printf '| %-34s | %-28s |\n' "dufs GET MB/s" "$DUFS_MBPS"
printf '| %-34s | %-28s |\n' "ratio ours/dufs (GET)" "$RATIO"
[[ "$SHA_OK" == yes ]] || exit 1
