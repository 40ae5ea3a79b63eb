#!/usr/bin/env bash
# Throughput benchmark of remote URL downloads (`GET /{dir}?download=URL`) through the real
# spin.toml on the dev host, against a local origin in a second process.
#
#   bench/downloads.sh                  # 1 GiB file
#   SIZE_MB=64 bench/downloads.sh       # smaller file
#   ROUNDS=5 bench/downloads.sh         # more alternating curl/Downlink rounds (default 3)
#   SKIP_BUILD=1 bench/downloads.sh     # reuse the existing release builds
#
# Builds the release wasm components and dev host, writes a random SIZE_MB file, serves it from
# a tiny Python origin (sendfile, Content-Length) on 127.0.0.1, measures `curl -o file` from
# that origin, then starts `devhost up` (allow_download=true, download_allow_private=true, a
# freshly minted token). Each round runs `curl -o file` of the URL, then a download of the same
# URL through Downlink (polling `GET /api/v1/downloads/{id}` until it ends), and the same
# through a second host with SLICE_SECS-second slices (default 5), and checks each stored
# file's SHA-256 (read back through the file API). Reports the median MB/s of
# each (size / time from the start request to `completed` for ours), the ratio of the medians,
# the host's CPU time per GiB and its peak RSS (VmHWM), and fails (exit 3) when a target is
# missed: ours >= 0.8x `curl -o`, RSS < 100 MiB. HOST=spin runs the app on real Spin.
# MB/s means 10^6 bytes per second. Everything runs on
# 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
# curl and Downlink alternate this many times; medians are reported.
ROUNDS=${ROUNDS:-3}
# The second host's slice budget (download_slice_secs), seconds.
SLICE_SECS=${SLICE_SECS:-5}
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
print_machine

# --- token -------------------------------------------------------------------------------------
mint_token download.create download.read file.read

# --- test file ---------------------------------------------------------------------------------
make_test_file

# --- origin (second process) -------------------------------------------------------------------
# A tiny threaded HTTP/1.1 server: GET/HEAD of files under serve/ with Content-Length, an ETag
# and `Range: bytes=N-` (so slices can resume), body sent with sendfile(2) so the origin is not
# the bottleneck for either client.
cat >"$WORK/origin.py" <<'PY'
import http.server, os, sys, socketserver

ROOT = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # Returns (file, offset) with the head sent: the whole file, or with `Range: bytes=N-`
    # (and an `If-Range` naming this ETag, if any) the rest from N, as most origins do.
    def _open(self):
        name = os.path.basename(self.path.split("?", 1)[0])
        path = os.path.join(ROOT, name)
        if not name or not os.path.isfile(path):
            self.send_error(404)
            return None, 0
        f = open(path, "rb")
        stat = os.fstat(f.fileno())
        size, etag = stat.st_size, '"%x-%x"' % (stat.st_size, stat.st_mtime_ns)
        offset = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-") and self.headers.get("If-Range", etag) == etag:
            try:
                offset = int(wanted[6:-1])
            except ValueError:
                offset = 0
            offset = offset if 0 < offset < size else 0
        self.send_response(206 if offset else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - offset))
        if offset:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (offset, size - 1, size))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        return f, offset

    def do_HEAD(self):
        f, _ = self._open()
        if f:
            f.close()

    def do_GET(self):
        f, offset = self._open()
        if not f:
            return
        with f:
            self.wfile.flush()
            try:
                self.connection.sendfile(f, offset=offset)
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

# --- rounds ------------------------------------------------------------------------------------
# This kind of machine is noisy (a 2-core VM whose page-cache writes vary several-fold from one
# minute to the next), so curl and Downlink alternate for ROUNDS rounds and the medians are
# compared: each pair runs under the same conditions, after a `sync` (outside the timing).

# curl_round: `curl -o` of the origin URL to a file; appends its MB/s to CURL_RUNS.
curl_round() {
    local code time bytes
    read -r code time bytes < <(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/curl.bin" \
        -w '%{http_code} %{time_total} %{size_download}\n' "$ORIGIN_URL")
    [[ "$code" == 200 ]] || die "curl from the origin answered $code"
    [[ "$bytes" == "$SIZE" ]] || die "curl got $bytes of $SIZE bytes"
    rm -f "$WORK/curl.bin"
    CURL_RUNS+=("$(mbps "$SIZE" "$time")")
    log "curl -o: ${time}s = ${CURL_RUNS[-1]} MB/s"
}

# cpu_ticks PID: user + system CPU time of PID in clock ticks.

# download_round BASE PID ERRLOG RUNS CPUS: a remote download of the origin URL through the dev
# host at BASE (process PID), polled until it ends; checks the stored bytes' SHA-256, appends
# MB/s to the array named RUNS and the host's CPU seconds per GiB to the one named CPUS. Files
# are kept (`data (1).bin`, ...): reusing a deleted file's pages would flatter the store, as
# curl writes a new file each time.
download_round() {
    local BASE=$1 DEVHOST_PID=$2 errlog=$3
    local -n runs=$4 cpus=$5
    local start_url code id stored record status deadline t0 t1 total cpu0 cpu1 enc sha
    start_url="$BASE/bench?download=$(urlencode "$ORIGIN_URL")&timeout=$DOWNLOAD_MAX_TIME"
    cpu0=$(cpu_ticks "$DEVHOST_PID")
    t0=$(now)
    code=$(curl -sS --max-time 60 -H "$AUTH" -o "$WORK/start.json" -w '%{http_code}' "$start_url")
    [[ "$code" == 202 ]] || { cat "$WORK/start.json" >&2; tail -n 20 "$errlog" >&2; die "start answered $code"; }
    id=$(json_field download_id <"$WORK/start.json")
    stored=$(json_field path <"$WORK/start.json")
    [[ -n "$id" && -n "$stored" ]] || die "no download_id/path in $(cat "$WORK/start.json")"
    deadline=$(( $(date +%s) + DOWNLOAD_MAX_TIME + 30 ))
    while :; do
        # Plain bash matching: a python per poll would steal CPU from the transfer.
        record=$(curl -sS --max-time 30 -H "$AUTH" "$BASE/api/v1/downloads/$id" || true)
        status=""
        [[ "$record" =~ \"status\":\"([a-z_]+)\" ]] && status=${BASH_REMATCH[1]}
        case "$status" in
            completed|failed|cancelled) break ;;
        esac
        [[ $(date +%s) -lt $deadline ]] || die "download still '$status' after ${DOWNLOAD_MAX_TIME}s: $record"
        kill -0 "$DEVHOST_PID" 2>/dev/null || die "the dev host died mid-download"
        sleep 0.1
    done
    t1=$(now)
    cpu1=$(cpu_ticks "$DEVHOST_PID")
    [[ "$status" == completed ]] || { echo "$record" >&2; tail -n 20 "$errlog" >&2; die "download ended $status"; }
    total=$(json_field total_bytes <<<"$record")
    [[ "$total" == "$SIZE" ]] || die "record says total_bytes=$total, expected $SIZE"
    runs+=("$(mbps "$SIZE" "$(elapsed "$t0" "$t1")")")
    cpus+=("$(python3 -c 'import sys; t0, t1, hz, size = map(int, sys.argv[1:]); print(f"{(t1 - t0) / hz / (size / 2**30):.2f}")' "$cpu0" "$cpu1" "$(getconf CLK_TCK)" "$SIZE")")
    log "remote download $id -> $stored ($4): $(elapsed "$t0" "$t1")s = ${runs[-1]} MB/s, ${cpus[-1]} CPU s/GiB"
    enc=$(python3 -c 'import sys, urllib.parse; print("/".join(urllib.parse.quote(s, safe="") for s in sys.argv[1].split("/")))' "$stored")
    sha=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$BASE/$enc" | sha256sum | cut -d' ' -f1)
    [[ "$sha" == "$SHA_ORIG" ]] || die "stored file's sha256 $sha != $SHA_ORIG"
    STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)
}

# A second host with slices (SLICE_SECS each): every slice hands off to the next invocation,
# which resumes the pending write and asks the origin for the rest with Range.
HOST_TAG=sliced start_devhost --variable allow_download=true --variable download_allow_private=true \
    --variable "download_slice_secs=$SLICE_SECS"
SLICED_PID=$DEVHOST_PID
SLICED_BASE=$BASE
EXTRA_PIDS=$SLICED_PID
start_devhost --variable allow_download=true --variable download_allow_private=true
start_rss_sampler

CURL_RUNS=()
DL_RUNS=()
CPU_RUNS=()
SLICED_RUNS=()
SLICED_CPU_RUNS=()
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    # Each transfer starts with no dirty pages, so earlier rounds' writeback does not throttle it.
    sync
    curl_round
    sync
    download_round "$BASE" "$DEVHOST_PID" "$WORK/devhost.err" DL_RUNS CPU_RUNS
    sync
    download_round "$SLICED_BASE" "$SLICED_PID" "$WORK/devhost-sliced.err" SLICED_RUNS SLICED_CPU_RUNS
done
SLICES=$(grep -c "the next one goes on from there" "$WORK/devhost-sliced.err" || true)
stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"
CURL_MBPS=$(median "${CURL_RUNS[@]}")
DL_MBPS=$(median "${DL_RUNS[@]}")
SLICED_MBPS=$(median "${SLICED_RUNS[@]}")

# --- report ------------------------------------------------------------------------------------
RATIO=$(ratio "$DL_MBPS" "$CURL_MBPS")
SLICED_RATIO=$(ratio "$SLICED_MBPS" "$CURL_MBPS")
RSS_MIB=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$RSS_PEAK")
report_start 38 48
report_row "machine" "$MACHINE"
report_row "file size" "$SIZE bytes (${SIZE_MB} MiB), $ROUNDS rounds"
report_row "curl -o file from the origin MB/s" "$CURL_MBPS median (${CURL_RUNS[*]})"
report_row "remote download (start->completed)" "$DL_MBPS median (${DL_RUNS[*]})"
report_row "ratio ours/curl (medians)" "$RATIO"
report_row "with ${SLICE_SECS} s slices (start->completed)" "$SLICED_MBPS median (${SLICED_RUNS[*]}), $SLICES hand-offs in all"
report_row "ratio sliced/curl (medians)" "$SLICED_RATIO"
report_row "ratio sliced/unsliced (medians)" "$(ratio "$SLICED_MBPS" "$DL_MBPS")"
report_row "host CPU s per GiB downloaded" "$(median "${CPU_RUNS[@]}") median (${CPU_RUNS[*]})"
report_row "stored file sha256 matches" "yes (every round)"
report_row "host VmHWM after start" "$(kb_to_mib "$RSS_START") (includes compiling when cold)"
report_row "host VmHWM peak (start included)" "$(kb_to_mib "$RSS_PEAK")"
report_row "state dir on disk (all rounds)" "$(bytes_to_mib "$STATE_BYTES")"
check_target "URL download ours/curl -o" "$RATIO" ">=" 0.8
check_target "URL download with ${SLICE_SECS} s slices / curl -o" "$SLICED_RATIO" ">=" 0.8
# The RSS target is the dev host's (real Spin's own memory is reported, not judged).
[[ "$HOST" != devhost ]] || check_target "peak RSS MiB" "$RSS_MIB" "<" 100
finish_targets
