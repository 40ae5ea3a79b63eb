//! The app's own pages on the real app: the OpenAPI document (`GET /api/openapi.json`), checked
//! by openapi-spec-validator and against the running app by schemathesis, and the web console
//! (`/api/console/`), driven in headless Chromium by `tests/web/console_test.py` (selenium).
//!
//! The Python tools come from `cargo xtask test` (a venv under `target/web-tools`), Chromium and
//! its driver from Debian (`.ci/run` installs them); without them these tests skip locally and
//! fail under CI. Screenshots are kept under a temp dir whose path the test prints.

use std::collections::BTreeSet;
use std::time::Duration;

use downlink_e2e::*;

const SUITE: &str = "web";
const ROOT: &str = "root";
const READER: &str = "reader";
const TOKENS: &[(&str, &[&str])] = &[(ROOT, &["admin"]), (READER, &["file.read"])];
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The file name the console must show as text, never as markup.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

fn start(variables: &[(&str, &str)]) -> TestApp {
    TestApp::start(SUITE, TOKENS, variables, CLIENT_TIMEOUT)
}

fn document(app: &TestApp) -> Json {
    let resp = app.call("GET", "/api/openapi.json", None, &[], b"");
    expect_status(&resp, 200, "GET /api/openapi.json without a token");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    resp.json()
}

#[test]
fn the_openapi_document_is_public_valid_and_names_every_route() {
    let app = start(&[]);
    let doc = document(&app);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["securitySchemes"].as_object().is_some_and(|s| !s.is_empty()), "no security scheme");

    // Every route of the manifest is described (Spin's `/x/...` wildcards as their prefix).
    let paths: BTreeSet<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
    let manifest = std::fs::read_to_string(app_manifest()).unwrap();
    for line in manifest.lines().filter_map(|l| l.trim().strip_prefix("route = \"")) {
        let route = line.trim_end_matches('"').trim_end_matches("/...");
        if route.is_empty() {
            continue; // `/...`: the gateway, described path by path
        }
        assert!(
            paths.iter().any(|p| p.starts_with(route)),
            "route `{route}` is not in the OpenAPI document: {paths:?}"
        );
    }

    // The served document is the one its generator writes (the JSON is never edited by hand).
    let source = workspace_root().join("components").join("console");
    let generated = tempdir("openapi-generated");
    let regenerated = generated.path().join("openapi.json");
    let mut generate = std::process::Command::new("python3");
    generate.arg(source.join("openapi.py")).arg(&regenerated);
    run_tool("components/console/openapi.py", generate);
    let committed = std::fs::read(source.join("openapi.json")).unwrap();
    assert!(
        std::fs::read(&regenerated).unwrap() == committed,
        "components/console/openapi.json is not what openapi.py writes: run `python3 components/console/openapi.py`"
    );
    assert_eq!(serde_json::from_slice::<Json>(&committed).unwrap(), doc, "the served document is not the file");

    let Some(tools) = WebTools::find_or_skip("the_openapi_document_is_public_valid_and_names_every_route", false)
    else {
        return;
    };
    let dir = tempdir("openapi");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let mut validate = tools.tool("openapi-spec-validator");
    validate.arg(&file);
    run_tool("openapi-spec-validator", validate);
}

#[test]
fn schemathesis_finds_no_server_error_and_every_answer_conforms() {
    let Some(tools) = WebTools::find_or_skip("schemathesis_finds_no_server_error_and_every_answer_conforms", false)
    else {
        return;
    };
    // Downloads on, but only to a name that resolves nowhere: fuzzed URLs never leave the machine.
    let app = start(&[("allow_download", "true"), ("download_allow_domains", "fuzz.invalid")]);
    // The document's examples name these, so the fuzzer also reads, prepares and zips real files.
    for path in ["/report.pdf", "/Downloads/data.csv", "/documents/report.pdf", "/documents/archive.xlsx"] {
        app.upload_as(ROOT, path, b"example content");
    }
    let dir = tempdir("schemathesis");
    let auth = format!("Authorization: {}", bearer_for(SUITE, ROOT));
    let config = workspace_root().join("tests").join("web").join("schemathesis.toml");
    let mut fuzz = tools.tool("schemathesis");
    fuzz.current_dir(dir.path())
        .args(["--config-file", arg(&config), "run", &app.host.url("/api/openapi.json"), "--url", app.host.base_url()])
        .args(["--header", &auth, "--checks", "all", "--max-examples", "25"])
        .args(["--seed", "20261202", "--request-timeout", "30", "--no-color"]);
    run_tool("schemathesis", fuzz);
}

#[test]
fn the_console_is_served_under_the_reserved_prefix_with_a_strict_policy() {
    let app = start(&[]);
    let page = app.call("GET", "/api/console/", None, &[], b"");
    expect_status(&page, 200, "GET /api/console/ without a token");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").expect("a CSP").to_string();
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "CSP without {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    let html = page.text();
    assert!(!html.contains("<script>") && !html.contains(" style="), "inline script or style in the page");
    for asset in ["/api/console/console.js", "/api/console/console.css"] {
        let resp = app.call("GET", asset, None, &[], b"");
        expect_status(&resp, 200, asset);
        assert!(html.contains(asset.trim_start_matches("/api/console/")), "the page does not load {asset}");
        // HEAD tells the length GET sends, with no body.
        let head = app.call("HEAD", asset, None, &[], b"");
        expect_status(&head, 200, &format!("HEAD {asset}"));
        let length = resp.body.len().to_string();
        assert_eq!(head.header("content-length"), Some(length.as_str()), "HEAD {asset}");
        assert!(head.body.is_empty(), "HEAD {asset} sent a body");
    }
    expect_error(&app.call("GET", "/api/console/missing.js", None, &[], b""), 404, "NOT_FOUND", "unknown asset");
    expect_error(&app.call("POST", "/api/console/", None, &[], b""), 405, "METHOD_NOT_ALLOWED", "POST to a page");

    // A browser opening the root is sent to the console; API clients still get their 401.
    let landing = app.call("GET", "/", None, &[("Accept", "text/html,*/*;q=0.8")], b"");
    assert_eq!((landing.status, landing.header("location")), (303, Some("/api/console/")), "{}", landing.text());
    expect_error(&app.call("GET", "/", None, &[], b""), 401, "UNAUTHORIZED", "an API client without a token");

    // `/api/` is the app's: no file can be stored there to be shadowed by a route.
    let refused = app.call("PUT", "/api/console-notes.txt", Some(ROOT), &[], b"x");
    expect_error(&refused, 400, "INVALID_PATH", "a file under /api/");
    assert!(refused.text().contains("reserved"), "{}", refused.text());
    assert!(app.call("GET", "/", Some(ROOT), &[], b"").json()["entries"].as_array().unwrap().is_empty());
}

#[test]
fn the_console_signs_in_uploads_downloads_zips_and_renders_names_as_text() {
    let Some(tools) =
        WebTools::find_or_skip("the_console_signs_in_uploads_downloads_zips_and_renders_names_as_text", true)
    else {
        return;
    };
    let app = start(&[("allow_download", "true"), ("download_allow_private", "true")]);
    const ORIGIN_SIZE: u64 = 6 * 1024 * 1024;
    // Slow enough that the page sees the download running, fast enough for the test.
    let origin = TestOrigin::start(vec![("/remote.bin", Route::throttled(15, ORIGIN_SIZE, 2 * 1024 * 1024, false))]);
    app.upload_as(ROOT, &format!("/hostile/{}", encode(HOSTILE_NAME)), b"markup, not a picture");
    let screenshots = kept_dir("downlink-console-screenshots");
    let downloads = tempdir("console-downloads");

    let mut browser = tools.script("console_test.py");
    browser
        .args(["--base-url", app.host.base_url(), "--token", &app.token(ROOT)])
        .args(["--origin-url", &origin.url("/remote.bin"), "--origin-size", &ORIGIN_SIZE.to_string()])
        .args(["--hostile-dir", "hostile", "--screenshots", arg(&screenshots), "--downloads", arg(downloads.path())])
        .args(["--chromium", arg(tools.chromium.as_deref().unwrap())])
        .args(["--chromedriver", arg(tools.chromedriver.as_deref().unwrap())]);
    run_tool("the console in headless Chromium", browser);
    eprintln!("console screenshots: {}", screenshots.display());

    // What the page did, seen through the API.
    let history = app.call("GET", "/?download_history=", Some(ROOT), &[], b"");
    expect_status(&history, 200, "history after the console's download");
    assert!(history.text().contains("remote.bin"), "{}", history.text());
    assert!(origin.hits("/remote.bin") >= 1);
}
