//! Bearer-token authentication against hashed tokens.
//!
//! # Configuration
//!
//! Tokens live in the secret Spin variable [`API_TOKENS_VARIABLE`] (`api_tokens`; from the
//! environment as `SPIN_VARIABLE_API_TOKENS`). Its value is a JSON array with one object per
//! token, holding the token's **SHA-256 hash**, never the token itself:
//!
//! ```json
//! [
//!   {"name": "alice", "sha256": "<64 hex digits>", "scopes": ["file.read", "file.write"]},
//!   {"name": "ci",    "sha256": "<64 hex digits>", "scopes": ["admin"]}
//! ]
//! ```
//!
//! - `name`: 1–64 characters from `A-Z a-z 0-9 . _ - @`, unique; identifies the principal.
//! - `sha256`: hex SHA-256 of the exact token string, unique.
//! - `scopes`: non-empty list of [`Scope`] strings; `admin` implies every other scope.
//! - `comment`: optional free text, ignored.
//!
//! Fields that look like plaintext secrets (`token`, `secret`, `password`, …) are rejected so a
//! mistaken paste fails loudly instead of working insecurely. `devhost new-token NAME SCOPES...`
//! (via [`generate_token_line`]) prints a fresh token and its entry.
//!
//! # Requests
//!
//! [`TokenSet::authenticate`] parses `Authorization: Bearer <token>`, hashes the token and
//! compares the hash with every configured hash in constant time, without stopping at a match,
//! so timing reveals neither which entry matched nor how much of a hash did. Token values never
//! appear in errors or `Debug` output.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::{ApiError, ErrorCode};

/// Name of the Spin variable holding the token list.
pub const API_TOKENS_VARIABLE: &str = "api_tokens";

/// Prefix of generated tokens; lets secret scanners recognise leaked Downlink tokens.
pub const TOKEN_PREFIX: &str = "dl_";

/// Longest accepted bearer token; real ones are 67 bytes, so this only bounds hashing work.
pub const MAX_TOKEN_BYTES: usize = 512;

const MAX_NAME_CHARS: usize = 64;
const PLAINTEXT_FIELDS: [&str; 7] = ["token", "secret", "password", "plaintext", "value", "key", "bearer"];

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `file.read`: get and list files, prepare, multi-download.
    FileRead,
    /// `file.write`: upload and delete files.
    FileWrite,
    /// `download.create`: start and cancel URL downloads.
    DownloadCreate,
    /// `download.read`: list active downloads and history.
    DownloadRead,
    /// `admin`: everything, including operator endpoints.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] =
        [Scope::FileRead, Scope::FileWrite, Scope::DownloadCreate, Scope::DownloadRead, Scope::Admin];

    /// The configuration string, e.g. `"file.read"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::FileRead => "file.read",
            Scope::FileWrite => "file.write",
            Scope::DownloadCreate => "download.create",
            Scope::DownloadRead => "download.read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope(crate::text::for_message(text, 40)))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a known scope (truncated for messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (known: file.read, file.write, download.create, download.read, admin)")]
pub struct UnknownScope(pub String);

/// A set of scopes; [`ScopeSet::allows`] applies "admin implies all".
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// Adds a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether the scope was granted explicitly (ignores the admin rule).
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether a request needing `scope` may proceed: granted explicitly or via `admin`.
    pub fn allows(self, scope: Scope) -> bool {
        self.contains(scope) || self.contains(Scope::Admin)
    }

    /// Whether no scope is granted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The granted scopes in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |scope| self.contains(*scope))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = ScopeSet::default();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::as_str)).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::as_str))
    }
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The configured token name; owner of prepare ids and bandwidth counters.
    pub name: String,
    /// What the token may do.
    pub scopes: ScopeSet,
}

impl Principal {
    /// Succeeds if the principal has `scope` (or `admin`), else `403 FORBIDDEN` naming it.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("token `{}` lacks the `{}` scope required here", self.name, scope.as_str()),
            ))
        }
    }
}

/// Why the token configuration cannot be used. Messages never include hashes or tokens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// The variable is absent, blank or an empty array.
    #[error(
        "no API tokens are configured, so every request is refused. Set the `api_tokens` Spin \
         variable (for example the environment variable SPIN_VARIABLE_API_TOKENS) to a JSON array \
         of {{\"name\", \"sha256\", \"scopes\"}} entries; `devhost new-token NAME SCOPES...` prints \
         a new token and its entry"
    )]
    NotConfigured,
    /// The value is not valid JSON.
    #[error("the `api_tokens` variable is not valid JSON (line {line}, column {column})")]
    InvalidJson {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
    },
    /// The value is JSON, but not an array of entries.
    #[error("the `api_tokens` variable must be a JSON array of token entries{hint}")]
    NotAnArray {
        /// Extra advice, e.g. when the value looks like a plaintext token.
        hint: &'static str,
    },
    /// One entry is wrong.
    #[error("`api_tokens` entry {position}: {problem}")]
    InvalidEntry {
        /// 1-based position in the array.
        position: usize,
        /// What is wrong, without echoing secrets.
        problem: String,
    },
}

impl TokenConfigError {
    /// The response to send while the configuration is unusable: `503 NO_TOKENS_CONFIGURED`
    /// when nothing is configured, else `500 INTERNAL_ERROR` whose message points to the log
    /// (details stay out of responses to unauthenticated clients).
    pub fn to_api_error(&self) -> ApiError {
        match self {
            TokenConfigError::NotConfigured => ApiError::new(ErrorCode::NoTokensConfigured, self.to_string()),
            _ => ApiError::internal(
                "the `api_tokens` variable is invalid, so every request is refused; the server \
                 log says why",
            ),
        }
    }
}

/// Why a request was not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    /// A scheme other than Bearer.
    #[error("unsupported authorization scheme; send `Authorization: Bearer <token>`")]
    UnsupportedScheme,
    /// `Bearer` without a well-formed token.
    #[error("malformed bearer token")]
    MalformedToken,
    /// A well-formed token that matches no configured hash.
    #[error("invalid token")]
    InvalidToken,
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let token_presented = matches!(err, AuthError::MalformedToken | AuthError::InvalidToken);
        ApiError::unauthorized(err.to_string(), token_presented)
    }
}

struct TokenEntry {
    name: String,
    sha256: [u8; 32],
    scopes: ScopeSet,
}

/// The parsed, validated token configuration. Never empty.
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and scopes only: hashes are secret-adjacent and useless in logs.
        f.debug_map().entries(self.entries.iter().map(|entry| (&entry.name, entry.scopes))).finish()
    }
}

impl TokenSet {
    /// Parses the `api_tokens` variable (`None` when the variable is unset).
    pub fn from_config(raw: Option<&str>) -> Result<TokenSet, TokenConfigError> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Err(TokenConfigError::NotConfigured);
        }
        let value: Value = match serde_json::from_str(raw) {
            Ok(value) => value,
            // A bare token pasted into the variable is not JSON; say so without echoing it.
            Err(_) if raw.starts_with(TOKEN_PREFIX) => {
                return Err(TokenConfigError::NotAnArray { hint: PLAINTEXT_HINT })
            }
            Err(err) => return Err(TokenConfigError::InvalidJson { line: err.line(), column: err.column() }),
        };
        let items = match value {
            Value::Array(items) => items,
            Value::String(_) => return Err(TokenConfigError::NotAnArray { hint: PLAINTEXT_HINT }),
            _ => return Err(TokenConfigError::NotAnArray { hint: "" }),
        };
        if items.is_empty() {
            return Err(TokenConfigError::NotConfigured);
        }
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let position = index + 1;
            let entry = parse_entry(item).map_err(|problem| TokenConfigError::InvalidEntry { position, problem })?;
            if entries.iter().any(|seen| seen.name == entry.name) {
                return Err(TokenConfigError::InvalidEntry {
                    position,
                    problem: format!("duplicate name `{}`", entry.name),
                });
            }
            if entries.iter().any(|seen| seen.sha256 == entry.sha256) {
                return Err(TokenConfigError::InvalidEntry {
                    position,
                    problem: "the same sha256 is configured twice; each token needs its own \
                              entry"
                        .to_owned(),
                });
            }
            entries.push(entry);
        }
        Ok(TokenSet { entries })
    }

    /// The configured principal names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|entry| entry.name.as_str())
    }

    /// Authenticates an `Authorization` header value (`None` when absent).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = parse_bearer(authorization.ok_or(AuthError::Missing)?)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Visit every entry and select the match with constant-time operations.
        let mut matched = subtle::Choice::from(0);
        let mut matched_index = 0u32;
        for (index, entry) in self.entries.iter().enumerate() {
            let equal = entry.sha256.ct_eq(&presented);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            matched_index.conditional_assign(&index, equal);
            matched |= equal;
        }
        if !bool::from(matched) {
            return Err(AuthError::InvalidToken);
        }
        let entry = usize::try_from(matched_index)
            .ok()
            .and_then(|index| self.entries.get(index))
            .ok_or(AuthError::InvalidToken)?;
        Ok(Principal { name: entry.name.clone(), scopes: entry.scopes })
    }
}

/// Parses the configuration and authenticates in one step, mapping every failure to the
/// response to send: `503`/`500` for an unusable configuration, `401` for a bad token.
pub fn authenticate_request(config: Option<&str>, authorization: Option<&str>) -> Result<Principal, ApiError> {
    let tokens = TokenSet::from_config(config).map_err(|err| err.to_api_error())?;
    Ok(tokens.authenticate(authorization)?)
}

const PLAINTEXT_HINT: &str = "; it looks like a plaintext token: store only its SHA-256 \
                              (`devhost new-token` prints a ready entry)";

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn parse_bearer(header: &str) -> Result<&str, AuthError> {
    let header = header.trim_matches([' ', '\t']);
    let (scheme, rest) = match header.find([' ', '\t']) {
        Some(cut) => (&header[..cut], &header[cut..]),
        None => (header, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedScheme);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !is_token68(token) {
        return Err(AuthError::MalformedToken);
    }
    Ok(token)
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

fn parse_entry(item: &Value) -> Result<TokenEntry, String> {
    let object = match item {
        Value::Object(object) => object,
        Value::String(_) => {
            return Err("entries must be objects; a bare string looks like a plaintext token, store \
                 only its SHA-256"
                .to_owned())
        }
        _ => return Err("entries must be objects with name, sha256 and scopes".to_owned()),
    };
    for field in object.keys() {
        let lower = field.to_ascii_lowercase();
        if PLAINTEXT_FIELDS.contains(&lower.as_str()) {
            return Err(format!(
                "field `{}` looks like a plaintext token; remove it and store only the token's \
                 SHA-256 in `sha256`",
                crate::text::for_message(field, 40)
            ));
        }
        if !matches!(field.as_str(), "name" | "sha256" | "scopes" | "comment") {
            return Err(format!(
                "unknown field `{}` (allowed: name, sha256, scopes, comment)",
                crate::text::for_message(field, 40)
            ));
        }
    }
    let name = match object.get("name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err("`name` must be a string".to_owned()),
        None => return Err("`name` is missing".to_owned()),
    };
    validate_name(name)?;
    let sha256 = match object.get("sha256") {
        Some(Value::String(hash)) => parse_sha256_hex(hash)?,
        Some(_) => return Err(format!("`sha256` of `{name}` must be a string")),
        None => return Err(format!("`sha256` of `{name}` is missing")),
    };
    let scope_values = match object.get("scopes") {
        Some(Value::Array(values)) => values,
        Some(_) => return Err(format!("`scopes` of `{name}` must be an array of strings")),
        None => return Err(format!("`scopes` of `{name}` is missing")),
    };
    let mut scopes = ScopeSet::default();
    for value in scope_values {
        let Value::String(text) = value else {
            return Err(format!("`scopes` of `{name}` must contain only strings"));
        };
        let scope: Scope = text.parse().map_err(|err: UnknownScope| format!("`{name}`: {err}"))?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err(format!("`scopes` of `{name}` is empty, so the token could do nothing"));
    }
    Ok(TokenEntry { name: name.clone(), sha256, scopes })
}

fn validate_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !valid_chars {
        return Err(format!("`name` must be 1-{MAX_NAME_CHARS} characters from A-Z a-z 0-9 . _ - @"));
    }
    Ok(())
}

fn parse_sha256_hex(hash: &str) -> Result<[u8; 32], String> {
    if hash.starts_with(TOKEN_PREFIX) {
        return Err("`sha256` holds what looks like a plaintext token; store the token's SHA-256 instead".to_owned());
    }
    let mut bytes = [0u8; 32];
    if hash.len() != 64 || hex::decode_to_slice(hash, &mut bytes).is_err() {
        return Err(format!(
            "`sha256` must be 64 hexadecimal characters (the token's SHA-256), got {} characters",
            hash.chars().count()
        ));
    }
    Ok(bytes)
}

/// Lower-case hex SHA-256 of a token, as stored in the configuration.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A freshly minted token. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The secret to hand to the user: `dl_` + 64 hex digits.
    pub token: String,
    /// The JSON object to add to the `api_tokens` array.
    pub config_entry: String,
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken").field("token", &"<redacted>").field("config_entry", &self.config_entry).finish()
    }
}

/// Mints a token from 32 caller-supplied random bytes (randomness is I/O, so it comes in as an
/// argument) and the configuration entry that accepts it.
pub fn generate_token_line(
    name: &str,
    scopes: &[Scope],
    random_bytes: [u8; 32],
) -> Result<MintedToken, TokenConfigError> {
    let invalid = |problem: String| TokenConfigError::InvalidEntry { position: 1, problem };
    validate_name(name).map_err(invalid)?;
    let scope_set: ScopeSet = scopes.iter().copied().collect();
    if scope_set.is_empty() {
        return Err(invalid("at least one scope is required".to_owned()));
    }
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes));
    let unique: BTreeSet<&str> = scope_set.iter().map(Scope::as_str).collect();
    let entry = serde_json::json!({
        "name": name,
        "sha256": hash_token(&token),
        "scopes": unique.into_iter().collect::<Vec<_>>(),
    });
    Ok(MintedToken { token, config_entry: entry.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, &str, &[&str])]) -> String {
        let list: Vec<Value> = entries
            .iter()
            .map(|(name, token, scopes)| {
                serde_json::json!({"name": name, "sha256": hash_token(token), "scopes": scopes})
            })
            .collect();
        Value::Array(list).to_string()
    }

    fn two_tokens() -> TokenSet {
        let raw = config(&[("alice", "dl_alice", &["file.read", "file.write"]), ("root", "dl_root", &["admin"])]);
        TokenSet::from_config(Some(&raw)).unwrap()
    }

    #[test]
    fn authenticates_each_token() {
        let tokens = two_tokens();
        let alice = tokens.authenticate(Some("Bearer dl_alice")).unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.require(Scope::FileWrite).is_ok());
        let err = alice.require(Scope::DownloadCreate).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.message.contains("download.create"));
        let root = tokens.authenticate(Some("bearer   dl_root")).unwrap();
        assert_eq!(root.name, "root");
        for scope in Scope::ALL {
            assert!(root.require(scope).is_ok());
        }
        assert!(tokens.authenticate(Some("BEARER dl_root ")).is_ok());
        assert!(tokens.authenticate(Some("Bearer\tdl_root")).is_ok());
    }

    #[test]
    fn rejects_bad_headers() {
        let tokens = two_tokens();
        let cases = [
            (None, AuthError::Missing),
            (Some(""), AuthError::UnsupportedScheme),
            (Some("Basic YWxpY2U6eA=="), AuthError::UnsupportedScheme),
            (Some("Bearerdl_alice"), AuthError::UnsupportedScheme),
            (Some("Bearer"), AuthError::MalformedToken),
            (Some("Bearer "), AuthError::MalformedToken),
            (Some("Bearer dl_alice extra"), AuthError::MalformedToken),
            (Some("Bearer dl_al\u{e9}ce"), AuthError::MalformedToken),
            (Some("Bearer ===="), AuthError::MalformedToken),
            (Some("Bearer dl_alicf"), AuthError::InvalidToken),
            (Some("Bearer DL_ALICE"), AuthError::InvalidToken),
            (Some("Bearer dl_alice="), AuthError::InvalidToken),
        ];
        for (header, want) in cases {
            assert_eq!(tokens.authenticate(header).unwrap_err(), want, "{header:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(tokens.authenticate(Some(&long)).unwrap_err(), AuthError::MalformedToken);
    }

    #[test]
    fn auth_errors_map_to_401_challenges() {
        let missing: ApiError = AuthError::Missing.into();
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.extra_headers()[0].1, "Bearer realm=\"downlink\"");
        let invalid: ApiError = AuthError::InvalidToken.into();
        assert!(invalid.extra_headers()[0].1.contains("invalid_token"));
        assert!(!invalid.message.contains("dl_"));
    }

    #[test]
    fn not_configured_is_distinct_and_explains_the_fix() {
        for raw in [None, Some(""), Some("   "), Some("[]"), Some(" [ ] ")] {
            assert_eq!(TokenSet::from_config(raw).unwrap_err(), TokenConfigError::NotConfigured);
        }
        let err = authenticate_request(None, Some("Bearer dl_x")).unwrap_err();
        assert_eq!(err.code, ErrorCode::NoTokensConfigured);
        assert_eq!(err.status(), 503);
        assert!(err.message.contains("api_tokens"));
        assert!(err.message.contains("SPIN_VARIABLE_API_TOKENS"));
        assert!(err.message.contains("devhost new-token"));
    }

    #[test]
    fn rejects_bad_configs_without_leaking_secrets() {
        let good_hash = hash_token("dl_x");
        let secret = "dl_0123456789abcdef";
        let cases: Vec<(String, &str)> = vec![
            ("{".to_owned(), "not valid JSON"),
            (secret.to_owned(), "plaintext"),
            (format!("\"{secret}\""), "plaintext"),
            ("{}".to_owned(), "JSON array"),
            (format!("[\"{secret}\"]"), "plaintext"),
            ("[1]".to_owned(), "must be objects"),
            (format!(r#"[{{"name":"a","token":"{secret}","scopes":["admin"]}}]"#), "plaintext"),
            (format!(r#"[{{"name":"a","sha256":"{secret}","scopes":["admin"]}}]"#), "plaintext"),
            (r#"[{"name":"a","sha256":"abc","scopes":["admin"]}]"#.to_owned(), "64 hexadecimal"),
            (format!(r#"[{{"name":"a","sha256":"{}","scopes":["admin"]}}]"#, "zz".repeat(32)), "64 hexadecimal"),
            (format!(r#"[{{"name":"a","sha256":"{good_hash}","scopes":["root"]}}]"#), "unknown scope `root`"),
            (format!(r#"[{{"name":"a","sha256":"{good_hash}","scopes":[]}}]"#), "is empty"),
            (format!(r#"[{{"name":"a","sha256":"{good_hash}","scopes":"admin"}}]"#), "array of strings"),
            (format!(r#"[{{"name":"a b","sha256":"{good_hash}","scopes":["admin"]}}]"#), "`name` must be"),
            (format!(r#"[{{"sha256":"{good_hash}","scopes":["admin"]}}]"#), "`name` is missing"),
            (format!(r#"[{{"name":"a","sha256":"{good_hash}","scopes":["admin"],"x":1}}]"#), "unknown field `x`"),
            (
                format!(
                    r#"[{{"name":"a","sha256":"{good_hash}","scopes":["admin"]}},
                        {{"name":"a","sha256":"{}","scopes":["admin"]}}]"#,
                    hash_token("other")
                ),
                "duplicate name",
            ),
            (
                format!(
                    r#"[{{"name":"a","sha256":"{good_hash}","scopes":["admin"]}},
                        {{"name":"b","sha256":"{}","scopes":["admin"]}}]"#,
                    good_hash.to_uppercase()
                ),
                "configured twice",
            ),
        ];
        for (raw, want) in cases {
            let err = TokenSet::from_config(Some(&raw)).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(want), "{raw}: {message}");
            assert!(!message.contains(secret), "leaked: {message}");
            assert!(!message.contains(&good_hash), "leaked hash: {message}");
            let api = err.to_api_error();
            assert_eq!(api.status(), 500);
            assert!(!api.message.contains(secret));
        }
    }

    #[test]
    fn accepts_uppercase_hex_comment_and_duplicate_scopes() {
        let raw = format!(
            r#"[{{"name":"svc@ci","sha256":"{}","scopes":["file.read","file.read"],"comment":"x"}}]"#,
            hash_token("dl_ci").to_uppercase()
        );
        let tokens = TokenSet::from_config(Some(&raw)).unwrap();
        let principal = tokens.authenticate(Some("Bearer dl_ci")).unwrap();
        assert_eq!(principal.scopes.iter().collect::<Vec<_>>(), [Scope::FileRead]);
        assert_eq!(tokens.names().collect::<Vec<_>>(), ["svc@ci"]);
    }

    #[test]
    fn debug_output_hides_hashes() {
        let tokens = two_tokens();
        let debug = format!("{tokens:?}");
        assert!(debug.contains("alice"));
        assert!(!debug.contains(&hash_token("dl_alice")));
    }

    #[test]
    fn minted_tokens_authenticate() {
        let minted = generate_token_line("bob", &[Scope::FileRead, Scope::DownloadRead], [7u8; 32]).unwrap();
        assert!(minted.token.starts_with("dl_"));
        assert_eq!(minted.token.len(), 3 + 64);
        assert!(!format!("{minted:?}").contains(&minted.token));
        assert!(!minted.config_entry.contains(&minted.token));
        let raw = format!("[{}]", minted.config_entry);
        let tokens = TokenSet::from_config(Some(&raw)).unwrap();
        let principal = tokens.authenticate(Some(&format!("Bearer {}", minted.token))).unwrap();
        assert_eq!(principal.name, "bob");
        assert!(principal.require(Scope::DownloadRead).is_ok());
        assert!(principal.require(Scope::FileWrite).is_err());
        assert!(generate_token_line("bad name", &[Scope::Admin], [0; 32]).is_err());
        assert!(generate_token_line("ok", &[], [0; 32]).is_err());
    }

    #[test]
    fn scope_parsing() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("File.Read".parse::<Scope>().is_err());
        let set: ScopeSet = [Scope::Admin].into_iter().collect();
        assert!(set.allows(Scope::FileRead));
        assert!(!set.contains(Scope::FileRead));
        assert_eq!(serde_json::to_string(&set).unwrap(), "[\"admin\"]".to_owned());
    }
}
