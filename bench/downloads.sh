#!/usr/bin/env bash
# Throughput benchmark of remote URL downloads (`GET /{dir}?download=URL`) through the real
# spin.toml on the dev host, against a local origin in a second process.
#
#   bench/downloads.sh                  # 1 GiB file
#   SIZE_MB=64 bench/downloads.sh       # smaller file
#   SKIP_BUILD=1 bench/downloads.sh     # reuse the existing release builds
#
# Builds the release wasm components and dev host, writes a random SIZE_MB file, serves it from
# a tiny Python origin (sendfile, Content-Length) on 127.0.0.1, measures `curl -o file` from
# that origin, then starts `devhost up` (allow_download=true, download_allow_private=true, a
# freshly minted token), starts a download of the same URL, polls `GET /api/v1/downloads/{id}`
# until it ends, and reports MB/s (size / time from the start request to `completed`), the ratio
# ours/curl, whether the stored file's SHA-256 (read back through the file API) matches, and
# the dev host's peak RSS (VmHWM). MB/s means 10^6 bytes per second. Everything runs on
# 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
CURL_MAX_TIME=${CURL_MAX_TIME:-1800}
# Upper bound for the dev host's download, seconds (also passed as its `timeout`).
DOWNLOAD_MAX_TIME=${DOWNLOAD_MAX_TIME:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DEVHOST=${DEVHOST_BIN:-$TARGET_DIR/release/devhost}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/downlink-bench-dl.XXXXXX")
DEVHOST_PID=""
ORIGIN_PID=""
SAMPLER_PID=""

cleanup() {
    local status=$?
    for pid in "$SAMPLER_PID" "$ORIGIN_PID" "$DEVHOST_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
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

now() { date +%s.%N; }

elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# JSON field of stdin, "" when absent/null.
json_field() { python3 -c 'import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    v = None
print("" if v is None else v)' "$1"; }

# --- build -------------------------------------------------------------------------------------
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release wasm components and the dev host"
    (cd "$ROOT" && cargo xtask build-wasm && cargo build --release -p devhost)
fi
[[ -x "$DEVHOST" ]] || die "dev host binary not found at $DEVHOST"
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

# --- token -------------------------------------------------------------------------------------
TOKEN="dl_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
TOKEN_HASH=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
API_TOKENS="[{\"name\":\"bench\",\"sha256\":\"$TOKEN_HASH\",\"scopes\":[\"download.create\",\"download.read\",\"file.read\"]}]"
AUTH="Authorization: Bearer $TOKEN"

# --- test file ---------------------------------------------------------------------------------
mkdir -p "$WORK/serve" "$WORK/state"
FILE="$WORK/serve/data.bin"
log "creating a ${SIZE_MB} MiB random file"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
SIZE=$(stat -c %s "$FILE")
SHA_ORIG=$(sha256sum "$FILE" | cut -d' ' -f1)

# --- origin (second process) -------------------------------------------------------------------
# A tiny threaded HTTP/1.1 server: GET/HEAD of files under serve/ with Content-Length, body sent
# with sendfile(2) so the origin is not the bottleneck for either client.
cat >"$WORK/origin.py" <<'PY'
import http.server, os, sys, socketserver

ROOT = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _open(self):
        name = os.path.basename(self.path.split("?", 1)[0])
        path = os.path.join(ROOT, name)
        if not name or not os.path.isfile(path):
            self.send_error(404)
            return None
        f = open(path, "rb")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        return f

    def do_HEAD(self):
        f = self._open()
        if f:
            f.close()

    def do_GET(self):
        f = self._open()
        if not f:
            return
        with f:
            self.wfile.flush()
            try:
                self.connection.sendfile(f)
            except (BrokenPipeError, ConnectionResetError):
                pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

Server(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
PY
ORIGIN_PORT=$(free_port)
python3 "$WORK/origin.py" "$WORK/serve" "$ORIGIN_PORT" >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT/data.bin"
for _ in $(seq 1 100); do
    curl -s -o /dev/null -I "$ORIGIN_URL" && break
    kill -0 "$ORIGIN_PID" 2>/dev/null || { cat "$WORK/origin.log" >&2; die "the origin exited"; }
    sleep 0.1
done
curl -s -o /dev/null -I "$ORIGIN_URL" || die "the origin did not come up"
log "origin at $ORIGIN_URL (pid $ORIGIN_PID)"

# --- curl baseline -----------------------------------------------------------------------------
log "curl -o file from the origin"
read -r CURL_CODE CURL_TIME CURL_BYTES < <(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/curl.bin" \
    -w '%{http_code} %{time_total} %{size_download}\n' "$ORIGIN_URL")
[[ "$CURL_CODE" == 200 ]] || die "curl from the origin answered $CURL_CODE"
[[ "$CURL_BYTES" == "$SIZE" ]] || die "curl got $CURL_BYTES of $SIZE bytes"
rm -f "$WORK/curl.bin"
CURL_MBPS=$(mbps "$SIZE" "$CURL_TIME")
log "curl: ${CURL_TIME}s = $CURL_MBPS MB/s"

# --- dev host ----------------------------------------------------------------------------------
log "starting the dev host"
"$DEVHOST" up --from "$ROOT/spin.toml" --listen 127.0.0.1:0 --state-dir "$WORK/state" \
    --variable "api_tokens=$API_TOKENS" --variable allow_download=true \
    --variable download_allow_private=true >"$WORK/devhost.out" 2>"$WORK/devhost.err" &
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

( peak=0; while kill -0 "$DEVHOST_PID" 2>/dev/null; do
      v=$(vmhwm_kb "$DEVHOST_PID"); [[ "${v:-0}" -gt "$peak" ]] && { peak=$v; echo "$peak" >"$WORK/rss.peak"; }
      sleep 0.2
  done ) &
SAMPLER_PID=$!

# --- remote download ---------------------------------------------------------------------------
START_URL="$BASE/bench?download=$(urlencode "$ORIGIN_URL")&timeout=$DOWNLOAD_MAX_TIME"
log "GET /bench?download=$ORIGIN_URL"
T0=$(now)
START_CODE=$(curl -sS --max-time 60 -H "$AUTH" -o "$WORK/start.json" -w '%{http_code}' "$START_URL")
[[ "$START_CODE" == 202 ]] || { cat "$WORK/start.json" >&2; tail -n 20 "$WORK/devhost.err" >&2; die "start answered $START_CODE"; }
ID=$(json_field download_id <"$WORK/start.json")
STORED_PATH=$(json_field path <"$WORK/start.json")
[[ -n "$ID" && -n "$STORED_PATH" ]] || die "no download_id/path in $(cat "$WORK/start.json")"
log "download $ID -> $STORED_PATH"

STATUS=""
DEADLINE=$(( $(date +%s) + DOWNLOAD_MAX_TIME + 30 ))
while :; do
    curl -sS --max-time 30 -H "$AUTH" -o "$WORK/record.json" "$BASE/api/v1/downloads/$ID" || true
    STATUS=$(json_field status <"$WORK/record.json")
    case "$STATUS" in
        completed|failed|cancelled) break ;;
    esac
    [[ $(date +%s) -lt $DEADLINE ]] || die "download still '$STATUS' after ${DOWNLOAD_MAX_TIME}s: $(cat "$WORK/record.json")"
    kill -0 "$DEVHOST_PID" 2>/dev/null || die "the dev host died mid-download"
    sleep 0.05
done
T1=$(now)
[[ "$STATUS" == completed ]] || { cat "$WORK/record.json" >&2; tail -n 20 "$WORK/devhost.err" >&2; die "download ended $STATUS"; }
TOTAL=$(json_field total_bytes <"$WORK/record.json")
[[ "$TOTAL" == "$SIZE" ]] || die "record says total_bytes=$TOTAL, expected $SIZE"
DL_TIME=$(elapsed "$T0" "$T1")
DL_MBPS=$(mbps "$SIZE" "$DL_TIME")
RSS_DL=$(vmhwm_kb "$DEVHOST_PID")
RATIO=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$DL_MBPS" "$CURL_MBPS")
log "remote download: ${DL_TIME}s = $DL_MBPS MB/s (ours/curl = $RATIO)"

# --- verify ------------------------------------------------------------------------------------
log "GET the stored file through sha256sum"
ENC_PATH=$(python3 -c 'import sys, urllib.parse; print("/".join(urllib.parse.quote(s, safe="") for s in sys.argv[1].split("/")))' "$STORED_PATH")
SHA_DOWN=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$BASE/$ENC_PATH" | sha256sum | cut -d' ' -f1)
if [[ "$SHA_DOWN" == "$SHA_ORIG" ]]; then SHA_OK=yes; else SHA_OK="NO ($SHA_DOWN != $SHA_ORIG)"; fi
RSS_END=$(vmhwm_kb "$DEVHOST_PID")
RSS_PEAK=$(cat "$WORK/rss.peak" 2>/dev/null || echo "$RSS_END")
[[ "$RSS_END" -gt "$RSS_PEAK" ]] && RSS_PEAK=$RSS_END
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)

# --- report ------------------------------------------------------------------------------------
kb_to_mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f} MiB")' "$1"; }
printf '\n'
printf '| %-36s | %-30s |\n' "metric" "value"
printf '|%s|%s|\n' "--------------------------------------" "--------------------------------"
printf '| %-36s | %-30s |\n' "file size" "$SIZE bytes (${SIZE_MB} MiB)"
printf '| %-36s | %-30s |\n' "curl -o file from the origin MB/s" "$CURL_MBPS (${CURL_TIME}s)"
printf '| %-36s | %-30s |\n' "remote download (start->completed)" "$DL_MBPS MB/s (${DL_TIME}s)"
printf '| %-36s | %-30s |\n' "ratio ours/curl" "$RATIO"
printf '| %-36s | %-30s |\n' "stored file sha256 matches" "$SHA_OK"
printf '| %-36s | %-30s |\n' "dev host VmHWM after start" "$(kb_to_mib "$RSS_START")"
printf '| %-36s | %-30s |\n' "dev host VmHWM after download" "$(kb_to_mib "$RSS_DL")"
printf '| %-36s | %-30s |\n' "dev host VmHWM peak" "$(kb_to_mib "$RSS_PEAK")"
printf '| %-36s | %-30s |\n' "state dir on disk" "$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 2**20:.1f} MiB")' "$STATE_BYTES")"
[[ "$SHA_OK" == yes ]] || exit 1
