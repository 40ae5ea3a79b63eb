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
INSTALL_DUFS=${INSTALL_DUFS:-0}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench

# --- build -------------------------------------------------------------------------------------
build_release
require_tools curl

# --- token -------------------------------------------------------------------------------------
mint_token file.read file.write

# --- test file ---------------------------------------------------------------------------------
make_test_file

# --- dev host ----------------------------------------------------------------------------------
start_devhost
start_rss_sampler

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
stop_rss_sampler "$RSS_DOWN"
STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)

# --- dufs --------------------------------------------------------------------------------------
DUFS_MBPS="-"
RATIO="-"
maybe_install_dufs
if command -v dufs >/dev/null; then
    start_dufs
    log "dufs GET to /dev/null"
    read -r DUFS_CODE DUFS_TIME DUFS_BYTES < <(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null \
        -w '%{http_code} %{time_total} %{size_download}\n' "http://127.0.0.1:$DUFS_PORT/data.bin")
    if [[ "$DUFS_CODE" == 200 && "$DUFS_BYTES" == "$SIZE" ]]; then
        DUFS_MBPS=$(mbps "$SIZE" "$DUFS_TIME")
        RATIO=$(ratio "$DOWN_MBPS" "$DUFS_MBPS")
    else
        DUFS_MBPS="failed ($DUFS_CODE, $DUFS_BYTES bytes)"
    fi
else
    log "dufs not on PATH (INSTALL_DUFS=1 installs it); skipping the comparison"
fi

# --- report ------------------------------------------------------------------------------------
report_start 34 28
report_row "file size" "$SIZE bytes (${SIZE_MB} MiB)"
report_row "upload (curl -T) MB/s" "$UP_MBPS ($UP_CODE, ${UP_TIME}s)"
report_row "download (curl -> /dev/null) MB/s" "$DOWN_MBPS (${DOWN_TIME}s)"
report_row "download sha256 matches" "$SHA_OK"
report_row "dev host VmHWM after start" "$(kb_to_mib "$RSS_START")"
report_row "dev host VmHWM after upload" "$(kb_to_mib "$RSS_UP")"
report_row "dev host VmHWM peak" "$(kb_to_mib "$RSS_PEAK")"
report_row "state dir on disk" "$(bytes_to_mib "$STATE_BYTES")"
report_row "dufs GET MB/s" "$DUFS_MBPS"
report_row "ratio ours/dufs (GET)" "$RATIO"
[[ "$SHA_OK" == yes ]] || exit 1
