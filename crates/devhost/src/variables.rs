//! Application variables: providers (CLI `--variable`, `SPIN_VARIABLE_<NAME>` environment,
//! a `.env` file, manifest defaults) and the `{{ name }}` templates components map them with.

use crate::manifest::{validate_variable_name, Manifest};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Resolved values of every application variable.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    values: HashMap<String, String>,
}

impl Variables {
    /// Resolves every declared variable. Precedence: `--variable`, then the process environment
    /// (`SPIN_VARIABLE_<UPPER_NAME>`), then `.env` in `dotenv_dir`, then the manifest default.
    /// A required variable with no value is a startup error that names it.
    pub fn resolve(
        manifest: &Manifest,
        cli: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
        dotenv_dir: &Path,
    ) -> Result<Self> {
        let dotenv = read_dotenv(&dotenv_dir.join(".env"))?;
        for (name, _) in cli {
            if !manifest.variables.contains_key(name) {
                bail!("--variable {name}: the manifest declares no variable {name:?}");
            }
        }
        let mut values = HashMap::new();
        for (name, decl) in &manifest.variables {
            let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
            let value = cli
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(&env_name))
                .or_else(|| dotenv.get(&env_name).cloned())
                .or_else(|| decl.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => {
                    bail!("required variable {name:?} has no value: pass `--variable {name}=...` or set {env_name}")
                }
            }
        }
        Ok(Variables { values })
    }

    /// Expands `{{ name }}` references in `template`.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| anyhow!("unterminated `{{{{` in template {template:?}"))?;
            let name = after[..end].trim();
            validate_variable_name(name).with_context(|| format!("in template {template:?}"))?;
            let value = self
                .values
                .get(name)
                .ok_or_else(|| anyhow!("template {template:?} refers to undeclared variable {name:?}"))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Expands a component's `[component.x.variables]` mappings into final values.
    pub fn component_values(&self, mappings: &BTreeMap<String, String>) -> Result<HashMap<String, String>> {
        mappings
            .iter()
            .map(|(k, t)| Ok((k.clone(), self.expand(t).with_context(|| format!("variable {k:?}"))?)))
            .collect()
    }
}

/// Parses `KEY=VALUE` lines (optional quotes, `#` comments); a missing file is empty.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').ok_or_else(|| anyhow!("{}:{}: expected KEY=VALUE", path.display(), n + 1))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses a `k=v` command-line pair.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "a"
[variables]
greeting = { default = "hello" }
token = { required = true }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
variables = { message = "{{ greeting }}, {{token}}!" }
"#,
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn precedence_cli_env_default() {
        let m = manifest();
        let dir = std::env::temp_dir();
        let env = |k: &str| (k == "SPIN_VARIABLE_TOKEN").then(|| "from-env".to_string());
        let v = Variables::resolve(&m, &[], &env, &dir).unwrap();
        assert_eq!(v.expand("{{ token }}").unwrap(), "from-env");
        assert_eq!(v.expand("{{ greeting }}").unwrap(), "hello");
        let cli = vec![("token".to_string(), "from-cli".to_string())];
        let v = Variables::resolve(&m, &cli, &env, &dir).unwrap();
        let values = v.component_values(&m.components["c"].variables).unwrap();
        assert_eq!(values["message"], "hello, from-cli!");
    }

    #[test]
    fn missing_required_names_the_variable() {
        let err = Variables::resolve(&manifest(), &[], &|_| None, &std::env::temp_dir()).unwrap_err();
        assert!(err.to_string().contains("\"token\""), "{err}");
        assert!(err.to_string().contains("SPIN_VARIABLE_TOKEN"), "{err}");
    }

    #[test]
    fn bad_templates_are_errors() {
        let v = Variables { values: HashMap::from([("a".into(), "1".into())]) };
        assert!(v.expand("{{ a").is_err());
        assert!(v.expand("{{ b }}").is_err());
        assert!(v.expand("{{ A }}").is_err());
        assert_eq!(v.expand("x{{a}}y{{ a }}").unwrap(), "x1y1");
    }
}
