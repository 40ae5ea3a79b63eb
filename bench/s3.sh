#!/usr/bin/env bash
# Throughput of the S3 backend: file bytes in an s3s-fs bucket, against the same transfers done
# directly on the same server (presigned URLs from boto3, fetched with curl) in the same run.
#
#   bench/s3.sh                         # 1 GiB file and a 20 x 50 MiB ZIP, 3 alternating rounds
#   SIZE_MB=256 ROUNDS=5 bench/s3.sh
#   HOST=spin SPIN_BIN=../shared/spin/spin bench/s3.sh   # the same app under real Spin
#   SKIP_BUILD=1 bench/s3.sh            # reuse the existing release builds
#
# Needs s3s-fs (`cargo install s3s-fs --version 0.14.1 --locked --features binary`) and boto3
# (`pip install boto3`) for the presigned anchor. Each round uploads the same random SIZE_MB file
# directly (presigned PUT) and through Downlink (`curl -T`), then GETs it both ways to /dev/null.
# The ZIP round prepares ZIP_FILES files of ZIP_MB MiB and compares our STORE ZIP with the same
# bytes fetched directly, one presigned GET per object back to back. Reports medians, the spread,
# the ratios ours/direct, the host's peak RSS, and fails (exit 3) when a target is missed: GET
# and ZIP >= 0.8x direct, upload >= 0.6x direct, RSS < 100 MiB (dev host only). MB/s means 10^6
# bytes per second. Everything runs on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
ZIP_FILES=${ZIP_FILES:-20}
ZIP_MB=${ZIP_MB:-50}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench-s3

python3 -c 'import boto3' 2>/dev/null || die "boto3 is needed for the presigned anchor: pip install boto3"
build_release
require_tools curl python3
print_machine

mint_token file.read file.write
make_test_file

start_s3 ours/
start_devhost
start_rss_sampler

# presign METHOD KEY: a presigned URL for the bench bucket on the same server.
presign() {
    python3 - "$1" "$2" "$S3_PORT" <<'PY'
import sys, boto3
from botocore.config import Config
method, key, port = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench-secret",
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
op = {"PUT": "put_object", "GET": "get_object"}[method]
print(s3.generate_presigned_url(op, Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))
PY
}

OURS_UP=() DIRECT_UP=() OURS_GET=() DIRECT_GET=()
for round in $(seq 1 "$ROUNDS"); do
    sync
    DIRECT_UP+=("$(put_file "$(presign PUT "direct/data-$round.bin")" "$FILE")")
    OURS_UP+=("$(put_file "$BASE/bench/data-$round.bin" "$FILE" -H "$AUTH")")
    DIRECT_GET+=("$(get_all "$(presign GET "direct/data-$round.bin")" "$SIZE")")
    OURS_GET+=("$(get_all "$BASE/bench/data-$round.bin" "$SIZE" -H "$AUTH")")
    log "round $round: upload ours ${OURS_UP[-1]} / direct ${DIRECT_UP[-1]} MB/s; GET ours ${OURS_GET[-1]} / direct ${DIRECT_GET[-1]} MB/s"
done
SHA_DOWN=$(curl -sS --fail --max-time "$CURL_MAX_TIME" -H "$AUTH" "$BASE/bench/data-1.bin" | sha256sum | cut -d' ' -f1)
if [[ "$SHA_DOWN" == "$SHA_ORIG" ]]; then SHA_OK=yes; else SHA_OK="NO ($SHA_DOWN != $SHA_ORIG)"; fi
[[ "$(sha256sum "$WORK/s3/bench/ours/bench/data-1.bin" | cut -d' ' -f1)" == "$SHA_ORIG" ]] || SHA_OK="NO (the object differs)"

log "ZIP: $ZIP_FILES files of $ZIP_MB MiB"
mkdir -p "$WORK/set"
ZIP_TOTAL=0
for i in $(seq 1 "$ZIP_FILES"); do
    head -c "$((ZIP_MB * 1024 * 1024))" /dev/urandom >"$WORK/set/f$i.bin"
    put_file "$BASE/bench/set/f$i.bin" "$WORK/set/f$i.bin" -H "$AUTH" >/dev/null
    ZIP_TOTAL=$((ZIP_TOTAL + $(stat -c %s "$WORK/set/f$i.bin")))
done
PREPARE=$(curl -sS --max-time 60 -H "$AUTH" -H 'content-type: application/json' \
    -d '{"Filelist": ["/bench/set"]}' "$BASE/api/download/prepare")
ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["rslt"])' "$PREPARE" 2>/dev/null) \
    || die "prepare answered $PREPARE"
OURS_ZIP=() DIRECT_ZIP=()
for round in $(seq 1 "$ROUNDS"); do
    urls=()
    for i in $(seq 1 "$ZIP_FILES"); do urls+=("$(presign GET "ours/bench/set/f$i.bin")"); done
    start=$(date +%s.%N)
    for url in "${urls[@]}"; do curl -sS --fail --max-time "$CURL_MAX_TIME" -o /dev/null "$url"; done
    DIRECT_ZIP+=("$(mbps "$ZIP_TOTAL" "$(python3 -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$start")")")
    read -r code t bytes < <(curl -sS --max-time "$CURL_MAX_TIME" -X POST -H "$AUTH" -o /dev/null \
        -w '%{http_code} %{time_total} %{size_download}\n' "$BASE/api/download/multi?id=$ID")
    [[ "$code" == 200 ]] || die "ZIP answered $code"
    OURS_ZIP+=("$(mbps "$ZIP_TOTAL" "$t")")
    log "round $round: ZIP ours ${OURS_ZIP[-1]} / direct ${DIRECT_ZIP[-1]} MB/s (content bytes)"
done

stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"
RSS_MIB=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$RSS_PEAK")
UP=$(median "${OURS_UP[@]}") DIRECT_UP_M=$(median "${DIRECT_UP[@]}")
GET=$(median "${OURS_GET[@]}") DIRECT_GET_M=$(median "${DIRECT_GET[@]}")
ZIP=$(median "${OURS_ZIP[@]}") DIRECT_ZIP_M=$(median "${DIRECT_ZIP[@]}")
R_UP=$(ratio "$UP" "$DIRECT_UP_M") R_GET=$(ratio "$GET" "$DIRECT_GET_M") R_ZIP=$(ratio "$ZIP" "$DIRECT_ZIP_M")

report_start 44 44
report_row "machine" "$MACHINE"
report_row "file size, rounds" "$SIZE bytes (${SIZE_MB} MiB), $ROUNDS alternating"
report_row "upload through Downlink MB/s, median (all)" "$UP (${OURS_UP[*]})"
report_row "direct presigned PUT MB/s, median (all)" "$DIRECT_UP_M (${DIRECT_UP[*]})"
report_row "ratio upload ours/direct" "$R_UP"
report_row "GET through Downlink MB/s, median (all)" "$GET (${OURS_GET[*]})"
report_row "direct presigned GET MB/s, median (all)" "$DIRECT_GET_M (${DIRECT_GET[*]})"
report_row "ratio GET ours/direct" "$R_GET"
report_row "STORE ZIP ${ZIP_FILES}x${ZIP_MB} MiB MB/s, median (all)" "$ZIP (${OURS_ZIP[*]})"
report_row "direct GETs of the same objects MB/s" "$DIRECT_ZIP_M (${DIRECT_ZIP[*]})"
report_row "ratio ZIP ours/direct" "$R_ZIP"
report_row "download and object sha256 match" "$SHA_OK"
report_row "host VmHWM after start / peak" "$(kb_to_mib "$RSS_START") / $RSS_MIB MiB"
[[ "$SHA_OK" == yes ]] || exit 1
check_target "GET ours/direct" "$R_GET" ">=" 0.8
check_target "ZIP ours/direct" "$R_ZIP" ">=" 0.8
check_target "upload ours/direct" "$R_UP" ">=" 0.6
[[ "$HOST" != devhost ]] || check_target "peak RSS MiB" "$RSS_MIB" "<" 100
finish_targets
