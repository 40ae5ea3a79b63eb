use super::*;
use crate::blob::{BlobId, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::error::{ApiError, ErrorCode};
use crate::meta::FileMeta;
use crate::meta::Origin;
use crate::path::StoragePath;
use crate::storage::Storage;
use std::time::Instant;

const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=utf-8");
const JSON: Option<&str> = Some("application/json");

fn p(raw: &str) -> StoragePath {
    StoragePath::parse(raw).unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_invalid(result: Result<Vec<String>, ApiError>, needle: &str) {
    let err = result.expect_err(needle);
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{}", err.message);
    assert_eq!(err.status(), 400);
    assert!(err.message.contains(needle), "message {:?} lacks {needle:?}", err.message);
}

// ---- bodies ----

#[test]
fn httpie_json_body_as_sent() {
    // Exactly what `http POST .../prepare Filelist[]="/documents/report.pdf" Filelist[]=...` sends.
    let body = br#"{"Filelist": ["/documents/report.pdf", "/documents/archive.xlsx"]}"#;
    assert_eq!(parse_prepare_body(JSON, body).unwrap(), strings(&["/documents/report.pdf", "/documents/archive.xlsx"]));
    // Same without a content type, with a charset, or as a vendor +json type.
    assert_eq!(parse_prepare_body(None, body).unwrap().len(), 2);
    assert_eq!(parse_prepare_body(Some("Application/JSON; charset=UTF-8"), body).unwrap().len(), 2);
    assert_eq!(parse_prepare_body(Some("application/vnd.api+json"), body).unwrap().len(), 2);
    // `curl -d '{...}'` labels JSON as a form.
    assert_eq!(parse_prepare_body(FORM, body).unwrap().len(), 2);
    assert_eq!(parse_prepare_body(Some("text/plain"), b"  \n{\"Filelist\":[\"/a\"]}").unwrap(), strings(&["/a"]));
}

#[test]
fn httpie_form_body_as_sent() {
    // Exactly what `http --form POST ... Filelist[]="/documents/my report.pdf" Filelist[]="/documents/ü+x.xlsx"` sends.
    let body = b"Filelist%5B%5D=%2Fdocuments%2Fmy+report.pdf&Filelist%5B%5D=%2Fdocuments%2F%C3%BC%2Bx.xlsx";
    assert_eq!(parse_prepare_body(FORM, body).unwrap(), strings(&["/documents/my report.pdf", "/documents/ü+x.xlsx"]));
    // Without a content type the body is sniffed as a form.
    assert_eq!(parse_prepare_body(None, body).unwrap().len(), 2);
}

#[test]
fn other_form_and_json_shapes() {
    assert_eq!(parse_prepare_body(FORM, b"Filelist[]=/a&Filelist[]=/b%20c").unwrap(), strings(&["/a", "/b c"]));
    assert_eq!(parse_prepare_body(FORM, b"Filelist[0]=/a&Filelist[1]=/b").unwrap(), strings(&["/a", "/b"]));
    assert_eq!(parse_prepare_body(FORM, b"Filelist=/a").unwrap(), strings(&["/a"]));
    // Other fields and empty pairs are ignored; look-alike keys do not count.
    assert_eq!(
        parse_prepare_body(FORM, b"x=1&&Filelist[]=/a&filelist[]=/no&Filelist[x]=/no&Filelists=/no&Filelist[]]=/no")
            .unwrap(),
        strings(&["/a"])
    );
    // A key without `=` is an empty value (later an invalid path), not a crash.
    assert_eq!(parse_prepare_body(FORM, b"Filelist[]").unwrap(), strings(&[""]));
    // `%2B` is a literal plus, `+` a space, decoded once only.
    assert_eq!(parse_prepare_body(FORM, b"Filelist[]=a%2Bb+c%2520").unwrap(), strings(&["a+b c%20"]));
    // JSON: a single string (HTTPie `Filelist=/a`), the `Filelist[]` key, unknown keys.
    assert_eq!(parse_prepare_body(JSON, br#"{"Filelist": "/a"}"#).unwrap(), strings(&["/a"]));
    assert_eq!(parse_prepare_body(JSON, br#"{"Filelist[]": ["/a", "/b"]}"#).unwrap().len(), 2);
    assert_eq!(
        parse_prepare_body(JSON, br#"{"x": {"deep": [1, {"y": null}]}, "Filelist": ["/a"], "z": 1}"#).unwrap(),
        strings(&["/a"])
    );
    // JSON strings are paths verbatim: no percent-decoding.
    assert_eq!(
        parse_prepare_body(JSON, br#"{"Filelist": ["/My%20Docs", "/\u00e9"]}"#).unwrap(),
        strings(&["/My%20Docs", "/é"])
    );
}

#[test]
fn bad_bodies_are_clear_400s() {
    assert_invalid(parse_prepare_body(JSON, b""), "empty body");
    assert_invalid(parse_prepare_body(None, b" \r\n\t"), "empty body");
    assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"/a\""), "not valid JSON");
    assert_invalid(parse_prepare_body(JSON, b"{Filelist: []}"), "not valid JSON");
    assert_invalid(parse_prepare_body(JSON, b"not json"), "not valid JSON");
    assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"/a\"]} trailing"), "not valid JSON");
    assert_invalid(parse_prepare_body(JSON, b"{\"Filelist\": [\"\xff\"]}"), "not valid JSON");
    assert_invalid(parse_prepare_body(JSON, br#"["/a"]"#), "a JSON object like");
    assert_invalid(parse_prepare_body(JSON, br#""/a""#), "a JSON object like");
    assert_invalid(parse_prepare_body(JSON, b"null"), "a JSON object like");
    assert_invalid(parse_prepare_body(JSON, b"42"), "a JSON object like");
    for body in [r#"{"Filelist": 5}"#, r#"{"Filelist": null}"#, r#"{"Filelist": {"a": "/b"}}"#, r#"{"Filelist": true}"#]
    {
        assert_invalid(parse_prepare_body(JSON, body.as_bytes()), "array of path strings");
    }
    for body in [
        r#"{"Filelist": [1]}"#,
        r#"{"Filelist": ["/a", null]}"#,
        r#"{"Filelist": [["/a"]]}"#,
        r#"{"Filelist": [{"p": "/a"}]}"#,
    ] {
        assert_invalid(parse_prepare_body(JSON, body.as_bytes()), "path string");
    }
    assert_invalid(parse_prepare_body(JSON, b"{}"), "missing \"Filelist\"");
    assert_invalid(parse_prepare_body(JSON, br#"{"filelist": ["/a"]}"#), "missing \"Filelist\"");
    assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": []}"#), "empty");
    assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": ["/a"], "Filelist": ["/b"]}"#), "more than once");
    assert_invalid(parse_prepare_body(JSON, br#"{"Filelist": ["/a"], "Filelist[]": ["/b"]}"#), "more than once");
    assert_invalid(parse_prepare_body(Some("multipart/form-data; boundary=x"), b"--x\r\n"), "multipart");
    assert_invalid(parse_prepare_body(FORM, b"a=1&b=2"), "missing Filelist");
    assert_invalid(parse_prepare_body(FORM, b"Filelist[]=%zz"), "URL encoding");
    assert_invalid(parse_prepare_body(FORM, b"Filelist[]=%ff"), "URL encoding");
    assert_invalid(parse_prepare_body(FORM, b"Filelist[]=\xff"), "not UTF-8");
    // Deep nesting neither overflows the stack in an ignored field (skipped iteratively)
    // nor inside Filelist (refused at the first nested array).
    let deep = format!("{{\"x\": {}{}, \"Filelist\": [\"/a\"]}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(parse_prepare_body(JSON, deep.as_bytes()).unwrap(), strings(&["/a"]));
    let deep = format!("{{\"Filelist\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_invalid(parse_prepare_body(JSON, deep.as_bytes()), "path string");
    let unclosed = format!("{{\"x\": {}", "{\"a\":".repeat(100_000));
    assert_invalid(parse_prepare_body(JSON, unclosed.as_bytes()), "not valid JSON");
}

#[test]
fn body_size_cap_is_413() {
    let body = vec![b' '; MAX_PREPARE_BODY_BYTES + 1];
    let err = parse_prepare_body(JSON, &body).unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::PayloadTooLarge, 413));
    // Exactly at the cap is parsed (and then found empty).
    assert_invalid(parse_prepare_body(JSON, &vec![b' '; MAX_PREPARE_BODY_BYTES]), "empty body");
}

#[test]
fn entry_cap_is_exact_and_checked_before_paths() {
    let json_list = |n: usize, path: &str| format!("{{\"Filelist\": [{}]}}", vec![format!("\"{path}\""); n].join(","));
    let at_cap = parse_prepare_body(JSON, json_list(MAX_PREPARE_ENTRIES, "/a").as_bytes()).unwrap();
    assert_eq!(at_cap.len(), MAX_PREPARE_ENTRIES);
    assert_invalid(parse_prepare_body(JSON, json_list(MAX_PREPARE_ENTRIES + 1, "/a").as_bytes()), "more than 10000");
    // 100,000 invalid paths: refused for the count, quickly, without validating any path.
    let huge = json_list(100_000, "/../x");
    assert!(huge.len() < MAX_PREPARE_BODY_BYTES);
    let started = Instant::now();
    let err = parse_prepare_request(JSON, huge.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{}", err.message);
    assert!(err.message.contains("more than 10000"));
    assert!(started.elapsed().as_secs_f64() < 2.0, "{:?}", started.elapsed());
    // The same for forms.
    let form = vec!["Filelist%5B%5D=%2F..%2Fx"; 100_000].join("&");
    let started = Instant::now();
    let err = parse_prepare_request(FORM, form.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(started.elapsed().as_secs_f64() < 2.0);
    let form_at_cap = vec!["Filelist[]=/a"; MAX_PREPARE_ENTRIES].join("&");
    assert_eq!(parse_prepare_body(FORM, form_at_cap.as_bytes()).unwrap().len(), MAX_PREPARE_ENTRIES);
    // Non-Filelist fields do not count towards the cap.
    let padded = format!("{}&Filelist[]=/a", vec!["x=1"; 20_000].join("&"));
    assert_eq!(parse_prepare_body(FORM, padded.as_bytes()).unwrap().len(), 1);
}

#[test]
fn paths_are_validated_normalised_and_deduplicated() {
    let paths =
        validate_prepare_paths(&strings(&["/b/x.txt", "/a", "a", "a/", "/a/", "/b/x.txt", "/Été 2024/🎉 a.jpg"]))
            .unwrap();
    assert_eq!(paths, vec![p("b/x.txt"), p("a"), p("Été 2024/🎉 a.jpg")]);
    assert_eq!(validate_prepare_paths(&strings(&["/"])).unwrap(), vec![StoragePath::root()]);
    let err = validate_prepare_paths(&strings(&["/ok", "/../etc/passwd"])).unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::InvalidPath, 400));
    assert!(err.message.contains("\"/../etc/passwd\""), "{}", err.message);
    assert!(err.message.contains("`..`"), "{}", err.message);
    let err = validate_prepare_paths(&strings(&[""])).unwrap_err();
    assert!(err.message.contains("empty"), "{}", err.message);
    // Several bad paths: a few by name, then a count; control characters are escaped.
    let bad: Vec<String> = (0..8).map(|i| format!("/a\0{i}")).collect();
    let err = validate_prepare_paths(&bad).unwrap_err();
    assert!(err.message.starts_with("invalid paths: "), "{}", err.message);
    assert!(err.message.ends_with("and 3 more"), "{}", err.message);
    assert!(!err.message.contains('\0'));
    // Very long bad paths are shortened in the message.
    let long = format!("/{}/..", "é".repeat(2000));
    assert!(validate_prepare_paths(&[long]).unwrap_err().message.len() < 400);
    for bad in ["a//b", "a\\b", "/x/./y", "//"] {
        assert_eq!(validate_prepare_paths(&strings(&[bad])).unwrap_err().code, ErrorCode::InvalidPath, "{bad}");
    }
}

#[test]
fn missing_paths_are_a_404_naming_them() {
    let err = missing_paths_error(&[p("documents/report.pdf")]);
    assert_eq!((err.code, err.status()), (ErrorCode::NotFound, 404));
    assert_eq!(err.message, "no such file or directory: \"/documents/report.pdf\"");
    let many: Vec<StoragePath> = (0..7).map(|i| p(&format!("f{i}"))).collect();
    let err = missing_paths_error(&many);
    assert!(err.message.contains("\"/f0\"") && err.message.ends_with("and 2 more"), "{}", err.message);
}

#[test]
fn prepare_response_is_the_reference_shape() {
    let body = PrepareResponse { rslt: "8e9f6c7b4a2d".into() }.to_json_bytes();
    assert_eq!(body, br#"{"rslt":"8e9f6c7b4a2d"}"#);
}

// ---- plans ----

fn meta(path: &str, content: &[u8], blob: &str) -> FileMeta {
    FileMeta {
        path: p(path),
        size: content.len() as u64,
        crc32: crc32fast::hash(content),
        content_type: crate::meta::content_type_for(path).to_owned(),
        created: 1_700_000_000,
        modified: 1_700_000_100,
        origin: Origin::Upload,
        blob_id: BlobId::new(blob).unwrap(),
        chunk_size: 1024 * 1024,
        object: None,
        sha256: None,
        replaces: None,
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef";

fn plan(paths: &[&str]) -> PreparedPlan {
    let mut builder = PlanBuilder::new(PlanLimits::default());
    for (i, path) in paths.iter().enumerate() {
        assert!(builder.push(PlanEntry::from_meta(&meta(path, path.as_bytes(), &format!("blob{i}")))).unwrap());
    }
    builder.finish(ID, "alice", 1_000, DEFAULT_PLAN_TTL_SECS).unwrap()
}

#[test]
fn builder_dedups_and_enforces_limits() {
    let mut builder = PlanBuilder::new(PlanLimits { max_entries: 2, max_total_bytes: 10 });
    assert!(builder.push(PlanEntry::from_meta(&meta("a", b"12345", "b1"))).unwrap());
    assert!(!builder.push(PlanEntry::from_meta(&meta("a", b"12345", "b1"))).unwrap());
    assert!(builder.contains(&p("a")));
    assert_eq!((builder.len(), builder.total_bytes()), (1, 5));
    let err = builder.push(PlanEntry::from_meta(&meta("b", b"123456", "b2"))).unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::FileTooLarge, 413));
    assert_eq!(builder.len(), 1, "a refused entry is not added");
    assert!(builder.push(PlanEntry::from_meta(&meta("b", b"12345", "b2"))).unwrap());
    let err = builder.push(PlanEntry::from_meta(&meta("c", b"", "b3"))).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(err.message.contains("more than 2 files"));
    // A duplicate at the limit is still just a duplicate.
    assert!(!builder.push(PlanEntry::from_meta(&meta("b", b"12345", "b2"))).unwrap());
    // Sizes near u64::MAX saturate instead of wrapping under the limit.
    let mut big = PlanBuilder::new(PlanLimits { max_entries: 10, max_total_bytes: u64::MAX - 1 });
    let mut huge = PlanEntry::from_meta(&meta("h", b"", "h1"));
    huge.size = u64::MAX - 1;
    assert!(big.push(huge.clone()).unwrap());
    huge.path = p("h2");
    assert_eq!(big.push(huge).unwrap_err().code, ErrorCode::FileTooLarge);
}

#[test]
fn finish_checks_emptiness_ids_and_names() {
    let empty = PlanBuilder::new(PlanLimits::default());
    let err = empty.finish(ID, "alice", 0, 300).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    let mut builder = PlanBuilder::new(PlanLimits::default());
    builder.push(PlanEntry::from_meta(&meta("a", b"x", "b1"))).unwrap();
    assert_eq!(builder.clone().finish("short", "alice", 0, 300).unwrap_err().status(), 500);
    let plan = builder.finish(&ID.to_ascii_uppercase(), "alice", 100, 300).unwrap();
    assert_eq!(plan.id, ID);
    assert_eq!((plan.created, plan.expires), (100, 400));
    let forever = {
        let mut b = PlanBuilder::new(PlanLimits::default());
        b.push(PlanEntry::from_meta(&meta("a", b"x", "b1"))).unwrap();
        b.finish(ID, "alice", u64::MAX - 5, 300).unwrap()
    };
    assert_eq!(forever.expires, u64::MAX);
}

#[test]
fn archive_names_are_relative_to_the_common_directory() {
    let photos = plan(&["photos/2024/a.jpg", "photos/2024/sub/b.jpg", "photos/2024/sub/deeper/c d.jpg"]);
    assert!(photos.is_archive());
    assert_eq!(photos.common_dir(), p("photos/2024"));
    let names: Vec<String> = photos.zip_entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a.jpg", "sub/b.jpg", "sub/deeper/c d.jpg"]);
    assert_eq!(photos.download_name(), "2024.zip");
    assert_eq!(photos.content_type(), "application/zip");
    let spread = plan(&["a/x.txt", "b/y.txt", "top.txt"]);
    let names: Vec<String> = spread.zip_entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a/x.txt", "b/y.txt", "top.txt"]);
    assert_eq!(spread.download_name(), FALLBACK_ARCHIVE_NAME);
    assert_eq!(
        spread.content_disposition(),
        "attachment; filename=\"downlink_download.zip\"; filename*=UTF-8''downlink_download.zip"
    );
    // Segment-wise common directory: "ab" and "abc" share only the root.
    let names: Vec<String> = plan(&["ab/x", "abc/y"]).zip_entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["ab/x", "abc/y"]);
    // A file next to a directory of the same prefix: names stay distinct.
    let names: Vec<String> = plan(&["d/report", "d/report 2/x"]).zip_entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["report", "report 2/x"]);
    let utf8 = plan(&["Été 2024/a b.txt", "Été 2024/c.txt"]);
    assert_eq!(utf8.download_name(), "Été 2024.zip");
    assert_eq!(
        utf8.content_disposition(),
        "attachment; filename=\"_t_ 2024.zip\"; filename*=UTF-8''%C3%89t%C3%A9%202024.zip"
    );
    let layout = photos.zip_layout().unwrap();
    assert_eq!(layout.entry_count(), 3);
    assert_eq!(layout.entry(2).unwrap().crc32, crc32fast::hash(b"photos/2024/sub/deeper/c d.jpg"));
}

#[test]
fn single_file_plans_serve_the_file_itself() {
    let single = plan(&["documents/my report.pdf"]);
    assert!(!single.is_archive());
    assert_eq!(single.download_name(), "my report.pdf");
    assert_eq!(single.content_type(), "application/pdf");
    assert_eq!(single.etag(), single.entries[0].etag);
    assert_eq!(single.last_modified(), 1_700_000_100);
    assert_eq!(single.zip_entries()[0].name, "my report.pdf");
}

#[test]
fn archive_etag_tracks_exactly_what_shapes_the_bytes() {
    let base = plan(&["d/a", "d/b"]);
    let etag = base.archive_etag();
    assert!(etag.starts_with("\"zip-") && etag.ends_with('"') && etag.len() == 2 + 4 + 32, "{etag}");
    assert_eq!(base.etag(), etag);
    // Same files under another id or owner: same bytes, same tag (resume across re-prepare).
    let mut other = base.clone();
    other.id = "f".repeat(32);
    other.owner = "bob".into();
    other.created += 50;
    other.expires += 50;
    assert_eq!(other.archive_etag(), etag);
    let changed = |f: &dyn Fn(&mut PreparedPlan)| {
        let mut plan = base.clone();
        f(&mut plan);
        plan.archive_etag()
    };
    assert_ne!(changed(&|pl| pl.entries.swap(0, 1)), etag, "order");
    assert_ne!(changed(&|pl| pl.entries[0].etag = "\"other\"".into()), etag, "file etag");
    assert_ne!(changed(&|pl| pl.entries[0].modified += 1), etag, "mtime");
    assert_ne!(changed(&|pl| pl.entries[0].size += 1), etag, "size");
    assert_ne!(changed(&|pl| pl.entries[0].crc32 ^= 1), etag, "crc");
    assert_ne!(changed(&|pl| pl.entries[0].path = p("d/c")), etag, "name");
    // Moving both files to another directory keeps names (relative) but not the tag? The
    // names are the same and so are the bytes, so the tag is the same.
    assert_eq!(
        changed(&|pl| {
            pl.entries[0].path = p("e/a");
            pl.entries[1].path = p("e/b");
        }),
        etag
    );
}

#[test]
fn owner_and_expiry() {
    let plan = plan(&["a", "b"]);
    assert_eq!(plan.expires, 1_300);
    assert!(!plan.is_expired(1_299));
    assert!(plan.is_expired(1_300));
    assert!(plan.check_owner("alice").is_ok());
    let err = plan.check_owner("alicE").unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::Forbidden, 403));
    let head = plan.head(1);
    assert_eq!(head.check_owner("bob").unwrap_err().status(), 403);
    assert!(head.is_expired(1_300) && !head.is_expired(1_299));
}

#[test]
fn check_current_detects_deleted_and_changed_files() {
    let original = meta("docs/a.txt", b"hello", "b1");
    let entry = PlanEntry::from_meta(&original);
    assert!(entry.check_current(Some(&original)).is_ok());
    let err = entry.check_current(None).unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::Conflict, 409));
    assert!(err.message.contains("\"/docs/a.txt\" was deleted"), "{}", err.message);
    let rewritten = meta("docs/a.txt", b"hello", "b2");
    assert!(entry.check_current(Some(&rewritten)).unwrap_err().message.contains("changed"));
    let mut touched = original.clone();
    touched.modified += 1;
    assert_eq!(entry.check_current(Some(&touched)).unwrap_err().status(), 409);
    let mut resized = original.clone();
    resized.size += 1;
    assert_eq!(entry.check_current(Some(&resized)).unwrap_err().status(), 409);
    // Content type changes do not alter the bytes served.
    let mut retyped = original;
    retyped.content_type = "text/x-other".into();
    assert!(entry.check_current(Some(&retyped)).is_ok());
}

#[test]
fn plan_json_round_trips_and_validates() {
    let plan = plan(&["a b/ü.txt", "a b/c.txt"]);
    let json = plan.to_json_bytes();
    assert_eq!(PreparedPlan::from_json_bytes(&json).unwrap(), plan);
    let text = String::from_utf8(json).unwrap();
    assert!(text.contains("\"blob_id\":\"blob0\""), "{text}");
    assert!(PreparedPlan::from_json_bytes(text.replace("a b/c.txt", "a b/../c.txt").as_bytes()).is_err());
    assert!(PreparedPlan::from_json_bytes(text.replace("blob0", "bad:blob").as_bytes()).is_err());
    assert!(PreparedPlan::from_json_bytes(b"{}").is_err());
}

#[test]
fn stored_form_splits_into_bounded_parts() {
    // 10,000 entries with long paths: far more than one value holds.
    let mut builder = PlanBuilder::new(PlanLimits::default());
    let long_dir = vec!["segment-name-that-is-long"; 30].join("/");
    for i in 0..MAX_PREPARE_ENTRIES {
        let path = format!("{long_dir}/file {i}.bin");
        builder.push(PlanEntry::from_meta(&meta(&path, path.as_bytes(), &format!("blob-{i}")))).unwrap();
    }
    let plan = builder.finish(ID, "alice", 10, 300).unwrap();
    let stored = plan.to_stored();
    let (head_key, head_bytes) = stored.last().unwrap();
    assert_eq!(head_key, &format!("prep:{ID}"));
    let head = PlanHead::from_json_bytes(head_bytes).unwrap();
    assert_eq!(head.entry_count, MAX_PREPARE_ENTRIES);
    assert!(head.parts > 5, "{}", head.parts);
    assert_eq!(stored.len(), head.parts as usize + 1);
    assert_eq!(head.content_bytes, plan.content_bytes());
    let mut parts = Vec::new();
    for ((key, value), expected_key) in stored.iter().zip(head.part_keys()) {
        assert_eq!(key, &expected_key);
        assert!(value.len() <= MAX_VALUE_BYTES, "{}", value.len());
        assert!(key.len() <= MAX_KEY_BYTES);
        parts.push(value.clone());
    }
    assert_eq!(head.part_keys().len() + 1, stored.len(), "the head is written last");
    assert_eq!(PreparedPlan::from_stored(&head, &parts).unwrap(), plan);
    // Damage is a storage error, never a silently shorter plan.
    assert_eq!(PreparedPlan::from_stored(&head, &parts[1..]).unwrap_err().code, ErrorCode::StorageError);
    let mut corrupt = parts.clone();
    corrupt[1].truncate(10);
    assert_eq!(PreparedPlan::from_stored(&head, &corrupt).unwrap_err().code, ErrorCode::StorageError);
    let mut wrong_count = head.clone();
    wrong_count.entry_count += 1;
    assert_eq!(PreparedPlan::from_stored(&wrong_count, &parts).unwrap_err().code, ErrorCode::StorageError);
    // A small plan is one part.
    let small = self::plan(&["x", "y"]);
    let stored = small.to_stored();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].0, format!("prep:{ID}:0"));
    let head = PlanHead::from_json_bytes(&stored[1].1).unwrap();
    assert_eq!(PreparedPlan::from_stored(&head, &[stored[0].1.clone()]).unwrap(), small);
}

#[test]
fn the_plan_store_loads_for_the_owner_and_deletes_expired_plans() {
    use crate::storage::MemoryStorage;
    let storage = MemoryStorage::new();
    let plans = PlanStore::new(&storage);
    let expiring = self::plan(&["x", "y"]); // created 1000, expires 1300
    plans.store(&expiring).unwrap();
    assert_eq!(plans.load(ID, "alice", 1_299).unwrap(), expiring);
    assert_eq!(plans.load("ffffffffffffffffffffffffffffffff", "alice", 1_000).unwrap_err().status(), 404);
    // Another principal gets 403 whether or not the plan expired, and deletes nothing.
    assert_eq!(plans.load(ID, "bob", 1_299).unwrap_err().status(), 403);
    assert_eq!(plans.load(ID, "bob", 9_999).unwrap_err().status(), 403);
    let gone = plans.load(ID, "alice", 1_300).unwrap_err();
    assert_eq!((gone.code, gone.status()), (ErrorCode::Gone, 410));
    assert!(storage.keys().is_empty(), "an expired plan is deleted when seen: {:?}", storage.keys());
    assert_eq!(plans.load(ID, "alice", 1_300).unwrap_err().status(), 404, "then it is unknown");

    plans.store(&expiring).unwrap();
    storage.set("prep:orphan:0", b"[]").unwrap(); // a prepare still writing its parts
    storage.set("file:x", b"{}").unwrap();
    assert_eq!(plans.sweep_expired(1299).unwrap(), 0);
    assert_eq!(plans.sweep_expired(1300).unwrap(), 1);
    assert_eq!(storage.keys(), ["file:x", "prep:orphan:0"]);
}

// ---- ids, keys, quotas ----

#[test]
fn plan_ids() {
    let id = new_plan_id([0xAB; 16]);
    assert_eq!(id, "ab".repeat(16));
    assert_eq!(validate_plan_id(&id).unwrap(), id);
    assert_eq!(validate_plan_id(&id.to_ascii_uppercase()).unwrap(), id);
    assert_eq!(validate_plan_id("123E4567-E89B-12D3-A456-426614174000").unwrap(), "123e4567e89b12d3a456426614174000");
    let thirty_two_bytes_of_utf8 = "é".repeat(16);
    let misplaced = "123e4567e-89b-12d3-a456-426614174000";
    let hex36 = "0".repeat(36);
    let uuid_with_g = "123e4567-e89b-12d3-a456-42661417400g";
    for bad in [
        "",
        "8e9f6c7b4a2d",
        &id[..31],
        &format!("{id}0"),
        &format!("{}g", &id[..31]),
        misplaced,
        hex36.as_str(),
        uuid_with_g,
        thirty_two_bytes_of_utf8.as_str(),
        "../../../../../../../../etc/pass",
        " 0123456789abcdef0123456789abcde",
        "prep:0123456789abcdef0123456789ab",
        "----------------------------------------",
    ] {
        let err = validate_plan_id(bad).unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::NotFound, 404), "{bad:?}");
        assert_eq!(err.message, "no such prepared download");
    }
    assert_eq!(plan_key(&id), format!("prep:{id}"));
    assert_eq!(plan_part_key(&id, 3), format!("prep:{id}:3"));
}

#[test]
fn bandwidth_keys() {
    assert_eq!(bandwidth_key("alice"), "bw:alice");
    assert_eq!(bandwidth_key("ci-bot_2"), "bw:ci-bot_2");
    for odd in ["", "with space", "ünï", "tab\t", &"x".repeat(300)] {
        let key = bandwidth_key(odd);
        assert!(key.starts_with("bw#") && key.len() == 3 + 64, "{odd:?} → {key}");
    }
    assert_ne!(bandwidth_key("a b"), bandwidth_key("a  b"));
    assert_eq!(bandwidth_key(&"y".repeat(MAX_KEY_BYTES - 3)), format!("bw:{}", "y".repeat(MAX_KEY_BYTES - 3)));
}

#[test]
fn quotas() {
    assert!(check_quota(u64::MAX, u64::MAX, None).is_ok());
    assert!(check_quota(0, 100, Some(100)).is_ok());
    assert!(check_quota(60, 40, Some(100)).is_ok());
    assert!(check_quota(100, 0, Some(100)).is_ok());
    let err = check_quota(60, 41, Some(100)).unwrap_err();
    assert_eq!((err.code, err.status()), (ErrorCode::QuotaExceeded, 429));
    assert!(err.message.contains("60 of 100"), "{}", err.message);
    assert!(check_quota(101, 0, Some(100)).is_err(), "already over");
    assert!(check_quota(u64::MAX, 1, Some(u64::MAX)).is_err(), "no wrap-around");
    assert!(check_quota(0, 1, Some(0)).is_err());
    let usage = BandwidthUsage::new("alice", 60, Some(100));
    assert_eq!(
        String::from_utf8(usage.to_json_bytes()).unwrap(),
        r#"{"principal":"alice","bytes_sent":60,"quota_bytes":100,"remaining_bytes":40}"#
    );
    let over = BandwidthUsage::new("alice", 160, Some(100));
    assert_eq!(over.remaining_bytes, Some(0));
    let unlimited = BandwidthUsage::new("bob", 5, None);
    assert_eq!(
        String::from_utf8(unlimited.to_json_bytes()).unwrap(),
        r#"{"principal":"bob","bytes_sent":5,"quota_bytes":null,"remaining_bytes":null}"#
    );
}
