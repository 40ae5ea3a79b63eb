#!/usr/bin/env bash
# Throughput benchmark of the multi-file ZIP download through the real spin.toml, against dufs.
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
# Our STORE ZIP, dufs's store ZIP and our single-file GET alternate in each of REPEAT rounds;
# every rate is the median. Prints MB/s (10^6 bytes per second), the ratios ours/dufs-store and
# ours/own-single-GET and the host's peak RSS (VmHWM), checks our archive with `unzip -t` and
# every entry's SHA-256 against the original, and fails (exit 3) when a target is missed: STORE
# ZIP >= 2.0x dufs, >= 0.8x our own GET, RSS < 100 MiB. HOST=spin runs the app on real Spin.
# Everything runs on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

FILES=${FILES:-20}
SIZE_MB=${SIZE_MB:-50}
REPEAT=${REPEAT:-3}
INSTALL_DUFS=${INSTALL_DUFS:-0}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench-multi

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
maybe_install_dufs
command -v dufs >/dev/null || die "dufs is the anchor and is not on PATH (INSTALL_DUFS=1 installs it)"
print_machine

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
# dufs serves the same files from disk for the whole run, so each round can alternate.
start_dufs --allow-archive --compress none
DUFS_STORE_URL="http://127.0.0.1:$DUFS_PORT/set/?zip"
DUFS_VERSION=$(dufs --version | awk '{print $2}')
ZIP_RATES=()
GET_RATES=()
DUFS_STORE_RATES=()
for _ in $(seq 1 "$REPEAT"); do
    sync
    REPEAT=1 time_get "our ZIP" "$MULTI_URL" -X POST -H "$AUTH"
    read -r RATE ZIP_BYTES <"$WORK/timed"
    ZIP_RATES+=("$RATE")
    REPEAT=1 time_get "dufs ?zip --compress none" "$DUFS_STORE_URL"
    read -r RATE DUFS_STORE_BYTES <"$WORK/timed"
    DUFS_STORE_RATES+=("$RATE")
    REPEAT=1 time_get "our single-file GET" "$BASE/bench/single/all.bin" -H "$AUTH"
    read -r RATE GET_BYTES <"$WORK/timed"
    GET_RATES+=("$RATE")
done
ZIP_MBPS=$(median "${ZIP_RATES[@]}")
GET_MBPS=$(median "${GET_RATES[@]}")
DUFS_STORE_MBPS=$(median "${DUFS_STORE_RATES[@]}")
curl -sS --fail --max-time "$CURL_MAX_TIME" -o "$WORK/dufs.zip" "$DUFS_STORE_URL"
unzip -tq "$WORK/dufs.zip" >/dev/null 2>&1 || log "note: unzip -t complains about dufs's archive"
rm -f "$WORK/dufs.zip"
stop_pid "$DUFS_PID"
DUFS_PID=""

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
run_dufs() {
    start_dufs --allow-archive "$@"
    DUFS_URL="http://127.0.0.1:$DUFS_PORT/set/?zip"
}
run_dufs
SIZE_MAY_VARY=1 time_get "dufs ?zip (default compression)" "$DUFS_URL"
read -r DUFS_DEFAULT_MBPS DUFS_DEFAULT_BYTES <"$WORK/timed"
stop_pid "$DUFS_PID"
DUFS_PID=""

DUFS_DEFAULT_INPUT_MBPS="-"
if [[ "$DUFS_DEFAULT_BYTES" != "-" ]]; then
    DUFS_DEFAULT_INPUT_MBPS=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) * float(sys.argv[2]) / float(sys.argv[3]):.1f}")' \
        "$DUFS_DEFAULT_MBPS" "$TOTAL" "$DUFS_DEFAULT_BYTES")
fi
R_DUFS=$(ratio "$ZIP_MBPS" "$DUFS_STORE_MBPS")
R_DUFS_DEFAULT=$(ratio "$ZIP_MBPS" "$DUFS_DEFAULT_INPUT_MBPS")
R_GET=$(ratio "$ZIP_MBPS" "$GET_MBPS")
RSS_MIB=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$RSS_PEAK")

report_start 46 34
report_row "machine" "$MACHINE"
report_row "files, rounds" "$FILES x $SIZE_MB MiB = $TOTAL bytes, $REPEAT alternating"
report_row "upload (curl -T, $FILES files) MB/s" "$UP_MBPS"
report_row "our ZIP (multi, store) MB/s" "$ZIP_MBPS ($ZIP_BYTES bytes; ${ZIP_RATES[*]})"
report_row "our ZIP, compression=deflate, MB/s sent" "$DEFLATE_MBPS ($DEFLATE_BYTES bytes)"
report_row "our ZIP deflate, per content byte MB/s" "$DEFLATE_INPUT_MBPS"
report_row "our single-file GET MB/s" "$GET_MBPS"
report_row "dufs $DUFS_VERSION ?zip --compress none MB/s" "$DUFS_STORE_MBPS ($DUFS_STORE_BYTES bytes; ${DUFS_STORE_RATES[*]})"
report_row "dufs ?zip default (low) MB/s sent" "$DUFS_DEFAULT_MBPS ($DUFS_DEFAULT_BYTES bytes)"
report_row "dufs ?zip default, per content byte MB/s" "$DUFS_DEFAULT_INPUT_MBPS"
report_row "ratio ours/dufs store" "$R_DUFS"
report_row "ratio ours/dufs default, per content byte" "$R_DUFS_DEFAULT"
report_row "ratio ours deflate/dufs default, per byte" "$(ratio "$DEFLATE_INPUT_MBPS" "$DUFS_DEFAULT_INPUT_MBPS")"
report_row "ratio ours ZIP/own GET" "$R_GET"
report_row "host VmHWM after upload" "$(kb_to_mib "$RSS_UP")"
report_row "host VmHWM peak" "$RSS_MIB MiB"
report_row "unzip -t of our archive" "ok"
report_row "entry contents match (SHA-256)" "$CONTENT_OK"
[[ "$CONTENT_OK" == yes ]] || exit 1
check_target "STORE ZIP ours/dufs store" "$R_DUFS" ">=" 2.0
check_target "STORE ZIP ours/own GET" "$R_GET" ">=" 0.8
# The RSS target is the dev host's (real Spin's own memory is reported, not judged).
[[ "$HOST" != devhost ]] || check_target "peak RSS MiB" "$RSS_MIB" "<" 100
finish_targets
