#!/usr/bin/env python3
"""Writes openapi.json beside this file: the OpenAPI 3.1 document of Downlink, which the console
component serves at GET /api/openapi.json.

Edit this script, not the JSON, then run `python3 components/console/openapi.py`; tests/tests/web.rs
checks the JSON is what this script writes, validates it and runs schemathesis with it against
the app. Everything here was read from the code (components/*/src, crates/downlink-core/src).
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")

U64_MAX = 18446744073709551615
# Query values travel as text: a value of any JSON scalar type reads as its text, which these accept.
ANY_SCALAR = ["string", "number", "integer", "boolean", "null"]
CTRL = "\\u0000-\\u001F\\u007F-\\u009F"
# One path segment: not `.`/`..`, no `/`, `\` or control characters (Rust `char::is_control`).
SEG_CHARS = f"[^/\\\\{CTRL}]"
SEG = f"(?!\\.\\.?(?:/|$)){SEG_CHARS}{{1,255}}"
# A whole storage path as the JSON/query parameters take it (already decoded).
PATH_PATTERN = f"^(?:/|/?{SEG}(?:/{SEG})*/?)$"

ERROR_CODES = [
    "INVALID_PATH", "INVALID_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "METHOD_NOT_ALLOWED",
    "CONFLICT", "GONE", "PRECONDITION_FAILED", "PAYLOAD_TOO_LARGE", "FILE_TOO_LARGE", "RESPONSE_TOO_LARGE",
    "RANGE_NOT_SATISFIABLE", "TOO_MANY_DOWNLOADS", "QUOTA_EXCEEDED", "INTERNAL_ERROR", "STORAGE_ERROR",
    "BAD_GATEWAY", "NO_TOKENS_CONFIGURED", "INVALID_URL", "DOMAIN_BLOCKED", "DOWNLOAD_FORBIDDEN",
    "REMOTE_FILE_NOT_FOUND", "NETWORK_ERROR", "DOWNLOAD_TIMEOUT", "CHECKSUM_MISMATCH",
]
# crates/downlink-core/src/error.rs, ErrorCode::status
STATUS_CODES = {
    400: ["INVALID_PATH", "INVALID_REQUEST", "INVALID_URL"],
    401: ["UNAUTHORIZED"],
    403: ["FORBIDDEN", "DOMAIN_BLOCKED", "DOWNLOAD_FORBIDDEN"],
    404: ["NOT_FOUND"],
    405: ["METHOD_NOT_ALLOWED"],
    409: ["CONFLICT"],
    410: ["GONE"],
    412: ["PRECONDITION_FAILED"],
    413: ["PAYLOAD_TOO_LARGE", "FILE_TOO_LARGE", "RESPONSE_TOO_LARGE"],
    416: ["RANGE_NOT_SATISFIABLE"],
    422: ["CHECKSUM_MISMATCH"],
    429: ["TOO_MANY_DOWNLOADS", "QUOTA_EXCEEDED"],
    500: ["INTERNAL_ERROR", "STORAGE_ERROR"],
    502: ["BAD_GATEWAY", "REMOTE_FILE_NOT_FOUND", "NETWORK_ERROR"],
    503: ["NO_TOKENS_CONFIGURED"],
    504: ["DOWNLOAD_TIMEOUT"],
}


def ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


def sref(name):
    return ref("schemas", name)


def err_schema(*codes):
    """The envelope restricted to some codes."""
    return {"allOf": [sref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}


def json_content(schema):
    return {"application/json": {"schema": schema}}


def error_response(description, *codes, headers=None):
    r = {"description": description, "content": json_content(err_schema(*codes))}
    if headers:
        r["headers"] = headers
    return r


def hdr(name):
    return ref("headers", name)


def resp(name):
    return ref("responses", name)


def scope_desc(scope):
    if scope is None:
        return "No token needed."
    return f"Scope: `{scope}` (or `admin`)."


def security(scope):
    if scope is None:
        return []
    return [{"bearerAuth": [scope]}]


def common_errors(gateway=False, forbidden=True):
    r = {"401": resp("Unauthorized")}
    if forbidden:
        r["403"] = resp("Forbidden")
    r["500"] = resp("InternalError")
    if gateway:
        r["502"] = resp("BadGateway")
    r["503"] = resp("NoTokensConfigured")
    return r


GATEWAY_SCOPES = ["file.read", "download.create", "download.read"]


def op(op_id, summary, description, scope, responses, parameters=None, request_body=None, tags=None):
    if scope == "gateway":
        o = op(op_id, summary, description, "file.read", responses, parameters, request_body, tags)
        o["description"] = o["description"].replace("Scope: `file.read` (or `admin`).", "Scope by query: "
                                                    "`file.read` (file access), `download.create` (`download=`), "
                                                    "`download.read` (`downloads=`, `download_history=`); `admin` "
                                                    "covers all.")
        o["security"] = [{"bearerAuth": [s]} for s in GATEWAY_SCOPES]
        o["x-required-scope"] = "file.read | download.create | download.read (by query)"
        return o
    o = {
        "operationId": op_id,
        "summary": summary,
        "description": (description + "\n\n" + scope_desc(scope)).strip(),
        "tags": tags or [],
        "security": security(scope),
    }
    if scope is not None:
        o["x-required-scope"] = scope
    if parameters:
        o["parameters"] = parameters
    if request_body:
        o["requestBody"] = request_body
    o["responses"] = {str(k): v for k, v in sorted(responses.items(), key=lambda kv: str(kv[0]))}
    return o


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------
schemas = {}

schemas["ErrorCode"] = {
    "type": "string",
    "description": "Machine-readable error code (`crates/downlink-core/src/error.rs`). Each code has one "
    "HTTP status: " + "; ".join(f"{s}: " + ", ".join(c) for s, c in STATUS_CODES.items()) + ".",
    "enum": ERROR_CODES,
}
schemas["Error"] = {
    "type": "object",
    "description": "The one error envelope every endpoint answers with: exactly "
    "`{\"success\":false,\"error\":\"CODE\",\"message\":\"…\"}`.",
    "required": ["success", "error", "message"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": False},
        "error": sref("ErrorCode"),
        "message": {"type": "string", "description": "Human-readable; never contains tokens or hashes."},
    },
}
schemas["StoragePathText"] = {
    "type": "string",
    "description": "A stored path as the app shows it: normalised, `/`-separated, no leading or trailing "
    "`/`; the empty string is the root directory.",
}
schemas["UnixTime"] = {"type": "integer", "minimum": 0, "description": "Unix time in seconds."}
schemas["ByteCount"] = {"type": "integer", "minimum": 0}
schemas["NullableByteCount"] = {"type": ["integer", "null"], "minimum": 0}
schemas["FileEntry"] = {
    "type": "object",
    "required": ["name", "type", "size", "modified", "content_type"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "type": {"const": "file"},
        "size": sref("ByteCount"),
        "modified": sref("UnixTime"),
        "content_type": {"type": "string", "description": "From the file extension when it was written."},
    },
}
schemas["DirEntry"] = {
    "type": "object",
    "required": ["name", "type"],
    "properties": {"name": {"type": "string", "minLength": 1}, "type": {"const": "dir"}},
}
schemas["Listing"] = {
    "type": "object",
    "description": "A directory listing (`crates/downlink-core/src/listing.rs`), entries in name order, streamed.",
    "required": ["path", "entries", "next_cursor"],
    "properties": {
        "path": sref("StoragePathText"),
        "entries": {
            "type": "array",
            "maxItems": 10000,
            "items": {"oneOf": [sref("FileEntry"), sref("DirEntry")]},
            "description": "At most `limit` entries when `limit` is given; the whole directory otherwise "
            "(then the array may be longer than `maxItems`).",
        },
        "next_cursor": {
            "type": ["string", "null"],
            "description": "The name this page ended at: pass it as `cursor` for the next page; `null` on "
            "the last page and always without `limit`.",
        },
    },
}
# maxItems only holds with a limit; keep the schema honest.
del schemas["Listing"]["properties"]["entries"]["maxItems"]
schemas["UploadResult"] = {
    "type": "object",
    "required": ["success", "path", "size", "crc32", "content_type", "etag"],
    "properties": {
        "success": {"const": True},
        "path": sref("StoragePathText"),
        "size": sref("ByteCount"),
        "crc32": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
        "content_type": {"type": "string"},
        "etag": {"type": "string", "pattern": '^"[^"]+"$', "description": "The new version's strong ETag."},
    },
}
schemas["DeleteResult"] = {
    "type": "object",
    "required": ["success", "path", "deleted_files"],
    "properties": {
        "success": {"const": True},
        "path": sref("StoragePathText"),
        "deleted_files": sref("ByteCount"),
        "deleted_dirs": {
            "type": "integer", "minimum": 0,
            "description": "Only when a directory tree was deleted (it counts the directory itself).",
        },
    },
}
schemas["DownloadStatus"] = {
    "type": "string",
    "enum": ["starting", "downloading", "completed", "failed", "cancelled"],
    "description": "`starting → downloading → completed | failed | cancelled`; the last three are final.",
}
schemas["DownloadId"] = {"type": "string", "format": "uuid", "description": "A random (v4) UUID."}
view_head = {
    "id": sref("DownloadId"),
    "filename": {"type": "string"},
    "file_path": {"type": "string", "description": "`directory/filename` (for a refused request: the best-effort path it asked for)."},
    "directory": sref("StoragePathText"),
    "url": {"type": "string", "description": "The URL, normalised (query included); a refused URL's credentials are `***`."},
}
schemas["ActiveDownload"] = {
    "type": "object",
    "description": "An item of the active-downloads lists: exactly the reference's fields.",
    "required": ["id", "filename", "file_path", "directory", "url", "status", "current_size", "expected_size",
                 "progress_percentage", "start_time"],
    "properties": {
        **view_head,
        "status": {"type": "string", "enum": ["starting", "downloading"]},
        "current_size": sref("ByteCount"),
        "expected_size": sref("NullableByteCount"),
        "progress_percentage": {"type": ["number", "null"], "minimum": 0, "maximum": 100,
                                "description": "One decimal; `null` while the size is unknown."},
        "start_time": sref("UnixTime"),
    },
}
schemas["HistoryEntry"] = {
    "type": "object",
    "description": "An ended download: the reference's fields plus `message`.",
    "required": ["id", "filename", "file_path", "directory", "url", "status", "total_bytes", "start_time",
                 "end_time", "error", "message"],
    "properties": {
        **view_head,
        "status": {"type": "string", "enum": ["completed", "failed", "cancelled"]},
        "total_bytes": {**schemas["NullableByteCount"], "description": "Stored size; `null` unless completed."},
        "start_time": sref("UnixTime"),
        "end_time": {"type": ["integer", "null"], "minimum": 0},
        "error": {"oneOf": [sref("ErrorCode"), {"type": "null"}], "description": "`null` unless failed."},
        "message": {"type": ["string", "null"], "description": "Why it failed or was cancelled."},
    },
}
schemas["DownloadDetail"] = {
    "type": "object",
    "description": "One download in any state: the union of the list items' fields.",
    "required": ["id", "filename", "file_path", "directory", "url", "status", "current_size", "expected_size",
                 "progress_percentage", "total_bytes", "start_time", "end_time", "error", "message"],
    "properties": {
        **view_head,
        "status": sref("DownloadStatus"),
        "current_size": sref("ByteCount"),
        "expected_size": sref("NullableByteCount"),
        "progress_percentage": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        "total_bytes": sref("NullableByteCount"),
        "start_time": sref("UnixTime"),
        "end_time": {"type": ["integer", "null"], "minimum": 0, "description": "`null` while running."},
        "error": {"oneOf": [sref("ErrorCode"), {"type": "null"}]},
        "message": {"type": ["string", "null"]},
    },
}
schemas["ActiveDownloads"] = {
    "type": "object",
    "required": ["downloads"],
    "properties": {"downloads": {"type": "array", "items": sref("ActiveDownload"),
                                 "description": "Oldest start first."}},
}
schemas["DownloadHistory"] = {
    "type": "object",
    "required": ["history", "next_cursor"],
    "properties": {
        "history": {"type": "array", "maxItems": 500, "items": sref("HistoryEntry"),
                    "description": "Most recently ended first."},
        "next_cursor": {"type": ["string", "null"], "pattern": "^[1-9][0-9]*$",
                        "description": "Opaque; pass as `cursor` for the next (older) page; `null`: none. A page may "
                        "be shorter than `limit` and still have one (at most 5,000 entries are examined per page)."},
    },
}
schemas["DownloadStarted"] = {
    "type": "object",
    "description": "`202` body of a started download (the reference's shape).",
    "required": ["download_id", "filename", "path", "success", "message", "error"],
    "properties": {
        "download_id": sref("DownloadId"),
        "filename": {"type": "string", "description": "The target name after collision handling (`name (1).ext`…)."},
        "path": {"type": "string"},
        "success": {"const": True},
        "message": {"const": "Download started"},
        "error": {"type": "null"},
    },
}
schemas["DownloadRefused"] = {
    "type": "object",
    "description": "A start refused after authentication, the switch and the target check: the reference's "
    "failure body plus `detail`, with the code's status. It is also recorded in history as `failed`.",
    "required": ["download_id", "filename", "path", "success", "message", "error", "detail"],
    "properties": {
        "download_id": sref("DownloadId"),
        "filename": {"type": "string"},
        "path": {"type": "string"},
        "success": {"const": False},
        "message": {"const": "Download failed"},
        "error": {"type": "string", "enum": ["INVALID_URL", "DOMAIN_BLOCKED", "INVALID_PATH", "INVALID_REQUEST",
                                             "TOO_MANY_DOWNLOADS"]},
        "detail": {"type": "string"},
    },
}
schemas["PrepareResult"] = {
    "type": "object",
    "required": ["rslt"],
    "properties": {"rslt": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                            "description": "The prepare id (128 random bits) for `/api/download/multi?id=`."}},
}
schemas["BandwidthUsage"] = {
    "type": "object",
    "required": ["principal", "bytes_sent", "quota_bytes", "remaining_bytes"],
    "properties": {
        "principal": {"type": "string", "description": "The token's name."},
        "bytes_sent": sref("ByteCount"),
        "quota_bytes": {**schemas["NullableByteCount"], "description": "`null`: no quota."},
        "remaining_bytes": {**schemas["NullableByteCount"], "description": "`null`: no quota."},
    },
}
schemas["GcReport"] = {
    "type": "object",
    "required": ["success", "orphan_chunks_deleted", "markers_deleted", "uploads_aborted", "claims_lost",
                 "files_relinked", "failures", "expired_plans_deleted"],
    "properties": {
        "success": {"const": True},
        **{k: sref("ByteCount") for k in ["orphan_chunks_deleted", "markers_deleted", "uploads_aborted",
                                           "claims_lost", "files_relinked", "failures", "expired_plans_deleted"]},
    },
}
schemas["Redirect"] = {
    "type": "object",
    "description": "Sent with a `302` when the answer exceeds the host's response cap (`max_response_bytes`) "
    "and the bytes are one object in the S3 bucket: a presigned URL valid 5 minutes.",
    "required": ["redirect", "reason"],
    "properties": {"redirect": {"type": "string", "format": "uri"}, "reason": {"type": "string"}},
}
schemas["StoragePath"] = {
    "type": "string",
    "description": "A path as a parameter or body value (already decoded): `/`-separated UTF-8, spaces "
    "allowed, one leading and one trailing `/` ignored, `/` alone is the root. Refused with "
    "`400 INVALID_PATH`: empty segments, `.`/`..`, control characters, backslashes, a segment over "
    "255 bytes, a path over 1,024 bytes or 32 segments.",
    "minLength": 1,
    "maxLength": 1024,
    "pattern": PATH_PATTERN,
}
schemas["FileList"] = {
    "description": "The paths to download: files, or directories meaning their files recursively (`/` is "
    "everything). 1 to 10,000 entries; duplicates collapse. A single string is a one-element list.",
    "oneOf": [
        {"type": "array", "minItems": 1, "maxItems": 10000, "items": sref("StoragePath")},
        sref("StoragePath"),
    ],
}
schemas["PrepareJson"] = {
    "type": "object",
    "description": "`{\"Filelist\": [...]}`; the key `Filelist[]` is accepted instead (HTTPie), not both. "
    "Other keys are ignored.",
    "properties": {"Filelist": sref("FileList"), "Filelist[]": sref("FileList")},
    "oneOf": [
        {"required": ["Filelist"], "not": {"required": ["Filelist[]"]}},
        {"required": ["Filelist[]"], "not": {"required": ["Filelist"]}},
    ],
}
schemas["PrepareForm"] = {
    "type": "object",
    "description": "Form fields `Filelist[]=` (repeated, as HTTPie `--form` sends them), values percent-decoded "
    "once with `+` as space. `Filelist=` and `Filelist[N]=` fields are read the same way (all such fields "
    "together are the list, at most 10,000); the schema names only `Filelist[]`, as it cannot count across "
    "keys. Other fields are ignored.",
    "required": ["Filelist[]"],
    "properties": {"Filelist[]": sref("FileList")},
    "propertyNames": {"anyOf": [{"const": "Filelist[]"}, {"not": {"pattern": "^Filelist(?:\\[[0-9]*\\])?$"}}]},
    "additionalProperties": {"type": "string"},
}

# ---- gateway query shapes (the gateway dispatches on which of these parameters is present) ----
schemas["FileQuery"] = {
    "type": "object",
    "title": "file or directory listing",
    "description": "No `download`, `downloads` or `download_history`: the `files` component. `limit` and "
    "`cursor` page a directory listing (ignored for a file).",
    "additionalProperties": False,
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 10000,
                  "description": "At most this many entries (`limit=` with no value is `400`)."},
        "cursor": {"type": ANY_SCALAR, "pattern": "^[^/]*$",
                   "description": "A previous page's `next_cursor` (a name: no `/`); empty = from the start."},
    },
}
URL_PATTERN = ("^https?://(?:[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\\.){1,4}[a-z]{2,12}"
               "(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~-]{0,40}){0,5}$")
schemas["StartDownloadQuery"] = {
    "type": "object",
    "title": "start a remote download",
    "description": "`download=URL`: the `download` component starts a server-side download into the path, "
    "which must be a directory (or not exist yet; a file is `409`).",
    "additionalProperties": False,
    "required": ["download"],
    "properties": {
        "download": {
            "type": "string",
            "maxLength": 2048,
            "pattern": URL_PATTERN,
            "examples": ["https://fuzz.invalid/data.csv"],
            "description": "Absolute `http`/`https` URL, at most 2,048 bytes. Refused with `INVALID_URL` "
            "(400): other schemes, credentials (`user:pw@`), backslashes, control characters, non-ASCII "
            "hosts, zone ids, bad ports, non-canonical numeric hosts. Refused with `DOMAIN_BLOCKED` (403): "
            "`self`, `*.spin.internal`, the app's own hosts, private/loopback/link-local targets and local "
            "names (unless `download_allow_private`), the block list, anything off a non-empty allow "
            "list. (The pattern is a simple subset of the accepted URLs.)",
        },
        "filename": {
            "type": ANY_SCALAR,
            "maxLength": 255,
            "pattern": f"^(?:|(?!\\.\\.?$){SEG_CHARS}+)$",
            "description": "Target file name: one valid path segment (else `400 INVALID_PATH`, never silently "
            "changed; at most 255 bytes of UTF-8). Empty or absent: the URL's last segment, sanitised "
            "(`download` if empty). Taken names get ` (1)`, ` (2)`…",
        },
        "timeout": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 300,
                    "description": "Deadline of the whole transfer in seconds (digits only)."},
        "sha256": {"type": "string", "pattern": "^(?:|[0-9a-fA-F]{64})$",
                   "description": "Expected SHA-256 (64 hex digits); a mismatch ends the download "
                   "`CHECKSUM_MISMATCH` and keeps nothing. Empty = none."},
    },
}
schemas["ActiveDownloadsQuery"] = {
    "type": "object",
    "title": "active downloads in this directory",
    "description": "`downloads` (any value, usually empty): the `downloads` component lists the downloads "
    "running into this directory.",
    "additionalProperties": False,
    "required": ["downloads"],
    "properties": {"downloads": {"type": ANY_SCALAR, "description": "Any value (ignored); pass an empty string."}},
}
schemas["HistoryQuery"] = {
    "type": "object",
    "title": "download history",
    "description": "`download_history` (any value, usually empty): the `history` component. On a "
    "non-root path only that directory's downloads are listed (as with `directory=`).",
    "additionalProperties": False,
    "required": ["download_history"],
    "properties": {
        "download_history": {"type": ANY_SCALAR, "description": "Any value (ignored); pass an empty string."},
        "limit": {"type": "integer", "minimum": 1, "maximum": U64_MAX, "default": 50,
                  "description": "Page size; values above 500 are capped at 500."},
        "cursor": {"type": "integer", "minimum": 1, "maximum": U64_MAX,
                   "description": "A previous page's `next_cursor`."},
        "directory": {"type": ANY_SCALAR, "maxLength": 1024, "pattern": "^$|" + PATH_PATTERN[1:-1].join(["^(?:", ")$"]),
                      "description": "Only downloads into this directory (overrides the request path); empty = "
                      "absent. " + schemas["StoragePath"]["description"]},
    },
}


DISPATCH = ["download", "downloads", "download_history"]
EXTRA = {"type": ANY_SCALAR + ["array"], "items": {"type": ANY_SCALAR},
         "description": "Any other parameter (repeated or not) is ignored."}
for _name, _key in [("FileQuery", None), ("StartDownloadQuery", "download"), ("ActiveDownloadsQuery", "downloads"),
                    ("HistoryQuery", "download_history")]:
    _s = schemas[_name]
    _s["additionalProperties"] = EXTRA
    _s["not"] = {"anyOf": [{"required": [k]} for k in DISPATCH if k != _key]}
    _s["description"] += " Other parameters are ignored."


def gateway_query(head=False):
    # `HEAD` never starts a download (`405 Allow: GET`): its query has no `download` shape.
    branches = [sref("FileQuery")] + ([] if head else [sref("StartDownloadQuery")]) + [
        sref("ActiveDownloadsQuery"), sref("HistoryQuery")]
    return {
        "name": "query",
        "in": "query",
        "style": "form",
        "explode": True,
        "required": False,
        "description": "The gateway owns `/...` and dispatches by query (`crates/downlink-core/src/query.rs`): "
        "`download` → start a download, `downloads` → active downloads, `download_history` → history, "
        "none of them → file access. More than one of the three is `400 INVALID_REQUEST`. The parameters of "
        "each shape are listed in its schema; they are plain query parameters (`?limit=10&cursor=a`)."
        + ("" if not head else " `download=` is `GET` only: with `HEAD` (or any other method) it is "
           "`405 METHOD_NOT_ALLOWED` with `Allow: GET`."),
        "schema": {"type": "object", "oneOf": branches},
    }


# ---------------------------------------------------------------------------------------------
# Headers, parameters, responses
# ---------------------------------------------------------------------------------------------
ETAG = {"type": "string", "pattern": '^(W/)?"[^"]*"$'}
HTTP_DATE = {"type": "string", "pattern": "^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} "
             "[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"}
headers = {
    "WWW-Authenticate": {"description": "`Bearer realm=\"downlink\"`, with `error=\"invalid_token\"` when a "
                         "token was presented but is wrong.", "required": True,
                         "schema": {"type": "string", "pattern": '^Bearer realm="downlink"'}},
    "Allow": {"description": "The methods this resource supports.", "required": True,
              "schema": {"type": "string", "pattern": "^[A-Z]+(, [A-Z]+)*$"}},
    "ETag": {"description": "Strong entity tag of the representation.", "schema": ETAG},
    "ETagRequired": {"description": "Strong entity tag of the representation.", "required": True, "schema": ETAG},
    "Last-Modified": {"description": "IMF-fixdate.", "schema": HTTP_DATE},
    "Accept-Ranges": {"description": "`bytes` wherever ranges are served.", "schema": {"const": "bytes"}},
    "Content-Length": {"description": "Exact length (absent on streamed listings and deflated ZIPs).",
                       "schema": {"type": "integer", "minimum": 0}},
    "Content-Range": {"description": "`bytes first-last/size`.", "required": True,
                      "schema": {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}},
    "Content-Range-Unsatisfied": {"description": "`bytes */size`.", "required": True,
                                  "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"}},
    "Content-Disposition": {"description": "`attachment; filename=\"ASCII fallback\"; filename*=UTF-8''…`.",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^attachment; filename=\"[^\"]*\"; filename\\*=UTF-8''"}},
    "Location-Download": {"description": "`/api/v1/downloads/{id}`.", "required": True,
                          "schema": {"type": "string", "pattern": "^/api/v1/downloads/[0-9a-f-]{36}$"}},
    "Location-Redirect": {"description": "A presigned bucket URL, valid 5 minutes.", "required": True,
                          "schema": {"type": "string"}},
    "Location-Console": {"description": "`/api/console/`.", "required": True, "schema": {"const": "/api/console/"}},
    "Cache-Control": {"schema": {"type": "string"}},
}

parameters = {
    "Range": {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
              "description": "A single byte range (`bytes=0-99`, `bytes=500-`, `bytes=-100`) → `206`; a range "
              "starting past the end (or `bytes=-0`) → `416`; several ranges, other units or syntax errors are "
              "ignored (`200`, the whole body)."},
    "If-Range": {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "A strong ETag or the exact `Last-Modified` date: the `Range` is honoured only "
                 "if it matches, else the whole body is sent."},
    "If-None-Match": {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                      "description": "ETag list or `*`: a match (weak comparison) → `304 Not Modified`."},
    "If-Match": {"name": "If-Match", "in": "header", "required": False,
                 "schema": {"type": "string"},
                 "description": "`*` or a list of entity tags; empty means no condition. Otherwise only if the file's current ETag matches (strong comparison; `*` = the file "
                 "exists), else `412 PRECONDITION_FAILED` and nothing changes. A malformed value never matches."},
    "FilePath": {
        "name": "path", "in": "path", "required": True,
        "description": "A file or directory path. It may have several segments joined by literal `/` "
        "(`/docs/2024/report.pdf`); as OpenAPI path parameters cannot carry `/`, the schema describes one "
        "segment. Each segment is percent-decoded exactly once (`%2F` inside a segment is `400`). Refused "
        "with `400 INVALID_PATH`: `.`/`..`, empty segments, control characters, backslashes, a segment over "
        "255 bytes of UTF-8, a path over 1,024 bytes or 32 segments, and the top-level name `api`, which is "
        "reserved for the app's own routes (no file can be stored or read under `/api/`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": f"^(?!api$)(?!\\.\\.?$){SEG_CHARS}+$"},
        "examples": {"file": {"value": "report.pdf"}, "directory": {"value": "Downloads"}},
    },
}

responses = {
    "Unauthorized": {"description": "The `Authorization: Bearer <token>` header is missing, malformed or "
                     "names no configured token.", "headers": {"WWW-Authenticate": hdr("WWW-Authenticate")},
                     "content": json_content(err_schema("UNAUTHORIZED"))},
    "Forbidden": error_response("The token lacks the scope this operation needs (the message names it).",
                                "FORBIDDEN"),
    "NoTokensConfigured": error_response("No API tokens are configured (`api_tokens` is empty), so every "
                                         "request is refused; the message says how to fix it.",
                                         "NO_TOKENS_CONFIGURED"),
    "InternalError": error_response("Storage or internal failure before the answer started (a failure "
                                    "later cuts the body short instead), or an unusable setting "
                                    "(the message names the variable).", "INTERNAL_ERROR", "STORAGE_ERROR"),
    "BadGateway": error_response("The gateway could not reach the component serving the request.",
                                 "BAD_GATEWAY"),
    "MethodNotAllowed": error_response("Any method not listed for this path is answered `405` with `Allow` "
                                       "naming the methods the component serves there (listed under each operation "
                                       "so its shape is known; the operation's own method never gets it).",
                                       "METHOD_NOT_ALLOWED", headers={"Allow": hdr("Allow")}),
    "RangeNotSatisfiable": error_response("The `Range` starts past the end.", "RANGE_NOT_SATISFIABLE",
                                          headers={"Content-Range": hdr("Content-Range-Unsatisfied")}),
    "NotModified": {"description": "`If-None-Match` matched; no body.",
                    "headers": {"ETag": hdr("ETagRequired"), "Last-Modified": hdr("Last-Modified"),
                                "Accept-Ranges": hdr("Accept-Ranges")}},
    "QuotaExceeded": error_response("The principal's bandwidth quota (`bandwidth_quota_bytes`) cannot cover "
                                    "this response (checked before the first byte).", "QUOTA_EXCEEDED"),
    "ResponseTooLarge": error_response("The answer exceeds this host's response cap (`max_response_bytes`, "
                                       "hosted targets) and cannot be redirected: the message names the "
                                       "`Range` requests to make.", "RESPONSE_TOO_LARGE"),
    "RedirectToBucket": {"description": "The answer exceeds the host's response cap and its bytes are one "
                         "object in the bucket: fetch it from the presigned URL (the `Range` goes along). "
                         "The bytes count towards the quota now.",
                         "headers": {"Location": hdr("Location-Redirect"), "Cache-Control": hdr("Cache-Control")},
                         "content": json_content(sref("Redirect"))},
}

FILE_HEADERS = {
    "ETag": hdr("ETagRequired"),
    "Last-Modified": hdr("Last-Modified"),
    "Accept-Ranges": hdr("Accept-Ranges"),
    "Content-Length": hdr("Content-Length"),
}

# ---------------------------------------------------------------------------------------------
# The gateway's paths: `/`, `/{path}`, `/{path}/`
# ---------------------------------------------------------------------------------------------
GATEWAY_GET_DESC = (
    "One URL, four operations, chosen by the query (see the `query` parameter):\n\n"
    "- **file access** (no download parameter; scope `file.read`): a file → its bytes (`200`, `206` with "
    "`Range`, `304` with `If-None-Match`), with a strong `ETag`, `Last-Modified`, `Accept-Ranges: bytes`; a "
    "directory → its JSON listing, paged with `limit`/`cursor`. Bytes sent count towards the principal's "
    "bandwidth (`429 QUOTA_EXCEEDED` before the first byte when over the quota).\n"
    "- **start a download** (`download=URL`; scope `download.create`; operator switch `allow_download`, "
    "else `403 DOWNLOAD_FORBIDDEN`): `202` with `Location: /api/v1/downloads/{id}`; the transfer goes on "
    "after the answer. Refusals after validation answer the reference's failure body (`DownloadRefused`) "
    "with the code's status and are recorded in history.\n"
    "- **active downloads in this directory** (`downloads=`; scope `download.read`).\n"
    "- **history** (`download_history=`; scope `download.read`), newest first, paged with `limit`/`cursor`.\n\n"
    "Every request is authenticated at the gateway first (`401`/`503`), then again with its scope by the "
    "component that serves it."
)


def gateway_get_responses(kind):
    """kind: 'root' | 'path' | 'dir'."""
    json_200 = {"oneOf": [sref("Listing"), sref("ActiveDownloads"), sref("DownloadHistory")]}
    r200 = {
        "description": "A file's bytes (its stored content type), or JSON: a directory listing (file access), "
        "the active downloads (`downloads=`) or a history page (`download_history=`).",
        "headers": {"ETag": hdr("ETag"), "Last-Modified": hdr("Last-Modified"),
                    "Accept-Ranges": hdr("Accept-Ranges"), "Content-Length": hdr("Content-Length")},
        "content": {"application/json": {"schema": json_200}},
    }
    if kind == "path":
        r200["content"]["*/*"] = {"schema": {"type": "string", "format": "binary"}}
    if kind != "path":
        r200["description"] = ("JSON: the directory listing (file access), the active downloads (`downloads=`) "
                               "or a history page (`download_history=`).")
    r = {
        "200": r200,
        "202": {"description": "Download started (`download=`).", "headers": {"Location": hdr("Location-Download")},
                "content": json_content(sref("DownloadStarted"))},
        "400": {"description": "`INVALID_PATH` (the path; an explicit `filename`), `INVALID_REQUEST` (a bad "
                "`limit`/`cursor`, malformed percent-escapes in the query, a query over 8,192 bytes, two "
                "download parameters at once, a bad `timeout`/`sha256`), `INVALID_URL` (`download=`). Start "
                "refusals use the `DownloadRefused` body.",
                "content": json_content({"oneOf": [err_schema(*STATUS_CODES[400]), sref("DownloadRefused")]})},
        "403": {"description": "`FORBIDDEN` (missing scope), `DOWNLOAD_FORBIDDEN` (downloads switched off) or "
                "`DOMAIN_BLOCKED` (a `DownloadRefused` body).",
                "content": json_content({"oneOf": [err_schema("FORBIDDEN", "DOWNLOAD_FORBIDDEN"),
                                                   sref("DownloadRefused")]})},
        "404": error_response("No such file or directory (file access), or a file path with a trailing `/`.",
                              "NOT_FOUND"),
        "405": resp("MethodNotAllowed"),
        "409": error_response("`download=` on a path that is a file.", "CONFLICT"),
        "429": {"description": "`TOO_MANY_DOWNLOADS` (`max_concurrent_downloads` running; a `DownloadRefused` "
                "body) or `QUOTA_EXCEEDED` (file access).",
                "content": json_content({"oneOf": [err_schema("QUOTA_EXCEEDED"), sref("DownloadRefused")]})},
        **common_errors(gateway=True, forbidden=False),
    }
    if kind == "path":
        r["413"] = resp("ResponseTooLarge")
        r["206"] = {"description": "The requested range of the file.",
                    "headers": {**FILE_HEADERS, "Content-Range": hdr("Content-Range")},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
        r["304"] = resp("NotModified")
        r["416"] = resp("RangeNotSatisfiable")
        r["302"] = resp("RedirectToBucket")
    if kind == "root":
        r["303"] = {"description": "A browser opening `/` without a token (`Accept: text/html`, no "
                    "`Authorization`, no query) is sent to the console.",
                    "headers": {"Location": hdr("Location-Console")}}
        del r["404"], r["409"]
    return r


def gateway_head_responses(kind):
    r = gateway_get_responses(kind)
    r["200"] = dict(r["200"])
    r["200"]["description"] = "As `GET`, without a body (a file's `Content-Length` is the `GET`'s)."
    r["202"] = dict(r["202"])
    r["202"]["description"] = "A download was started (known defect: `HEAD` with `download=`)."
    return r


path_param = [ref("parameters", "FilePath")]
cond_params = [ref("parameters", "Range"), ref("parameters", "If-Range"), ref("parameters", "If-None-Match")]

paths = {}
paths["/"] = {
    "get": op("getRoot", "List the root directory, start a download into it, its active downloads, or the history",
              GATEWAY_GET_DESC + "\n\nOn `/`: file access lists the root directory (there is no root file); "
              "`?download_history=` is the whole history (the reference's `GET /?download_history`).",
              "gateway", gateway_get_responses("root"), parameters=[gateway_query()] + cond_params,
              tags=["files", "downloads"]),
    "head": op("headRoot", "Headers of `GET /`", "As `GET /` without a body.", "gateway",
               gateway_head_responses("root"), parameters=[gateway_query(head=True)] + cond_params,
               tags=["files"]),
}

put_responses = {
    "200": {"description": "Replaced an existing file.", "content": json_content(sref("UploadResult"))},
    "201": {"description": "Created a new file.", "content": json_content(sref("UploadResult"))},
    "400": error_response("`INVALID_PATH`: the path (including a path under the reserved `/api/`, or a trailing "
                          "`/`); `INVALID_REQUEST`: the body broke off.", "INVALID_PATH", "INVALID_REQUEST"),
    "409": error_response("The path is a directory, or an ancestor is a file.", "CONFLICT"),
    "412": error_response("`If-Match` did not match (or the file does not exist); nothing was stored.",
                          "PRECONDITION_FAILED"),
    "413": error_response("The body exceeds a size cap (S3: at most 10,000 parts; hosted targets: 10 MiB "
                          "bodies are refused by the host before the app runs).", "FILE_TOO_LARGE",
                          "PAYLOAD_TOO_LARGE"),
    **common_errors(gateway=True),
}
delete_responses = {
    "200": {"description": "The file (`deleted_files: 1`) or the directory tree was deleted.",
            "content": json_content(sref("DeleteResult"))},
    "400": error_response("The path is invalid.", "INVALID_PATH", "INVALID_REQUEST"),
    "404": error_response("No such file or directory.", "NOT_FOUND"),
    "409": error_response("The tree changed while being deleted.", "CONFLICT"),
    "412": error_response("`If-Match` did not match the file's ETag; nothing was deleted.", "PRECONDITION_FAILED"),
    **common_errors(gateway=True),
}
upload_body = {
    "required": False,
    "description": "The file's bytes, streamed (any size on self-hosted Spin). The `Content-Type` of the request "
    "is not used: the stored content type comes from the file extension. No body stores an empty file. A body "
    "that breaks off stores nothing.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
paths["/{path}"] = {
    "get": op("getPath", "Get a file or list a directory; or start a download into it, its active downloads, "
              "its history", GATEWAY_GET_DESC + "\n\n`GET` of a directory without a trailing `/` lists it too.",
              "gateway", gateway_get_responses("path"), parameters=path_param + [gateway_query()] + cond_params,
              tags=["files", "downloads"]),
    "head": op("headPath", "Headers of a file or listing", "As `GET` without a body: a file's headers "
               "(`Content-Length`, `ETag`, `Last-Modified`), `206`/`304`/`416` as for `GET`.", "gateway",
               gateway_head_responses("path"), parameters=path_param + [gateway_query(head=True)] + cond_params,
               tags=["files"]),
    "put": op("putFile", "Upload a file", "Stores the body as the file, creating missing directories. "
              "`201` new, `200` replaced. The file becomes visible only when complete. `If-Match` makes it "
              "conditional.", "file.write", put_responses, parameters=path_param + [ref("parameters", "If-Match")],
              request_body=upload_body, tags=["files"]),
    "delete": op("deletePath", "Delete a file or a directory tree", "A file (`If-Match`: only that version) "
                 "or a directory with everything in it.", "file.write", delete_responses,
                 parameters=path_param + [ref("parameters", "If-Match")], tags=["files"]),
}
dir_delete = json.loads(json.dumps(delete_responses))
paths["/{path}/"] = {
    "get": op("getDirectory", "List a directory (trailing `/`); or start a download into it, its active "
              "downloads, its history", GATEWAY_GET_DESC + "\n\nWith the trailing `/` the path must be a "
              "directory: a file is `404`.", "gateway", gateway_get_responses("dir"),
              parameters=path_param + [gateway_query()], tags=["files", "downloads"]),
    "head": op("headDirectory", "Headers of a listing", "As `GET` without a body.", "gateway",
               gateway_head_responses("dir"), parameters=path_param + [gateway_query(head=True)], tags=["files"]),
    "delete": op("deleteDirectory", "Delete a directory tree", "As `DELETE /{path}` for a directory; a "
                 "file named with a trailing `/` is `404` (as for `GET`), never deleted.", "file.write", dir_delete,
                 parameters=path_param + [ref("parameters", "If-Match")], tags=["files"]),
}

# ---------------------------------------------------------------------------------------------
# /api/v1/downloads
# ---------------------------------------------------------------------------------------------
dl_list_resp = {"200": {"description": "Every running download (`starting`/`downloading`), oldest first. "
                        "Downloads whose worker stopped reporting are resumed or ended as interrupted first.",
                        "content": json_content(sref("ActiveDownloads"))},
                "405": resp("MethodNotAllowed"), **common_errors()}
paths["/api/v1/downloads"] = {
    "get": op("listActiveDownloads", "All active downloads", "Every download running on the server, across "
              "directories (the reference's global list). No parameters.", "download.read", dl_list_resp,
              tags=["downloads"]),
    "head": op("headActiveDownloads", "Headers of the active list", "As `GET` without a body.", "download.read", dl_list_resp,
               tags=["downloads"]),
}
id_param = {"name": "id", "in": "path", "required": True, "description": "A download id (`download_id` of "
            "the start answer). Anything that is not 1-64 ASCII letters, digits, `-` or `_` is simply not found.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
detail_resp = {"200": {"description": "The download, in any state.", "content": json_content(sref("DownloadDetail"))},
               "404": error_response("No such download.", "NOT_FOUND"), "405": resp("MethodNotAllowed"),
               **common_errors()}
paths["/api/v1/downloads/{id}"] = {
    "get": op("getDownload", "One download", "The record in any state, as the lists show it (a dead worker's "
              "download is resumed or ended as interrupted first).", "download.read", detail_resp,
              parameters=[id_param], tags=["downloads"]),
    "head": op("headDownload", "Headers of one download", "As `GET` without a body.", "download.read",
               detail_resp, parameters=[id_param], tags=["downloads"]),
    "delete": op("cancelDownload", "Cancel a download", "Ends the download as `cancelled`; the worker notices "
                 "within a second and discards what it stored. Only the principal that started it, or an "
                 "admin.", "download.create",
                 {"200": {"description": "Cancelled: the record as it is now.",
                          "content": json_content(sref("DownloadDetail"))},
                  "403": error_response("Missing scope, or another principal's download.", "FORBIDDEN"),
                  "404": error_response("No such download.", "NOT_FOUND"),
                  "405": resp("MethodNotAllowed"),
                  "409": error_response("The download has already ended.", "CONFLICT"),
                  **{k: v for k, v in common_errors().items() if k != "403"}},
                 parameters=[id_param], tags=["downloads"]),
}

# ---------------------------------------------------------------------------------------------
# Multi-file download
# ---------------------------------------------------------------------------------------------
paths["/api/download/prepare"] = {
    "post": op("prepareDownload", "Prepare a multi-file download", "Step one: validates every path now (a "
               "directory means its files, recursively), stores the plan under a fresh random id bound to "
               "the caller, valid `prepare_ttl_secs` (default 300 s). Answers the reference's "
               "`{\"rslt\": \"<id>\"}`. A body labelled as a form but starting with `{` is read as JSON; with "
               "no or another content type the first byte decides. Multipart bodies are `400`.",
               "file.read",
               {"200": {"description": "The prepare id.", "content": json_content(sref("PrepareResult"))},
                "400": error_response("`INVALID_REQUEST`: empty or malformed body, no or empty `Filelist`, more "
                                      "than 10,000 paths, more than 100,000 files after expanding directories, "
                                      "only empty directories, multipart; `INVALID_PATH`: invalid paths (named).",
                                      "INVALID_REQUEST", "INVALID_PATH"),
                "404": error_response("Paths that do not exist (all of them named).", "NOT_FOUND"),
                "405": resp("MethodNotAllowed"),
                "413": error_response("`PAYLOAD_TOO_LARGE`: body over 4 MiB; `FILE_TOO_LARGE`: over 64 GiB in "
                                      "total.", "PAYLOAD_TOO_LARGE", "FILE_TOO_LARGE"),
                **common_errors()},
               request_body={"required": True, "content": {
                   "application/json": {"schema": sref("PrepareJson"),
                                        "example": {"Filelist": ["/documents/report.pdf", "/documents/archive.xlsx"]}},
                   "application/x-www-form-urlencoded": {"schema": sref("PrepareForm"),
                                                         "encoding": {"Filelist[]": {"style": "form", "explode": True}}},
               }}, tags=["multi"]),
}
multi_params = [
    {"name": "id", "in": "query", "required": True,
     "description": "The prepare id (`rslt`): 32 hex digits, or the hyphenated UUID spelling. Anything else is "
     "`404` before any lookup.",
     "schema": {"type": "string", "pattern": "^(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                "[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"}},
    {"name": "compression", "in": "query", "required": False,
     "description": "`store` (default; exact `Content-Length`, `ETag`, `Range`, `If-Range`) or `deflate` "
     "(level 1, streamed: no length, no ranges, no `ETag`). Case-insensitive. Ignored for a single file.",
     "schema": {"type": "string", "pattern": "^(?:[Ss][Tt][Oo][Rr][Ee]|[Dd][Ee][Ff][Ll][Aa][Tt][Ee])$",
                "default": "store"}},
] + cond_params
ATTACH_HEADERS = {"Content-Disposition": hdr("Content-Disposition"), "ETag": hdr("ETag"),
                  "Last-Modified": hdr("Last-Modified"), "Accept-Ranges": hdr("Accept-Ranges"),
                  "Content-Length": hdr("Content-Length"), "Cache-Control": hdr("Cache-Control")}
multi_resp = {
    "200": {"description": "One file: that file as an attachment with its type. Several: a ZIP attachment "
            "(`<common directory>.zip` or `downlink_download.zip`), entries relative to the longest common "
            "directory; STORE with exact length, or deflated and streamed.",
            "headers": ATTACH_HEADERS,
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}},
                        "*/*": {"schema": {"type": "string", "format": "binary"}}}},
    "206": {"description": "A range of the file or of the STORE archive.",
            "headers": {**ATTACH_HEADERS, "Content-Range": hdr("Content-Range")},
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}},
                        "*/*": {"schema": {"type": "string", "format": "binary"}}}},
    "302": resp("RedirectToBucket"),
    "304": resp("NotModified"),
    "400": error_response("`id` missing, or a bad `compression`.", "INVALID_REQUEST"),
    "403": error_response("Missing scope, or the id was prepared by another principal (admins included).",
                          "FORBIDDEN"),
    "404": error_response("No such prepared download (or a malformed id).", "NOT_FOUND"),
    "405": resp("MethodNotAllowed"),
    "409": error_response("A listed file was deleted or changed since prepare (checked before the first byte).",
                          "CONFLICT"),
    "410": error_response("The id has expired (answered once; its records are deleted, then `404`).", "GONE"),
    "413": resp("ResponseTooLarge"),
    "416": resp("RangeNotSatisfiable"),
    "429": resp("QuotaExceeded"),
    **{k: v for k, v in common_errors().items() if k != "403"},
}
MULTI_DESC = ("Step two of a multi-file download. Checks owner (`403`), expiry (`410`) and that every file is "
              "unchanged (`409`) before the first byte; the id may be reused (resumed) until it expires. The "
              "request body (the reference sends none) is never read. Bytes sent count towards the caller's "
              "bandwidth (`429 QUOTA_EXCEEDED`).")
paths["/api/download/multi"] = {
    "post": op("downloadPrepared", "Download prepared files (one file or a ZIP)", MULTI_DESC + " `POST` is the "
               "reference's method; `GET` and `HEAD` work the same.", "file.read", multi_resp,
               parameters=multi_params, tags=["multi"]),
    "get": op("downloadPreparedGet", "Download prepared files (GET)", MULTI_DESC, "file.read", multi_resp,
              parameters=multi_params, tags=["multi"]),
    "head": op("headPrepared", "Headers of a prepared download", MULTI_DESC + " No body.", "file.read",
               multi_resp, parameters=multi_params, tags=["multi"]),
}
usage_resp = {"200": {"description": "Bytes sent so far and the quota.", "content": json_content(sref("BandwidthUsage"))},
              "405": resp("MethodNotAllowed"), **common_errors()}
paths["/api/download/usage"] = {
    "get": op("getBandwidthUsage", "The caller's bandwidth usage", "Bytes sent by file `GET`s and multi-file "
              "downloads for this token's principal, and the quota (`bandwidth_quota_bytes`).", "file.read",
              usage_resp, tags=["multi"]),
    "head": op("headBandwidthUsage", "Headers of the usage", "As `GET` without a body.", "file.read", usage_resp,
               tags=["multi"]),
}

# ---------------------------------------------------------------------------------------------
# Admin
# ---------------------------------------------------------------------------------------------
paths["/api/v1/admin/gc"] = {
    "post": op("collectGarbage", "Garbage collection", "Removes what interrupted writes left behind (orphan "
               "chunks, abandoned pending markers, their S3 multipart uploads), re-links files missing from "
               "their directory listing, and deletes expired prepare ids. Writes younger than `grace` are "
               "left alone. Other paths under `/api/v1/admin/` are `404` (after the scope check).", "admin",
               {"200": {"description": "What was done.", "content": json_content(sref("GcReport"))},
                "400": error_response("`grace` is not a whole number of seconds.", "INVALID_REQUEST"),
                "405": resp("MethodNotAllowed"), **common_errors()},
               parameters=[{"name": "grace", "in": "query", "required": False,
                            "description": "Seconds a write must be idle before it counts as abandoned.",
                            "schema": {"type": "integer", "minimum": 0, "maximum": U64_MAX}}],
               tags=["admin"]),
}

# ---------------------------------------------------------------------------------------------
# The app's own pages (no token)
# ---------------------------------------------------------------------------------------------
STATIC_HEADERS = {"ETag": hdr("ETagRequired"), "Cache-Control": {"required": True, "schema": {"const": "no-cache"}},
                  "X-Content-Type-Options": {"schema": {"const": "nosniff"}},
                  "Referrer-Policy": {"schema": {"const": "no-referrer"}}}
PAGE_HEADERS = {**STATIC_HEADERS,
                "Content-Security-Policy": {"required": True, "schema": {"type": "string"},
                                            "description": "`default-src 'none'; script-src 'self'; style-src 'self'; "
                                            "connect-src 'self'; img-src 'self' data:; form-action 'none'; "
                                            "frame-ancestors 'none'; base-uri 'none'`"},
                "X-Frame-Options": {"schema": {"const": "DENY"}}}
static_304 = {"description": "`If-None-Match` matched; no body.", "headers": {"ETag": hdr("ETagRequired")}}
static_405 = resp("MethodNotAllowed")
doc_resp = {"200": {"description": "This document.",
                    "headers": {**STATIC_HEADERS, "Access-Control-Allow-Origin": {"required": True,
                                                                                   "schema": {"const": "*"}}},
                    "content": {"application/json": {"schema": {"type": "object", "required": ["openapi"]}}}},
            "304": static_304, "405": static_405}
static_params = [ref("parameters", "If-None-Match")]
paths["/api/openapi.json"] = {
    "get": op("getOpenApiDocument", "This OpenAPI document", "The OpenAPI 3.1 description of every endpoint "
              "(`components/console/openapi.json`, compiled into the `console` component). Public and readable "
              "cross-origin; revalidated by `ETag`.", None, doc_resp, parameters=static_params, tags=["console"]),
    "head": op("headOpenApiDocument", "Headers of this document", "As `GET` without a body.", None, doc_resp,
               parameters=static_params, tags=["console"]),
}
page_resp = {"200": {"description": "The console's page.", "headers": PAGE_HEADERS,
                     "content": {"text/html": {"schema": {"type": "string"}}}},
             "304": static_304, "405": static_405}
paths["/api/console/"] = {
    "get": op("getConsole", "The web console", "The console's sign-in page (the same as `index.html`): plain "
              "HTML, CSS and one script, strict `Content-Security-Policy`. The token is typed into the page and "
              "sent by its own API calls; the page itself needs none.", None, page_resp,
              parameters=static_params, tags=["console"]),
    "head": op("headConsole", "Headers of the console page", "As `GET` without a body.", None, page_resp,
               parameters=static_params, tags=["console"]),
}
asset_param = {"name": "asset", "in": "path", "required": True, "description": "A file of the console. "
               "Anything else under `/api/console/` is `404` (JSON error).",
               "schema": {"type": "string", "enum": ["index.html", "console.js", "console.css"]}}
asset_resp = {"200": {"description": "The asset.", "headers": PAGE_HEADERS,
                      "content": {"text/html": {"schema": {"type": "string"}},
                                  "text/javascript": {"schema": {"type": "string"}},
                                  "text/css": {"schema": {"type": "string"}}}},
              "304": static_304,
              "404": error_response("No such page.", "NOT_FOUND"),
              "405": static_405}
paths["/api/console/{asset}"] = {
    "get": op("getConsoleAsset", "A console asset", "`index.html` (`text/html; charset=utf-8`), `console.js` "
              "(`text/javascript; charset=utf-8`), `console.css` (`text/css; charset=utf-8`).", None, asset_resp,
              parameters=[asset_param] + static_params, tags=["console"]),
    "head": op("headConsoleAsset", "Headers of a console asset", "As `GET` without a body.", None, asset_resp,
               parameters=[asset_param] + static_params, tags=["console"]),
}
console_redirect = {"308": {"description": "Permanent redirect (for any method: see the known defects).",
                             "headers": {"Location": hdr("Location-Console")}}}
paths["/api/console"] = {
    "get": op("redirectToConsole", "Redirect to `/api/console/`", "The page's relative links need the "
              "directory form.", None, console_redirect, tags=["console"]),
    "head": op("headRedirectToConsole", "Redirect to `/api/console/` (HEAD)", "As `GET`.", None,
               json.loads(json.dumps(console_redirect)), tags=["console"]),
}

# ---------------------------------------------------------------------------------------------
# Links (how one answer feeds the next request)
# ---------------------------------------------------------------------------------------------
def add_links(path, method, status, links):
    r = paths[path][method]["responses"][status]
    r.setdefault("links", {}).update(links)


upload_links = {
    "GetUploadedFile": {"operationId": "getPath", "parameters": {"path": "$request.path.path"},
                        "description": "Read the file just written."},
    "HeadUploadedFile": {"operationId": "headPath", "parameters": {"path": "$request.path.path"}},
    "DeleteUploadedFile": {"operationId": "deletePath", "parameters": {"path": "$request.path.path"}},
    "PrepareUploadedFile": {"operationId": "prepareDownload", "requestBody": {"Filelist": ["{$request.path.path}"]},
                            "description": "Step one of a multi-file download of the file just written."},
}
for status in ["200", "201"]:
    # Copies: each response object gets its own links map.
    add_links("/{path}", "put", status, json.loads(json.dumps(upload_links)))
started_links = {
    "GetStartedDownload": {"operationId": "getDownload", "parameters": {"id": "$response.body#/download_id"},
                           "description": "The download's record (also the `Location`)."},
    "CancelStartedDownload": {"operationId": "cancelDownload", "parameters": {"id": "$response.body#/download_id"}},
}
for p in ["/", "/{path}", "/{path}/"]:
    add_links(p, "get", "202", json.loads(json.dumps(started_links)))
prepared_links = {
    "DownloadPrepared": {"operationId": "downloadPrepared", "parameters": {"id": "$response.body#/rslt"},
                         "description": "Step two: the file or the ZIP."},
    "DownloadPreparedGet": {"operationId": "downloadPreparedGet", "parameters": {"id": "$response.body#/rslt"}},
    "HeadPrepared": {"operationId": "headPrepared", "parameters": {"id": "$response.body#/rslt"}},
}
add_links("/api/download/prepare", "post", "200", prepared_links)

doc = {
    "openapi": "3.1.0",
    "info": {
        "title": "Downlink",
        "version": "0.1.0",
        "summary": "File storage over HTTP, server-side URL downloads and streamed multi-file ZIP downloads.",
        "description": (
            "A Spin (WebAssembly) application. Every endpoint needs `Authorization: Bearer <token>` except the "
            "console (`/api/console/`) and this document (`/api/openapi.json`).\n\n"
            "**Routing.** The gateway owns `/...` and dispatches by query: `?download=URL` starts a download, "
            "`?downloads` lists a directory's active downloads, `?download_history` reads the history, anything "
            "else is file access (`GET`/`HEAD`/`PUT`/`DELETE`). Exact routes under `/api/` go straight to their "
            "components.\n\n"
            "**Reserved `/api/`.** The top-level name `api` belongs to the app (its endpoints, the console and "
            "this document): no file can be stored, read or listed under `/api/`; any request there that is not "
            "one of the endpoints below reaches the file service and is answered `400 INVALID_PATH` (whatever "
            "the method).\n\n"
            "**Errors.** Every error is `{\"success\": false, \"error\": \"CODE\", \"message\": \"…\"}` "
            "(`Error`), with the status fixed by the code (`ErrorCode`). The one exception is a refused download "
            "start, which answers the reference's failure body (`DownloadRefused`).\n\n"
            "**Scopes.** `file.read` (get/list files, prepare, multi, usage), `file.write` (upload, delete), "
            "`download.create` (start and cancel URL downloads), `download.read` (active downloads, history), "
            "`admin` (everything, and the operator endpoints). A missing or wrong token is `401` with "
            "`WWW-Authenticate: Bearer realm=\"downlink\"`; a missing scope `403 FORBIDDEN`; no tokens "
            "configured at all `503 NO_TOKENS_CONFIGURED`. Each operation's scope is in its `security` "
            "requirement (role names, OpenAPI 3.1) and in `x-required-scope`."
        ),
    },
    "servers": [{"url": "/", "description": "The app itself (e.g. http://127.0.0.1:3000)."}],
    "security": [{"bearerAuth": []}],
    "tags": [
        {"name": "files", "description": "File storage: upload, download (ranges, conditional requests), list, delete."},
        {"name": "downloads", "description": "Server-side downloads from a URL: start, active, history, cancel."},
        {"name": "multi", "description": "Two-step multi-file download: prepare, then one file or a ZIP."},
        {"name": "admin", "description": "Operator endpoints (scope `admin`)."},
        {"name": "console", "description": "The app's own pages; no token."},
    ],
    "paths": paths,
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "dl_ followed by 64 hex digits",
                "description": "A token minted with `devhost new-token NAME SCOPE...`; only its SHA-256 is "
                "configured (variable `api_tokens`). Scopes: `file.read`, `file.write`, `download.create`, "
                "`download.read`, `admin` (implies all).",
            }
        },
        "schemas": schemas,
        "parameters": parameters,
        "headers": headers,
        "responses": responses,
    },
}

with open(OUT, "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
print("wrote", OUT)
