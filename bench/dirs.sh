#!/usr/bin/env bash
# Directories that scale: the cost of an upload, a delete and a listing page in one directory
# of 1,000 entries against the same in a directory of 100,000, in the same run (the anchor is
# the small directory), then the directory index alone up to 1,000,000 entries in memory.
#
#   bench/dirs.sh                       # KV chunks, dev host, 1,000 -> 100,000 entries
#   STORAGE=s3 bench/dirs.sh            # file bytes in an s3s-fs bucket
#   HOST=spin SPIN_BIN=../shared/spin/spin bench/dirs.sh
#   LARGE=20000 SKIP_BUILD=1 bench/dirs.sh   # a quicker look
#
# CLIENTS (8) clients with keep-alive connections upload 1-byte files. At SMALL (1,000) and again
# at LARGE (100,000) entries it times BATCH (1,000) uploads of new names spread over the whole
# directory, BATCH deletes of them, and listing pages of 100 from a cursor in the middle; the
# figures are per-operation costs and the ratio large/small. Target: an upload and a delete cost
# at most 1.2x at 100,000 what they cost at 1,000 (exit 3 when missed, unless ALLOW_MISS=1).
# Then the core's ignored test `a_million_entries` (release build) grows one directory index in
# memory to 1,000,000 entries, printing the cost of an insert and of a listing page at 1,000,
# 100,000 and 1,000,000, and checks every entry is listed once, in order (MILLION=0 skips it).
# Everything runs on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail

SMALL=${SMALL:-1000}
LARGE=${LARGE:-100000}
BATCH=${BATCH:-1000}
CLIENTS=${CLIENTS:-8}
STORAGE=${STORAGE:-kv}
MILLION=${MILLION:-1}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init downlink-bench-dirs
build_release
require_tools curl python3
print_machine
mint_token file.read file.write
mkdir -p "$WORK/state"

if [[ "$STORAGE" == s3 ]]; then start_s3; fi
start_devhost
start_rss_sampler

log "filling /big/ to $SMALL and then $LARGE entries with $CLIENTS clients (1-byte files)"
python3 - "$BASE" "$TOKEN" "$SMALL" "$LARGE" "$BATCH" "$CLIENTS" >"$WORK/dirs.out" <<'PY'
import http.client, json, sys, threading, time, urllib.parse

base, token, small, large, batch, clients = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
host, port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
auth = {"Authorization": f"Bearer {token}"}

def name(i):
    return f"f-{i:07d}.txt"

def run(method, paths, expect):
    """Sends one request per path over `clients` keep-alive connections; returns seconds."""
    chunks = [paths[c::clients] for c in range(clients)]
    errors = []
    def worker(chunk):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        for path in chunk:
            body = b"x" if method == "PUT" else None
            conn.request(method, path, body=body, headers=auth)
            resp = conn.getresponse()
            resp.read()
            if resp.status not in expect:
                errors.append(f"{method} {path}: {resp.status}")
                return
        conn.close()
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    if errors:
        sys.exit("; ".join(errors[:5]))
    return time.perf_counter() - started

def list_pages(cursor_index, pages):
    """Times `pages` listing pages of 100 from the name at `cursor_index`; checks them."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    cursor, started, seen = name(cursor_index), time.perf_counter(), 0
    for _ in range(pages):
        conn.request("GET", f"/big/?limit=100&cursor={urllib.parse.quote(cursor)}", headers=auth)
        resp = conn.getresponse()
        page = json.loads(resp.read())
        if resp.status != 200 or len(page["entries"]) != 100:
            sys.exit(f"listing page after {cursor}: {resp.status} {len(page.get('entries', []))}")
        cursor = page["next_cursor"]
        seen += 1
    return (time.perf_counter() - started) / seen

def measure(size, fill_from):
    # Fill with even numbers 0, 2, ... so the measured odd names land all over the directory.
    run("PUT", [f"/big/{name(2 * i)}" for i in range(fill_from, size)], {201})
    step = max(1, size // batch)
    probe = [f"/big/{name(2 * (i * step) + 1)}" for i in range(batch)]
    put = run("PUT", probe, {201}) / batch
    delete = run("DELETE", probe, {200}) / batch
    listing = list_pages(size // 2 * 2, 3)
    return {"entries": size, "upload_ms": put * 1e3 * clients, "delete_ms": delete * 1e3 * clients,
            "upload_per_s": 1 / put, "delete_per_s": 1 / delete, "list_page_ms": listing * 1e3}

small_figures = measure(small, 0)
print(json.dumps(small_figures), flush=True)
large_figures = measure(large, small)
print(json.dumps(large_figures), flush=True)

# The whole listing of the large directory, streamed.
conn = http.client.HTTPConnection(host, port, timeout=600)
started = time.perf_counter()
conn.request("GET", "/big/", headers=auth)
resp = conn.getresponse()
whole = json.loads(resp.read())
if resp.status != 200 or len(whole["entries"]) != large:
    sys.exit(f"whole listing: {resp.status}, {len(whole.get('entries', []))} of {large} entries")
print(json.dumps({"whole_listing_s": time.perf_counter() - started}), flush=True)
PY
stop_rss_sampler "$(vmhwm_kb "$DEVHOST_PID")"

field() { python3 -c 'import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; r = [x for x in rows if sys.argv[2] in x][int(sys.argv[3])]; print(f"{r[sys.argv[2]]:.2f}")' "$WORK/dirs.out" "$1" "$2"; }
UP_SMALL=$(field upload_ms 0); UP_LARGE=$(field upload_ms 1)
DEL_SMALL=$(field delete_ms 0); DEL_LARGE=$(field delete_ms 1)
LIST_SMALL=$(field list_page_ms 0); LIST_LARGE=$(field list_page_ms 1)
WHOLE=$(field whole_listing_s 0)

if [[ "$MILLION" != 0 ]]; then
    log "the directory index alone, in memory, up to 1,000,000 entries (release build)"
    (cd "$ROOT" && cargo test -q --release -p downlink-core --lib -- --ignored a_million_entries --nocapture) \
        | grep '^index of' >"$WORK/scale.out"
fi

report_start 44 26
report_row "storage / clients" "$STORAGE / $CLIENTS"
report_row "upload, ms per request at $SMALL entries" "$UP_SMALL ($(field upload_per_s 0)/s)"
report_row "upload, ms per request at $LARGE entries" "$UP_LARGE ($(field upload_per_s 1)/s)"
report_row "delete, ms per request at $SMALL entries" "$DEL_SMALL ($(field delete_per_s 0)/s)"
report_row "delete, ms per request at $LARGE entries" "$DEL_LARGE ($(field delete_per_s 1)/s)"
report_row "listing page of 100, ms at $SMALL" "$LIST_SMALL"
report_row "listing page of 100, ms at $LARGE" "$LIST_LARGE"
report_row "whole listing of $LARGE entries, s" "$WHOLE"
report_row "host peak RSS" "$(kb_to_mib "$RSS_PEAK")"
[[ -s "$WORK/scale.out" ]] && sed 's/^/  /' "$WORK/scale.out"

UP_RATIO=$(ratio "$UP_LARGE" "$UP_SMALL")
DEL_RATIO=$(ratio "$DEL_LARGE" "$DEL_SMALL")
check_target "upload cost at $LARGE / at $SMALL entries" "$UP_RATIO" "<" 1.2
check_target "delete cost at $LARGE / at $SMALL entries" "$DEL_RATIO" "<" 1.2
finish_targets
