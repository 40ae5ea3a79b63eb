#!/usr/bin/env bash
# Throughput benchmark of the file API through the real spin.toml, against dufs in the same run.
#
#   bench/files.sh                      # 1 GiB file, 3 alternating rounds, on the dev host
#   SIZE_MB=256 ROUNDS=5 bench/files.sh
#   HOST=spin SPIN_BIN=../shared/spin/spin bench/files.sh   # the same app under real Spin
#   INSTALL_DUFS=1 bench/files.sh       # `cargo install dufs --locked` first if it is missing
#   SKIP_BUILD=1 bench/files.sh         # reuse the existing release builds
#   VARIABLES="verify_reads=true" bench/files.sh            # extra app variables
#
# Builds the release wasm components and dev host, starts the app (HOST=devhost|spin) on
# 127.0.0.1 with a fresh state dir and a freshly minted token, and dufs (the anchor) serving a
# directory on disk with uploads allowed. Each round uploads the same random SIZE_MB file to dufs
# and to Downlink (`curl -T`, a new name each round), then GETs it from dufs and from Downlink to
# /dev/null, alternating so both see the same machine weather. Reports medians, the spread, the
# ratios ours/dufs, the host's peak RSS (VmHWM), checks a download's SHA-256, and fails (exit 3)
# when a target is missed: GET >= 0.8x dufs, upload >= 1.2x dufs PUT, RSS < 100 MiB.
# MB/s means 10^6 bytes per second. Everything runs on 127.0.0.1; every process started here is
# killed on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
INSTALL_DUFS=${INSTALL_DUFS:-0}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench

build_release
require_tools curl python3
maybe_install_dufs
command -v dufs >/dev/null || die "dufs is the anchor and is not on PATH (INSTALL_DUFS=1 installs it)"
print_machine

mint_token file.read file.write
make_test_file
mkdir -p "$WORK/dufs"

start_devhost
start_rss_sampler
DUFS_DIR="$WORK/dufs"
dufs_serve() {
    DUFS_PORT=$(free_port)
    dufs "$DUFS_DIR" --bind 127.0.0.1 --port "$DUFS_PORT" --allow-upload --allow-delete >"$WORK/dufs.log" 2>&1 &
    DUFS_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$DUFS_PORT/" && break; sleep 0.1; done
}
dufs_serve

OURS_UP=() DUFS_UP=() OURS_GET=() DUFS_GET=()
for round in $(seq 1 "$ROUNDS"); do
    sync
    DUFS_UP+=("$(put_file "http://127.0.0.1:$DUFS_PORT/data-$round.bin" "$FILE")")
    OURS_UP+=("$(put_file "$BASE/bench/data-$round.bin" "$FILE" -H "$AUTH")")
    DUFS_GET+=("$(get_all "http://127.0.0.1:$DUFS_PORT/data-$round.bin" "$SIZE")")
    OURS_GET+=("$(get_all "$BASE/bench/data-$round.bin" "$SIZE" -H "$AUTH")")
    log "round $round: upload ours ${OURS_UP[-1]} / dufs ${DUFS_UP[-1]} MB/s; GET ours ${OURS_GET[-1]} / dufs ${DUFS_GET[-1]} MB/s"
done

log "GET again through sha256sum"
SHA_DOWN=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$BASE/bench/data-1.bin" | sha256sum | cut -d' ' -f1)
if [[ "$SHA_DOWN" == "$SHA_ORIG" ]]; then SHA_OK=yes; else SHA_OK="NO ($SHA_DOWN != $SHA_ORIG)"; fi
stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"
RSS_MIB=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$RSS_PEAK")

UP=$(median "${OURS_UP[@]}") DUFS_UP_M=$(median "${DUFS_UP[@]}")
GET=$(median "${OURS_GET[@]}") DUFS_GET_M=$(median "${DUFS_GET[@]}")
R_UP=$(ratio "$UP" "$DUFS_UP_M") R_GET=$(ratio "$GET" "$DUFS_GET_M")

report_start 40 44
report_row "machine" "$MACHINE"
report_row "file size, rounds" "$SIZE bytes (${SIZE_MB} MiB), $ROUNDS alternating"
report_row "upload (curl -T) MB/s, median (all)" "$UP (${OURS_UP[*]})"
report_row "dufs PUT MB/s, median (all)" "$DUFS_UP_M (${DUFS_UP[*]})"
report_row "ratio upload ours/dufs" "$R_UP"
report_row "GET (curl -> /dev/null) MB/s, median (all)" "$GET (${OURS_GET[*]})"
report_row "dufs GET MB/s, median (all)" "$DUFS_GET_M (${DUFS_GET[*]})"
report_row "ratio GET ours/dufs" "$R_GET"
report_row "download sha256 matches" "$SHA_OK"
report_row "host VmHWM after start / peak" "$(kb_to_mib "$RSS_START") / $RSS_MIB MiB"
[[ "$SHA_OK" == yes ]] || exit 1
check_target "GET ours/dufs" "$R_GET" ">=" 0.8
check_target "upload ours/dufs" "$R_UP" ">=" 1.2
# The RSS target is the dev host's (real Spin's own memory is reported, not judged).
[[ "$HOST" != devhost ]] || check_target "peak RSS MiB" "$RSS_MIB" "<" 100
finish_targets
