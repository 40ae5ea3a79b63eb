//! The outside tools of the OpenAPI and browser tests: a Python venv with schemathesis,
//! openapi-spec-validator and selenium (`tests/web/requirements.txt`, made by `cargo xtask test`
//! under `target/web-tools`, or `DOWNLINK_WEB_TOOLS`), and Debian's `chromium` + `chromedriver`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::*;

/// Where the tools are.
pub struct WebTools {
    venv: PathBuf,
    /// The headless browser (`chromium`).
    pub chromium: Option<PathBuf>,
    /// Its WebDriver (`chromedriver`).
    pub chromedriver: Option<PathBuf>,
}

impl WebTools {
    /// The tools, or `None` after a skip notice; under `CI` a missing tool panics (CI installs
    /// them). `browser`: the test also needs chromium and chromedriver.
    pub fn find_or_skip(test: &str, browser: bool) -> Option<WebTools> {
        let venv = std::env::var_os("DOWNLINK_WEB_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target").join("web-tools"));
        let tools = WebTools { chromium: find_on_path("chromium"), chromedriver: find_on_path("chromedriver"), venv };
        let mut missing = Vec::new();
        if !tools.python().is_file() {
            missing.push(format!("the Python tools ({}; `cargo xtask test` makes them)", tools.venv.display()));
        }
        if browser && tools.chromium.is_none() {
            missing.push("chromium (apt-get install chromium)".to_string());
        }
        if browser && tools.chromedriver.is_none() {
            missing.push("chromedriver (apt-get install chromium-driver)".to_string());
        }
        if missing.is_empty() {
            return Some(tools);
        }
        let missing = missing.join(", ");
        if std::env::var_os("CI").is_some() {
            panic!("{test}: missing {missing}, and CI is set: .ci/run installs them");
        }
        eprintln!("SKIPPED {test}: missing {missing} (this test fails when CI is set)");
        None
    }

    /// The venv's Python.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    /// A command-line tool the venv installed (`schemathesis`, `openapi-spec-validator`).
    pub fn tool(&self, name: &str) -> Command {
        Command::new(self.venv.join("bin").join(name))
    }

    /// A script under `tests/web/`, run by the venv's Python.
    pub fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.python());
        cmd.arg(workspace_root().join("tests").join("web").join(name));
        cmd
    }
}

/// Runs `cmd` to the end, panicking with its whole output unless it succeeds.
pub fn run_tool(what: &str, mut cmd: Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed ({}):\n{text}", output.status);
    eprintln!("{what}:\n{text}");
    output
}

/// A directory that outlives the test (screenshots a person looks at afterwards), under the
/// system temp dir; its path is printed.
pub fn kept_dir(prefix: &str) -> PathBuf {
    let dir = tempdir(prefix).keep();
    eprintln!("{prefix}: kept at {}", dir.display());
    dir
}

/// `path` as UTF-8 for a command line.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
