//! Operator settings (Spin variables), read through a lookup function so parsing stays pure
//! and every component reads them the same way. A value that does not parse is a `500`
//! naming the variable: a typo in operator configuration must not silently change behaviour.

use crate::error::ApiError;

/// Settings read through `lookup` (a variable's value, `None` when unset or not granted).
pub struct Settings<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    /// Settings from `lookup`.
    pub fn new(lookup: F) -> Self {
        Settings { lookup }
    }

    /// The variable's value, trimmed; empty when unset.
    pub fn text(&self, name: &str) -> String {
        (self.lookup)(name).map(|raw| raw.trim().to_owned()).unwrap_or_default()
    }

    /// A whole number; `default` when empty.
    pub fn number(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        let raw = self.text(name);
        if raw.is_empty() {
            return Ok(default);
        }
        raw.parse().map_err(|_| invalid(name, &raw, "a whole number"))
    }

    /// A whole number where `0` (or empty) means "no limit".
    pub fn limit(&self, name: &str) -> Result<Option<u64>, ApiError> {
        Ok(Some(self.number(name, 0)?).filter(|value| *value > 0))
    }

    /// A positive whole number; `default` when empty.
    pub fn positive(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        match self.number(name, default)? {
            0 => Err(invalid(name, "0", "a positive whole number")),
            value => Ok(value),
        }
    }

    /// `true`/`false` and the usual spellings (`1`/`0`, `yes`/`no`, `on`/`off`); empty is false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        self.flag_or(name, false)
    }

    /// Like [`flag`](Self::flag), but empty is `default`.
    pub fn flag_or(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        let raw = self.text(name);
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            "" => Ok(default),
            _ => Err(invalid(name, &raw, "true or false")),
        }
    }
}

fn invalid(name: &str, raw: &str, expected: &str) -> ApiError {
    ApiError::internal(format!("the `{name}` variable is {raw:?}; it must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &'static [(&'static str, &'static str)]) -> Settings<impl Fn(&str) -> Option<String>> {
        Settings::new(move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn reads_and_refuses_with_the_variable_named() {
        let s =
            settings(&[("n", " 42 "), ("zero", "0"), ("bad", "1MB"), ("on", "YES"), ("off", ""), ("typo", "maybe")]);
        assert_eq!(s.number("n", 7).unwrap(), 42);
        assert_eq!(s.number("unset", 7).unwrap(), 7);
        assert_eq!(s.limit("zero").unwrap(), None);
        assert_eq!(s.limit("n").unwrap(), Some(42));
        assert!(s.positive("zero", 5).unwrap_err().message.contains("`zero`"));
        assert_eq!(s.positive("unset", 5).unwrap(), 5);
        let err = s.number("bad", 0).unwrap_err();
        assert_eq!(err.status(), 500);
        assert!(err.message.contains("`bad`") && err.message.contains("1MB"), "{}", err.message);
        assert!(s.flag("on").unwrap());
        assert!(!s.flag("off").unwrap() && !s.flag("unset").unwrap());
        assert!(s.flag("typo").unwrap_err().message.contains("`typo`"));
    }
}
