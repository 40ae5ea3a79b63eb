//! Prepare bodies: the file list of `POST /api/download/prepare`, JSON or form, capped and validated.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::path::{percent_decode_once, PathError, StoragePath};

use super::*;

/// Reads the raw path strings from a prepare body, without validating them yet.
///
/// Accepted:
/// - JSON (`application/json`, `*+json`): `{"Filelist": ["/a", "/b"]}`; the key `"Filelist[]"`
///   is accepted too, and a single string stands for a one-element list (both are what
///   HTTPie's request-item syntax produces in some forms); other keys are ignored;
/// - forms (`application/x-www-form-urlencoded`): repeated `Filelist[]=`, `Filelist=` or
///   `Filelist[N]=` fields, keys and values percent-decoded once with `+` as space; a body that
///   starts with `{` is read as JSON anyway (`curl -d '{...}'` labels JSON as a form);
/// - no or another content type: JSON if the body starts with `{`, a form otherwise.
///
/// Errors: `413 PAYLOAD_TOO_LARGE` over [`MAX_PREPARE_BODY_BYTES`]; `400 INVALID_REQUEST` for
/// an empty body, multipart bodies, malformed JSON or form encoding, wrong types, a missing or
/// empty `Filelist`, or more than [`MAX_PREPARE_ENTRIES`] entries.
pub fn parse_prepare_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<String>, ApiError> {
    if body.len() > MAX_PREPARE_BODY_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("prepare body is {} bytes; the limit is {MAX_PREPARE_BODY_BYTES}", body.len()),
        ));
    }
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(ApiError::invalid_request(
            "empty body: send JSON {\"Filelist\": [\"/path\", ...]} or a form with Filelist[]=/path",
        ));
    };
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = match media_type.as_str() {
        "multipart/form-data" => {
            return Err(ApiError::invalid_request(
                "multipart bodies are not supported: send JSON {\"Filelist\": [...]} or \
                 application/x-www-form-urlencoded (HTTPie --form) with Filelist[]=/path",
            ))
        }
        "application/json" | "text/json" => true,
        other if other.ends_with("+json") => true,
        _ => first == b'{',
    };
    let list = if is_json { parse_json_body(body)? } else { parse_form_body(body)? };
    if list.is_empty() {
        return Err(ApiError::invalid_request("Filelist is empty: list at least one path"));
    }
    Ok(list)
}

/// Validates and normalises the raw paths of a prepare body; duplicates (after normalisation,
/// so `/a` and `a/` are the same) collapse to their first occurrence, keeping order.
///
/// `/` (the root, meaning every file) is allowed; an empty string is not. Every invalid path is
/// reported at once (up to a few by name) with `400 INVALID_PATH`.
pub fn validate_prepare_paths(raw: &[String]) -> Result<Vec<StoragePath>, ApiError> {
    let mut seen = HashSet::with_capacity(raw.len());
    let mut paths = Vec::with_capacity(raw.len());
    let mut bad: Vec<String> = Vec::new();
    for text in raw {
        let parsed = if text.is_empty() {
            Err("the path is empty".to_owned())
        } else {
            StoragePath::parse(text).map_err(|err| err.to_string())
        };
        match parsed {
            Ok(path) => {
                if seen.insert(path.clone()) {
                    paths.push(path);
                }
            }
            Err(why) => {
                bad.push(format!("{:?} ({why})", crate::text::for_message(text, crate::text::MESSAGE_NAME_BYTES)))
            }
        }
    }
    if bad.is_empty() {
        Ok(paths)
    } else {
        let noun = if bad.len() == 1 { "invalid path" } else { "invalid paths" };
        Err(ApiError::new(ErrorCode::InvalidPath, format!("{noun}: {}", name_some(&bad))))
    }
}

/// [`parse_prepare_body`] then [`validate_prepare_paths`]: the validated, de-duplicated list.
pub fn parse_prepare_request(content_type: Option<&str>, body: &[u8]) -> Result<Vec<StoragePath>, ApiError> {
    validate_prepare_paths(&parse_prepare_body(content_type, body)?)
}

/// `404 NOT_FOUND` naming the listed paths that do not exist (a few by name, then a count).
pub fn missing_paths_error(missing: &[StoragePath]) -> ApiError {
    let names: Vec<String> = missing
        .iter()
        .map(|path| format!("{:?}", crate::text::for_message(&format!("/{path}"), crate::text::MESSAGE_NAME_BYTES)))
        .collect();
    let noun = if missing.len() == 1 { "no such file or directory" } else { "no such files or directories" };
    ApiError::not_found(format!("{noun}: {}", name_some(&names)))
}

/// The prepare answer, exactly the reference's `{"rslt": "<id>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareResponse {
    /// The prepare id to pass to `/api/download/multi?id=`.
    pub rslt: String,
}

impl PrepareResponse {
    /// The JSON body.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }
}

pub(crate) fn parse_json_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    match serde_json::from_slice::<PrepareJson>(body) {
        Ok(PrepareJson(list)) => Ok(list),
        Err(err) if err.is_data() => Err(ApiError::invalid_request(err.to_string())),
        Err(err) => Err(ApiError::invalid_request(format!("body is not valid JSON: {err}"))),
    }
}

/// `{"Filelist": [...]}`, parsed by hand so the entry cap stops parsing early and every
/// message says what was expected.
pub(crate) struct PrepareJson(Vec<String>);

impl<'de> Deserialize<'de> for PrepareJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PrepareJsonVisitor)
    }
}

pub(crate) struct PrepareJsonVisitor;

impl<'de> Visitor<'de> for PrepareJsonVisitor {
    type Value = PrepareJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object like {\"Filelist\": [\"/path\", ...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PrepareJson, A::Error> {
        let mut list = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Filelist" || key == "Filelist[]" {
                if list.is_some() {
                    return Err(de::Error::custom("\"Filelist\" is given more than once"));
                }
                list = Some(map.next_value::<FileList>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        list.map(PrepareJson)
            .ok_or_else(|| de::Error::custom("missing \"Filelist\": expected {\"Filelist\": [\"/path\", ...]}"))
    }
}

pub(crate) struct FileList(Vec<String>);

impl<'de> Deserialize<'de> for FileList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FileListVisitor)
    }
}

pub(crate) struct FileListVisitor;

impl<'de> Visitor<'de> for FileListVisitor {
    type Value = FileList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"Filelist\" to be an array of path strings")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<FileList, E> {
        Ok(FileList(vec![value.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileList, A::Error> {
        let mut list = Vec::new();
        loop {
            if list.len() == MAX_PREPARE_ENTRIES {
                // Look at one more element only, so huge lists stop here.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(too_many_entries_message()));
                }
                break;
            }
            match seq.next_element::<PathString>()? {
                Some(PathString(path)) => list.push(path),
                None => break,
            }
        }
        Ok(FileList(list))
    }
}

pub(crate) struct PathString(String);

impl<'de> Deserialize<'de> for PathString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PathStringVisitor)
    }
}

pub(crate) struct PathStringVisitor;

impl Visitor<'_> for PathStringVisitor {
    type Value = PathString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every \"Filelist\" entry to be a path string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<PathString, E> {
        Ok(PathString(value.to_owned()))
    }
}

pub(crate) fn too_many_entries_message() -> String {
    format!("Filelist has more than {MAX_PREPARE_ENTRIES} entries; list a directory instead or split the request")
}

pub(crate) fn parse_form_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::invalid_request("form body is not UTF-8"))?;
    let mut list = Vec::new();
    // Lazily split, so a huge body stops at the cap without decoding the rest.
    for pair in text.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_filelist_key(&form_decode(raw_key)?) {
            continue;
        }
        if list.len() == MAX_PREPARE_ENTRIES {
            return Err(ApiError::invalid_request(too_many_entries_message()));
        }
        list.push(form_decode(raw_value)?);
    }
    if list.is_empty() {
        return Err(ApiError::invalid_request(
            "missing Filelist: send Filelist[]=/path fields (or JSON {\"Filelist\": [...]})",
        ));
    }
    Ok(list)
}

/// `Filelist`, `Filelist[]` or `Filelist[<digits>]` (PHP-style indexed forms).
pub(crate) fn is_filelist_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("Filelist") else {
        return false;
    };
    match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(index) => index.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then `%XX` exactly once
/// (so `%2B` is a literal `+`).
pub(crate) fn form_decode(raw: &str) -> Result<String, ApiError> {
    let spaced = raw.replace('+', " ");
    percent_decode_once(&spaced).map_err(|err| {
        let why = match err {
            PathError::NotUtf8 => "a field is not UTF-8 once decoded",
            _ => "a `%` is not followed by two hex digits",
        };
        ApiError::invalid_request(format!("form body is not valid URL encoding: {why}"))
    })
}

pub(crate) fn name_some(items: &[String]) -> String {
    let shown = items.iter().take(MAX_PATHS_IN_MESSAGE).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > MAX_PATHS_IN_MESSAGE {
        format!("{shown} and {} more", items.len() - MAX_PATHS_IN_MESSAGE)
    } else {
        shown
    }
}
