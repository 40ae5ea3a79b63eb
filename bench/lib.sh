# Shared helpers of the benchmark scripts (bench/*.sh); sourced, not run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets ROOT, TARGET_DIR, DEVHOST and the common knobs (SKIP_BUILD, KEEP_TMP, CURL_MAX_TIME).
# `bench_init PREFIX` makes the work dir $WORK and installs the exit trap that stops every
# process recorded in SAMPLER_PID, DUFS_PID, ORIGIN_PID and DEVHOST_PID and removes $WORK
# (unless KEEP_TMP=1).

SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
# Extra Spin variables for the app, space-separated NAME=VALUE (e.g. VARIABLES="verify_reads=true").
VARIABLES=${VARIABLES:-}
# Which host runs the app: `devhost` (default) or `spin` (real Spin: $SPIN_BIN, else `spin` on PATH).
HOST=${HOST:-devhost}
# Set to 1 to report missed targets without failing (the default fails loudly, exit status 3).
ALLOW_MISS=${ALLOW_MISS:-0}
CURL_MAX_TIME=${CURL_MAX_TIME:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DEVHOST=${DEVHOST_BIN:-$TARGET_DIR/release/devhost}

WORK=""
DEVHOST_PID=""
DUFS_PID=""
ORIGIN_PID=""
S3_PID=""
SAMPLER_PID=""

log() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# bytes, seconds -> MB/s (10^6 bytes/s)
mbps() { python3 -c 'import sys; b, s = float(sys.argv[1]), float(sys.argv[2]); print(f"{b / s / 1e6:.1f}" if s > 0 else "inf")' "$1" "$2"; }

# a / b with two decimals, "-" when either is not a number (or b is 0).
ratio() { python3 -c 'import sys; a, b = sys.argv[1], sys.argv[2]
try: print(f"{float(a) / float(b):.2f}")
except (ValueError, ZeroDivisionError): print("-")' "$1" "$2"; }

# tree_pids PID: PID and all its descendants (real Spin runs the trigger in a child process).
tree_pids() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null); do tree_pids "$child"; done
}

# tree_sum PID AWK-PROGRAM FILE: the AWK-PROGRAM's number from /proc/<pid>/FILE, summed over
# PID's process tree.
tree_sum() {
    local pid total=0 v
    for pid in $(tree_pids "$1"); do
        v=$(awk "$2" "/proc/$pid/$3" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# vmhwm_kb PID: peak RSS (VmHWM) of PID's process tree, summed, in kB.
vmhwm_kb() { tree_sum "$1" '/^VmHWM:/ {print $2}' status; }

# cpu_ticks PID: user + system clock ticks of PID's process tree.
cpu_ticks() { tree_sum "$1" '{print $14 + $15}' stat; }

kb_to_mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f} MiB")' "$1"; }

bytes_to_mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 2**20:.1f} MiB")' "$1"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# stop_pid PID: kill and reap PID if it is still running ("" is ignored).
stop_pid() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local status=$?
    stop_pid "$SAMPLER_PID"
    stop_pid "$DUFS_PID"
    stop_pid "$ORIGIN_PID"
    stop_pid "$S3_PID"
    stop_pid "$DEVHOST_PID"
    local pid
    for pid in ${EXTRA_PIDS:-}; do stop_pid "$pid"; done
    if [[ -n "$WORK" ]]; then
        if [[ "$KEEP_TMP" == 1 ]]; then
            echo "kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}

# bench_init PREFIX: $WORK := a fresh ${TMPDIR:-/tmp}/PREFIX.XXXXXX, cleaned up on exit.
bench_init() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# build_release: the release wasm components and the dev host (unless SKIP_BUILD=1); then checks
# that the dev host binary is there.
build_release() {
    if [[ "$SKIP_BUILD" != 1 ]]; then
        log "building release wasm components and the dev host"
        (cd "$ROOT" && cargo xtask build-wasm && cargo build --release -p devhost)
    fi
    [[ -x "$DEVHOST" ]] || die "dev host binary not found at $DEVHOST"
}

# require_tools TOOL...: dies unless every TOOL is on PATH.
require_tools() {
    local tool
    for tool in "$@"; do command -v "$tool" >/dev/null || die "$tool is required"; done
}

# mint_token SCOPE...: a fresh token `bench` with SCOPEs; sets TOKEN, API_TOKENS (the
# `api_tokens` variable: its hash only) and AUTH (the Authorization header).
mint_token() {
    local hash scopes="" scope
    TOKEN="dl_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    hash=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
    for scope in "$@"; do scopes+="${scopes:+,}\"$scope\""; done
    API_TOKENS="[{\"name\":\"bench\",\"sha256\":\"$hash\",\"scopes\":[$scopes]}]"
    AUTH="Authorization: Bearer $TOKEN"
}

# make_test_file: $WORK/serve and $WORK/state, and FILE := $WORK/serve/data.bin of SIZE_MB MiB
# of random bytes; sets SIZE (bytes) and SHA_ORIG.
make_test_file() {
    mkdir -p "$WORK/serve" "$WORK/state"
    FILE="$WORK/serve/data.bin"
    log "creating a ${SIZE_MB} MiB random file"
    head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$FILE"
    SIZE=$(stat -c %s "$FILE")
    SHA_ORIG=$(sha256sum "$FILE" | cut -d' ' -f1)
}

# start_devhost [DEVHOST-ARG...]: `devhost up` of spin.toml on 127.0.0.1:0 with state dir
# $WORK/state, the minted API_TOKENS and the extra arguments (e.g. `--variable k=v`); waits for
# its `Serving http://...` line. Sets DEVHOST_PID, BASE and RSS_START (VmHWM in kB). A second
# host at once: set HOST_TAG (its state dir and logs get the suffix).
start_devhost() {
    log "starting the app on $HOST${VARIABLES:+ with $VARIABLES}${HOST_TAG:+ ($HOST_TAG)} $*"
    local extra=() var tag=${HOST_TAG:+-$HOST_TAG}
    mkdir -p "$WORK/state$tag"
    for var in $VARIABLES; do extra+=(--variable "$var"); done
    case "$HOST" in
        devhost)
            "$DEVHOST" up --from "$ROOT/spin.toml" --listen 127.0.0.1:0 --state-dir "$WORK/state$tag" \
                --variable "api_tokens=$API_TOKENS" "${extra[@]}" "$@" >"$WORK/devhost$tag.out" 2>"$WORK/devhost$tag.err" &
            ;;
        spin)
            # Spin picks no free port itself; `exec` so the recorded pid is Spin's (for RSS).
            (cd "$ROOT" && exec "$(spin_bin)" up --from "$ROOT/spin.toml" --listen "127.0.0.1:$(free_port)" \
                --state-dir "$WORK/state$tag" --variable "api_tokens=$API_TOKENS" "${extra[@]}" "$@") \
                >"$WORK/devhost$tag.out" 2>"$WORK/devhost$tag.err" &
            ;;
        *) die "HOST must be devhost or spin, not $HOST" ;;
    esac
    DEVHOST_PID=$!
    BASE=""
    for _ in $(seq 1 1800); do
        BASE=$(grep -o 'Serving http://127\.0\.0\.1:[0-9]*' "$WORK/devhost$tag.out" 2>/dev/null | head -n1 | sed 's/^Serving //' || true)
        [[ -n "$BASE" ]] && break
        kill -0 "$DEVHOST_PID" 2>/dev/null || { cat "$WORK/devhost$tag.out" "$WORK/devhost$tag.err" >&2; die "the dev host exited"; }
        sleep 0.1
    done
    [[ -n "$BASE" ]] || { cat "$WORK/devhost$tag.err" >&2; die "the dev host did not print its Serving line"; }
    # Spin prints the line before its listener answers; wait until it does.
    for _ in $(seq 1 300); do
        curl -s -o /dev/null --max-time 2 "$BASE/" && break
        sleep 0.1
    done
    RSS_START=$(vmhwm_kb "$DEVHOST_PID")
    log "dev host at $BASE (pid $DEVHOST_PID, VmHWM ${RSS_START} kB)"
}

# spin_bin: the real Spin binary ($SPIN_BIN, else `spin` on PATH).
spin_bin() {
    local bin=${SPIN_BIN:-$(command -v spin || true)}
    [[ -x "$bin" ]] || die "HOST=spin needs SPIN_BIN or spin on PATH"
    echo "$bin"
}

# print_machine: what the figures were measured on (CPU model, cores, host and its version).
print_machine() {
    local cpu host_version
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    case "$HOST" in
        spin) host_version=$("$(spin_bin)" --version 2>/dev/null | head -n1 | awk '{print $1, $2}') ;;
        *) host_version="dev host ($DEVHOST)" ;;
    esac
    MACHINE="$cpu, $(nproc) cores; $host_version"
    log "machine: $MACHINE"
}

# check_target NAME VALUE OP LIMIT: records whether VALUE meets `OP LIMIT` (OP is >= or <);
# a value that is not a number counts as missed. `finish_targets` reports and fails.
TARGET_ROWS=()
TARGET_MISSED=0
check_target() {
    local verdict
    verdict=$(python3 -c 'import sys; v, op, t = sys.argv[1], sys.argv[2], float(sys.argv[3])
try: v = float(v)
except ValueError: print("MISSED (no figure)"); sys.exit()
print("met" if (v >= t if op == ">=" else v < t) else "MISSED")' "$2" "$3" "$4")
    TARGET_ROWS+=("$1: $2 (target $3 $4) $verdict")
    [[ "$verdict" == met ]] || TARGET_MISSED=1
}

# finish_targets: prints every target and its verdict; exits 3 when one was missed (unless
# ALLOW_MISS=1), so a regression cannot pass unnoticed.
finish_targets() {
    local row
    printf '\ntargets (%s):\n' "$MACHINE"
    for row in "${TARGET_ROWS[@]}"; do printf '  %s\n' "$row"; done
    if [[ "$TARGET_MISSED" == 1 ]]; then
        printf '\n*** TARGET MISSED ***\n' >&2
        [[ "$ALLOW_MISS" == 1 ]] || exit 3
    fi
}

# median VALUE...: the median, one decimal.
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.1f}")' "$@"; }

# start_rss_sampler: samples the dev host's VmHWM into $WORK/rss.peak in the background, in case
# the process dies mid-run.
start_rss_sampler() {
    ( peak=0; while kill -0 "$DEVHOST_PID" 2>/dev/null; do
          v=$(vmhwm_kb "$DEVHOST_PID"); [[ "${v:-0}" -gt "$peak" ]] && { peak=$v; echo "$peak" >"$WORK/rss.peak"; }
          sleep 0.2
      done ) &
    SAMPLER_PID=$!
}

# stop_rss_sampler NOW_KB: stops the sampler; RSS_PEAK := the highest VmHWM it saw, at least
# NOW_KB (a reading taken just now).
stop_rss_sampler() {
    local now=$1
    RSS_PEAK=$(cat "$WORK/rss.peak" 2>/dev/null || echo "$now")
    if [[ "$now" -gt "$RSS_PEAK" ]]; then RSS_PEAK=$now; fi
    stop_pid "$SAMPLER_PID"
    SAMPLER_PID=""
}

# maybe_install_dufs: `cargo install dufs --locked` when dufs is missing and INSTALL_DUFS=1.
maybe_install_dufs() {
    if ! command -v dufs >/dev/null && [[ "${INSTALL_DUFS:-0}" == 1 ]]; then
        log "installing dufs (cargo install dufs --locked)"
        cargo install dufs --locked >&2
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
}

# start_dufs [DUFS-ARG...]: dufs serving $WORK/serve on a free 127.0.0.1 port, with the extra
# arguments; waits until it answers. Sets DUFS_PID and DUFS_PORT.
start_dufs() {
    DUFS_PORT=$(free_port)
    dufs "$WORK/serve" --bind 127.0.0.1 --port "$DUFS_PORT" "$@" >"$WORK/dufs.log" 2>&1 &
    DUFS_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$DUFS_PORT/" && break
        sleep 0.1
    done
}

# report_start W1 W2: the header of a two-column report table (column widths W1 and W2);
# report_row METRIC VALUE: one row of it.
report_start() {
    REPORT_FORMAT="| %-${1}s | %-${2}s |\n"
    printf '\n'
    printf "$REPORT_FORMAT" "metric" "value"
    printf '|%s|%s|\n' "$(printf '%*s' "$(($1 + 2))" '' | tr ' ' -)" "$(printf '%*s' "$(($2 + 2))" '' | tr ' ' -)"
}
report_row() { printf "$REPORT_FORMAT" "$1" "$2"; }

# put_file URL FILE [curl args]: uploads FILE with `curl -T`, prints MB/s; dies unless 200/201
# with every byte sent.
put_file() {
    local url=$1 file=$2 code t bytes size
    shift 2
    size=$(stat -c %s "$file")
    read -r code t bytes < <(curl -sS --max-time "$CURL_MAX_TIME" -H 'Expect:' "$@" -T "$file" \
        -o "$WORK/put.out" -w '%{http_code} %{time_total} %{size_upload}\n' "$url")
    [[ "$code" == 201 || "$code" == 200 ]] || { cat "$WORK/put.out" >&2; tail -n 20 "$WORK/devhost.err" >&2 || true; die "PUT $url answered $code"; }
    [[ "$bytes" == "$size" ]] || die "PUT $url sent $bytes of $size bytes"
    mbps "$size" "$t"
}

# get_all URL SIZE [curl args]: downloads to /dev/null, prints MB/s; dies unless 200 with SIZE
# bytes.
get_all() {
    local url=$1 size=$2 code t bytes
    shift 2
    read -r code t bytes < <(curl -sS --max-time "$CURL_MAX_TIME" "$@" -o /dev/null \
        -w '%{http_code} %{time_total} %{size_download}\n' "$url")
    [[ "$code" == 200 && "$bytes" == "$size" ]] || die "GET $url answered $code with $bytes of $size bytes"
    mbps "$size" "$t"
}

# start_s3 PREFIX: s3s-fs (S3S_FS_BIN, else on PATH, else ~/.cargo/bin) on a free 127.0.0.1 port
# with bucket `bench` (keys bench / bench-secret) under $WORK/s3, and VARIABLES += the app
# variables that keep file bytes there under key prefix PREFIX. Sets S3_PID and S3_PORT.
start_s3() {
    local s3s_fs=${S3S_FS_BIN:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
    [[ -x "$s3s_fs" ]] || die "s3s-fs is needed: cargo install s3s-fs --version 0.14.1 --locked --features binary"
    S3_PORT=$(free_port)
    mkdir -p "$WORK/s3/bench"
    "$s3s_fs" --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret "$WORK/s3" \
        >"$WORK/s3s.log" 2>&1 &
    S3_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break; sleep 0.1; done
    VARIABLES="$VARIABLES storage_backend=s3 s3_endpoint=http://127.0.0.1:$S3_PORT s3_region=us-east-1"
    VARIABLES="$VARIABLES s3_bucket=bench s3_access_key_id=bench s3_secret_access_key=bench-secret"
    VARIABLES="$VARIABLES s3_path_style=true${1:+ s3_prefix=$1}"
}
