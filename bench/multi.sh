#!/usr/bin/env bash
# Throughput benchmark of the multi-file ZIP download through the real spin.toml on the dev host.
#
#   bench/multi.sh                         # 20 x 50 MiB files
#   FILES=5 SIZE_MB=8 bench/multi.sh       # a quick run
#   INSTALL_DUFS=1 bench/multi.sh          # `cargo install dufs --locked` first if it is missing
#   SKIP_BUILD=1 bench/multi.sh            # reuse the existing release builds
#   REPEAT=5 bench/multi.sh                # timed runs per measurement (median reported; default 3)
#
# Builds the release wasm components and dev host, starts `devhost up` on 127.0.0.1 with a fresh
# state dir and a freshly minted token, uploads FILES random files of SIZE_MB MiB each (plus one
# file holding all of them back to back, for the single-file comparison) with `curl -T`,
# prepares the directory through `/api/download/prepare`, and times:
#   - our ZIP: `POST /api/download/multi?id=...` to /dev/null, and with `&compression=deflate`;
#   - dufs serving the same files from disk as `?zip`, with `--compress none` (store) and with its
#     default (`low`, deflate);
#   - our single-file GET of the concatenated file (same byte count) to /dev/null.
# Every rate is the median of REPEAT runs. Prints MB/s (10^6 bytes per second), the ratios
# ours/dufs-store and ours/own-single-GET, and the dev host's peak RSS (VmHWM), then checks our
# archive with `unzip -t` and compares every entry's SHA-256 with the original file.
# Everything runs on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

FILES=${FILES:-20}
SIZE_MB=${SIZE_MB:-50}
REPEAT=${REPEAT:-3}
INSTALL_DUFS=${INSTALL_DUFS:-0}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench-multi

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# time_get NAME URL [curl args...]: REPEAT downloads to /dev/null; writes "median_MBps bytes" to
# $WORK/timed (not via $(...), so `die` stops the script). Every run must answer 200 with the
# same byte count, except when SIZE_MAY_VARY=1 (dufs's deflate output varies a little).
time_get() {
    local name=$1 url=$2
    shift 2
    local rates=() bytes="" code t b
    for _ in $(seq 1 "$REPEAT"); do
        read -r code t b < <(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null \
            -w '%{http_code} %{time_total} %{size_download}\n' "$@" "$url")
        [[ "$code" == 200 ]] || die "$name answered $code"
        if [[ "${SIZE_MAY_VARY:-0}" != 1 && -n "$bytes" && "$bytes" != "$b" ]]; then
            die "$name sent $b bytes, an earlier run $bytes"
        fi
        bytes=$b
        rates+=("$(mbps "$b" "$t")")
        log "$name: $b bytes in ${t}s = $(mbps "$b" "$t") MB/s"
    done
    printf '%.1f %s\n' "$(median "${rates[@]}")" "$bytes" >"$WORK/timed"
}

# --- build -------------------------------------------------------------------------------------
build_release
require_tools curl python3 unzip

# --- token -------------------------------------------------------------------------------------
mint_token file.read file.write

# --- test files --------------------------------------------------------------------------------
mkdir -p "$WORK/serve/set" "$WORK/state" "$WORK/single"
log "creating $FILES random files of $SIZE_MB MiB"
for i in $(seq -f '%02g' 1 "$FILES"); do
    head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/serve/set/file-$i.bin"
done
cat "$WORK"/serve/set/file-*.bin >"$WORK/single/all.bin"
TOTAL=$(stat -c %s "$WORK/single/all.bin")

# --- dev host ----------------------------------------------------------------------------------
start_devhost
start_rss_sampler

# --- upload ------------------------------------------------------------------------------------
put() {
    local file=$1 url=$2 code
    code=$(curl -sS --max-time "$CURL_MAX_TIME" -H "$AUTH" -H 'Expect:' -T "$file" -o "$WORK/put.json" -w '%{http_code}' "$url")
    [[ "$code" == 201 || "$code" == 200 ]] || { cat "$WORK/put.json" >&2; die "PUT $url answered $code"; }
}
log "uploading $FILES files + the $TOTAL-byte single file"
UP_START=$(date +%s.%N)
for f in "$WORK"/serve/set/file-*.bin; do
    put "$f" "$BASE/bench/set/$(basename "$f")"
done
UP_END=$(date +%s.%N)
put "$WORK/single/all.bin" "$BASE/bench/single/all.bin"
UP_MBPS=$(mbps "$TOTAL" "$(python3 -c "print($UP_END - $UP_START)")")
RSS_UP=$(vmhwm_kb "$DEVHOST_PID")

# --- our ZIP -----------------------------------------------------------------------------------
PREPARE=$(curl -sS --max-time 60 -H "$AUTH" -H 'content-type: application/json' \
    -d '{"Filelist": ["/bench/set"]}' "$BASE/api/download/prepare")
ID=$(printf '%s' "$PREPARE" | python3 -c 'import json, sys; print(json.load(sys.stdin)["rslt"])') \
    || die "prepare answered $PREPARE"
MULTI_URL="$BASE/api/download/multi?id=$ID"
log "prepared $ID"

# Ours alternate (ZIP, GET, ZIP, GET, ...) so background load hits both alike.
ZIP_RATES=()
GET_RATES=()
for _ in $(seq 1 "$REPEAT"); do
    REPEAT=1 time_get "our ZIP" "$MULTI_URL" -X POST -H "$AUTH"
    read -r RATE ZIP_BYTES <"$WORK/timed"
    ZIP_RATES+=("$RATE")
    REPEAT=1 time_get "our single-file GET" "$BASE/bench/single/all.bin" -H "$AUTH"
    read -r RATE GET_BYTES <"$WORK/timed"
    GET_RATES+=("$RATE")
done
ZIP_MBPS=$(printf '%.1f' "$(median "${ZIP_RATES[@]}")")
GET_MBPS=$(printf '%.1f' "$(median "${GET_RATES[@]}")")

# The streamed deflate mode (level 1, like dufs's default `low`); its size may not vary, but
# it is compared per content byte like dufs's.
SIZE_MAY_VARY=1 time_get "our ZIP, compression=deflate" "$MULTI_URL&compression=deflate" -X POST -H "$AUTH"
read -r DEFLATE_MBPS DEFLATE_BYTES <"$WORK/timed"
DEFLATE_INPUT_MBPS=$(python3 -c 'import sys; r, sent, total = map(float, sys.argv[1:]); print(f"{r * total / sent:.1f}")' \
    "$DEFLATE_MBPS" "$DEFLATE_BYTES" "$TOTAL")
[[ "$GET_BYTES" == "$TOTAL" ]] || die "single-file GET sent $GET_BYTES of $TOTAL bytes"

# --- verify our archive ------------------------------------------------------------------------
log "downloading the archive once more to disk and checking it"
curl -sS --fail --max-time "$CURL_MAX_TIME" -X POST -H "$AUTH" -o "$WORK/ours.zip" "$MULTI_URL"
[[ $(stat -c %s "$WORK/ours.zip") == "$ZIP_BYTES" ]] || die "archive size differs between downloads"
UNZIP_OUT=$(unzip -tq "$WORK/ours.zip" 2>&1) || { echo "$UNZIP_OUT" >&2; die "unzip -t failed"; }
CONTENT_OK=$(python3 - "$WORK/ours.zip" "$WORK/serve/set" <<'PY'
import hashlib, os, sys, zipfile
archive, src = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as z:
    names = sorted(z.namelist())
    want = sorted(os.listdir(src))
    if names != want:
        print(f"NO (names {names[:3]}... != {want[:3]}...)"); sys.exit()
    for name in names:
        got = hashlib.sha256(z.read(name)).hexdigest()
        with open(os.path.join(src, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != got:
                print(f"NO ({name} differs)"); sys.exit()
print("yes")
PY
)
stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"

# --- dufs --------------------------------------------------------------------------------------
DUFS_STORE_MBPS="-"
DUFS_DEFAULT_MBPS="-"
DUFS_STORE_BYTES="-"
DUFS_DEFAULT_BYTES="-"
DUFS_VERSION="-"
maybe_install_dufs
run_dufs() {
    start_dufs --allow-archive "$@"
    DUFS_URL="http://127.0.0.1:$DUFS_PORT/set/?zip"
}
if command -v dufs >/dev/null; then
    DUFS_VERSION=$(dufs --version | awk '{print $2}')
    run_dufs --compress none
    URL=$DUFS_URL
    time_get "dufs ?zip --compress none" "$URL"
    read -r DUFS_STORE_MBPS DUFS_STORE_BYTES <"$WORK/timed"
    # Sanity: dufs's store archive is about as big as ours.
    curl -sS --fail --max-time "$CURL_MAX_TIME" -o "$WORK/dufs.zip" "$URL"
    unzip -tq "$WORK/dufs.zip" >/dev/null 2>&1 || log "note: unzip -t complains about dufs's archive"
    rm -f "$WORK/dufs.zip"
    stop_pid "$DUFS_PID"
    run_dufs
    URL=$DUFS_URL
    SIZE_MAY_VARY=1 time_get "dufs ?zip (default compression)" "$URL"
    read -r DUFS_DEFAULT_MBPS DUFS_DEFAULT_BYTES <"$WORK/timed"
    stop_pid "$DUFS_PID"
    DUFS_PID=""
else
    log "dufs not on PATH (INSTALL_DUFS=1 installs it); skipping the comparison"
fi

# --- report ------------------------------------------------------------------------------------
# MB/s of content: dufs's compressed archive is smaller, so its rate is per input byte.
DUFS_DEFAULT_INPUT_MBPS="-"
if [[ "$DUFS_DEFAULT_BYTES" != "-" ]]; then
    DUFS_DEFAULT_INPUT_MBPS=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) * float(sys.argv[2]) / float(sys.argv[3]):.1f}")' \
        "$DUFS_DEFAULT_MBPS" "$TOTAL" "$DUFS_DEFAULT_BYTES")
fi
R_DUFS=$(ratio "$ZIP_MBPS" "$DUFS_STORE_MBPS")
R_DUFS_DEFAULT=$(ratio "$ZIP_MBPS" "$DUFS_DEFAULT_INPUT_MBPS")
R_GET=$(ratio "$ZIP_MBPS" "$GET_MBPS")
RSS_MIB=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$RSS_PEAK")
target() { python3 -c 'import sys; v, op, t = sys.argv[1], sys.argv[2], float(sys.argv[3])
try: v = float(v)
except ValueError: print("n/a"); sys.exit()
print("met" if (v >= t if op == ">=" else v < t) else "MISSED")' "$1" "$2" "$3"; }

report_start 46 34
report_row "files" "$FILES x $SIZE_MB MiB = $TOTAL bytes"
report_row "upload (curl -T, $FILES files) MB/s" "$UP_MBPS"
report_row "our ZIP (multi, store) MB/s" "$ZIP_MBPS ($ZIP_BYTES bytes)"
report_row "our ZIP, compression=deflate, MB/s sent" "$DEFLATE_MBPS ($DEFLATE_BYTES bytes)"
report_row "our ZIP deflate, per content byte MB/s" "$DEFLATE_INPUT_MBPS"
report_row "our single-file GET MB/s" "$GET_MBPS"
report_row "dufs $DUFS_VERSION ?zip --compress none MB/s" "$DUFS_STORE_MBPS ($DUFS_STORE_BYTES bytes)"
report_row "dufs ?zip default (low) MB/s sent" "$DUFS_DEFAULT_MBPS ($DUFS_DEFAULT_BYTES bytes)"
report_row "dufs ?zip default, per content byte MB/s" "$DUFS_DEFAULT_INPUT_MBPS"
report_row "ratio ours/dufs store (target >= 1.5)" "$R_DUFS ($(target "$R_DUFS" '>=' 1.5))"
report_row "ratio ours/dufs default, per content byte" "$R_DUFS_DEFAULT"
report_row "ratio ours deflate/dufs default, per byte" "$(ratio "$DEFLATE_INPUT_MBPS" "$DUFS_DEFAULT_INPUT_MBPS")"
report_row "ratio ours ZIP/own GET (target >= 0.8)" "$R_GET ($(target "$R_GET" '>=' 0.8))"
report_row "dev host VmHWM after upload" "$(kb_to_mib "$RSS_UP")"
report_row "dev host VmHWM peak (target < 100 MiB)" "$RSS_MIB MiB ($(target "$RSS_MIB" '<' 100))"
report_row "unzip -t of our archive" "ok"
report_row "entry contents match (SHA-256)" "$CONTENT_OK"
[[ "$CONTENT_OK" == yes ]] || exit 1
