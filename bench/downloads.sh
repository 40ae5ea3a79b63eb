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
# Upper bound for the dev host's download, seconds (also passed as its `timeout`).
DOWNLOAD_MAX_TIME=${DOWNLOAD_MAX_TIME:-1800}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench-dl

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
build_release
require_tools curl python3

# --- token -------------------------------------------------------------------------------------
mint_token download.create download.read file.read

# --- test file ---------------------------------------------------------------------------------
make_test_file

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
start_devhost --variable allow_download=true --variable download_allow_private=true
start_rss_sampler

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
RATIO=$(ratio "$DL_MBPS" "$CURL_MBPS")
log "remote download: ${DL_TIME}s = $DL_MBPS MB/s (ours/curl = $RATIO)"

# --- verify ------------------------------------------------------------------------------------
log "GET the stored file through sha256sum"
ENC_PATH=$(python3 -c 'import sys, urllib.parse; print("/".join(urllib.parse.quote(s, safe="") for s in sys.argv[1].split("/")))' "$STORED_PATH")
SHA_DOWN=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$BASE/$ENC_PATH" | sha256sum | cut -d' ' -f1)
if [[ "$SHA_DOWN" == "$SHA_ORIG" ]]; then SHA_OK=yes; else SHA_OK="NO ($SHA_DOWN != $SHA_ORIG)"; fi
stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"
STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)

# --- report ------------------------------------------------------------------------------------
report_start 36 30
report_row "file size" "$SIZE bytes (${SIZE_MB} MiB)"
report_row "curl -o file from the origin MB/s" "$CURL_MBPS (${CURL_TIME}s)"
report_row "remote download (start->completed)" "$DL_MBPS MB/s (${DL_TIME}s)"
report_row "ratio ours/curl" "$RATIO"
report_row "stored file sha256 matches" "$SHA_OK"
report_row "dev host VmHWM after start" "$(kb_to_mib "$RSS_START")"
report_row "dev host VmHWM after download" "$(kb_to_mib "$RSS_DL")"
report_row "dev host VmHWM peak" "$(kb_to_mib "$RSS_PEAK")"
report_row "state dir on disk" "$(bytes_to_mib "$STATE_BYTES")"
[[ "$SHA_OK" == yes ]] || exit 1
