//! The real app (`spin.toml`) under test, and the principals and tokens of a suite.

use std::time::Duration;

use crate::*;

/// The deterministic token of principal `name` in test suite `suite`: `dl_` + 64 hex digits.
pub fn token_for(suite: &str, name: &str) -> String {
    format!("dl_{}", sha256_hex(format!("downlink-e2e/{suite}/{name}").as_bytes()))
}

/// The `api_tokens` variable for `(name, scopes)` entries of `suite`: hashes only, never the
/// tokens themselves.
pub fn tokens_config(suite: &str, entries: &[(&str, &[&str])]) -> String {
    let list: Vec<Json> = entries
        .iter()
        .map(|(name, scopes)| {
            serde_json::json!({
                "name": name,
                "sha256": downlink_core::auth::hash_token(&token_for(suite, name)),
                "scopes": scopes,
            })
        })
        .collect();
    Json::Array(list).to_string()
}

/// The `Authorization` value of principal `name` in suite `suite`: `Bearer <token>`.
pub fn bearer_for(suite: &str, name: &str) -> String {
    format!("Bearer {}", token_for(suite, name))
}

/// The real app (`spin.toml`) on the selected host and store ([`DevHost::selected`]) with
/// `api_tokens` = [`tokens_config`]`(suite, entries)`.
pub fn app_builder(suite: &str, entries: &[(&str, &[&str])]) -> DevHostBuilder {
    DevHost::selected(app_manifest()).variable("api_tokens", &tokens_config(suite, entries))
}

/// A running host (dev host or Spin, see [`test_env`]) of the real app plus a client with the suite's own timeout; principals
/// are the suite's token names (see [`token_for`]). Suites wrap it with their own helpers.
pub struct TestApp {
    pub host: DevHost,
    pub agent: ureq::Agent,
    suite: &'static str,
    /// Failure messages show only this many last lines of the host's stderr (None: all).
    stderr_lines: Option<usize>,
}

impl TestApp {
    /// The real app with suite `suite`'s token `entries` and then `variables` (`name`, `value`).
    pub fn start(
        suite: &'static str,
        entries: &[(&str, &[&str])],
        variables: &[(&str, &str)],
        client_timeout: Duration,
    ) -> TestApp {
        let mut builder = app_builder(suite, entries);
        for (name, value) in variables {
            builder = builder.variable(name, value);
        }
        TestApp::from_builder(suite, builder, client_timeout)
    }

    /// Starts `builder` (panicking with the host's output when it does not come up).
    pub fn from_builder(suite: &'static str, builder: DevHostBuilder, client_timeout: Duration) -> TestApp {
        let host = builder.start().unwrap_or_else(|f| panic!("{f}"));
        TestApp { host, agent: client_with_timeout(client_timeout), suite, stderr_lines: None }
    }

    /// Show only the last `lines` lines of the host's stderr in failure messages.
    pub fn with_stderr_tail(mut self, lines: usize) -> TestApp {
        self.stderr_lines = Some(lines);
        self
    }

    /// The host's stderr as failure messages show it (see [`TestApp::with_stderr_tail`]).
    pub fn stderr_tail(&self) -> String {
        let all = self.host.stderr();
        match self.stderr_lines {
            None => all,
            Some(n) => {
                let lines: Vec<&str> = all.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
        }
    }

    /// The token of principal `name`.
    pub fn token(&self, name: &str) -> String {
        token_for(self.suite, name)
    }

    /// One exchange as `principal` (None: no `Authorization` header); bodies up to 64 MiB.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        principal: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let auth;
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(name) = principal {
            auth = bearer_for(self.suite, name);
            all.push(("Authorization", auth.as_str()));
        }
        all.extend_from_slice(headers);
        http_request(&self.agent, method, &self.host.url(path), &all, body).unwrap_or_else(|e| {
            panic!("{method} {path} failed: {e}\n--- {} stderr ---\n{}", self.host.kind(), self.stderr_tail())
        })
    }

    /// `PUT url` as `principal`, expecting 201 or 200.
    pub fn upload_as(&self, principal: &str, url: &str, data: &[u8]) {
        let resp = self.call("PUT", url, Some(principal), &[], data);
        assert!(resp.status == 201 || resp.status == 200, "PUT {url}: {} {}", resp.status, resp.text());
    }
}
