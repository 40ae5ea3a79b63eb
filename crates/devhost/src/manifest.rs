//! The subset of Spin's application manifest (`spin_manifest_version = 2`) that the dev host
//! serves. Anything outside that subset is rejected at startup rather than silently ignored, so
//! an app never appears to work here while depending on a feature this host does not provide.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed and validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Directory holding `spin.toml`; relative paths in the manifest resolve against it.
    pub base_dir: PathBuf,
    /// The application name, for logs.
    pub name: String,
    /// Application variables by name.
    pub variables: BTreeMap<String, VariableDecl>,
    /// HTTP triggers in manifest order (order matters: a duplicated route, the later one wins).
    pub triggers: Vec<HttpTrigger>,
    /// Components by id.
    pub components: BTreeMap<String, ComponentDecl>,
}

/// An application variable declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    /// Default value; absent means the variable must come from a provider when `required`.
    pub default: Option<String>,
    /// Whether startup fails when no provider supplies a value.
    #[serde(default)]
    pub required: bool,
    /// Metadata only (Spin does not hide secrets from the component that is granted them).
    #[serde(default)]
    #[allow(dead_code)]
    pub secret: bool,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// `Some(route)` for a public route, `None` for `{ private = true }`.
    pub route: Option<String>,
    /// Component id the trigger invokes.
    pub component: String,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    /// Path to the `.wasm`, resolved against the manifest directory.
    pub source: PathBuf,
    /// `[component.<id>.build]`, if any.
    pub build: Option<BuildDecl>,
    /// Variable mappings (values are templates such as `"{{ api_tokens }}"`).
    pub variables: BTreeMap<String, String>,
    /// Key-value store labels the component may open.
    pub key_value_stores: Vec<String>,
    /// Outbound HTTP allow-list entries, as written.
    pub allowed_outbound_hosts: Vec<String>,
}

/// A component's build step.
#[derive(Debug, Clone)]
pub struct BuildDecl {
    /// Shell commands, run in order.
    pub commands: Vec<String>,
    /// Working directory, resolved against the manifest directory.
    pub workdir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    trigger: Option<RawAppTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppTrigger {
    #[serde(default)]
    http: Option<RawAppHttp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppHttp {
    #[serde(default)]
    base: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: RawRoute,
    component: String,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    build: Option<RawBuild>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: RawCommand,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    One(String),
    Many(Vec<String>),
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read manifest {}", path.display()))?;
        let path = std::path::absolute(path).with_context(|| format!("bad manifest path {}", path.display()))?;
        let base_dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::parse(&text, &base_dir).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses manifest text; `base_dir` is where relative paths resolve.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if raw.spin_manifest_version != 2 {
            bail!("spin_manifest_version = {} is not supported (only 2)", raw.spin_manifest_version);
        }
        let _ = (&raw.application.version, &raw.application.authors, &raw.application.description);
        if let Some(base) =
            raw.application.trigger.as_ref().and_then(|t| t.http.as_ref()).and_then(|h| h.base.as_deref())
        {
            if base != "/" {
                bail!("application.trigger.http.base = {base:?} is not supported (only \"/\")");
            }
        }
        for (name, decl) in &raw.variables {
            validate_variable_name(name)?;
            if decl.default.is_none() && !decl.required {
                bail!("variable {name:?} needs a `default` or `required = true`");
            }
            if decl.default.is_some() && decl.required {
                bail!("variable {name:?} cannot have both `default` and `required = true`");
            }
        }

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            validate_component_id(&id)?;
            let _ = &c.description;
            let build = c.build.map(|b| {
                let _ = &b.watch; // Watch globs only matter to `spin watch`.
                BuildDecl {
                    commands: match b.command {
                        RawCommand::One(c) => vec![c],
                        RawCommand::Many(v) => v,
                    },
                    workdir: base_dir.join(b.workdir.unwrap_or_default()),
                }
            });
            for label in &c.key_value_stores {
                if label.is_empty() {
                    bail!("component {id:?}: empty key_value_stores label");
                }
            }
            for name in c.variables.keys() {
                validate_variable_name(name).with_context(|| format!("component {id:?} variables"))?;
            }
            if c.source.contains("://") || c.source.trim().is_empty() {
                bail!("component {id:?}: source {:?} is not supported (only a local .wasm path)", c.source);
            }
            components.insert(
                id,
                ComponentDecl {
                    source: base_dir.join(&c.source),
                    build,
                    variables: c.variables,
                    key_value_stores: c.key_value_stores,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                },
            );
        }

        let mut triggers = Vec::new();
        for t in raw.trigger.http {
            if t.executor.is_some() {
                bail!(
                    "trigger for component {:?}: `executor` is not supported (only the default wasi:http executor)",
                    t.component
                );
            }
            if !components.contains_key(&t.component) {
                bail!("trigger references unknown component {:?}", t.component);
            }
            let route = match t.route {
                RawRoute::Path(p) => {
                    if !p.starts_with('/') {
                        bail!("route {p:?} must start with '/'");
                    }
                    if p.starts_with("/.well-known/spin") {
                        bail!("route {p:?} is reserved by Spin");
                    }
                    Some(p)
                }
                RawRoute::Private { private: true } => None,
                RawRoute::Private { private: false } => {
                    bail!(
                        "component {:?}: `route = {{ private = false }}` is invalid; give a path instead",
                        t.component
                    )
                }
            };
            triggers.push(HttpTrigger { route, component: t.component });
        }
        if triggers.is_empty() {
            bail!("the manifest has no [[trigger.http]] entries");
        }

        Ok(Manifest {
            base_dir: base_dir.to_path_buf(),
            name: raw.application.name,
            variables: raw.variables,
            triggers,
            components,
        })
    }
}

/// Spin variable names are lower_snake_case: a letter, then letters, digits and single underscores.
pub fn validate_variable_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    if ok {
        Ok(())
    } else {
        bail!("invalid variable name {name:?}: use lower_snake_case (e.g. `api_tokens`)")
    }
}

fn validate_component_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        bail!("invalid component id {id:?}: use lower-kebab-case")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[variables]
greeting = { default = "hi" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "web"
[[trigger.http]]
route = { private = true }
component = "inner"
[component.web]
source = "target/web.wasm"
allowed_outbound_hosts = ["http://inner.spin.internal"]
variables = { greeting = "{{ greeting }}" }
[component.web.build]
command = "cargo build"
workdir = "web"
[component.inner]
source = "inner.wasm"
key_value_stores = ["default"]
"#;

    #[test]
    fn parses_the_supported_subset() {
        let m = Manifest::parse(MINIMAL, Path::new("/app")).unwrap();
        assert_eq!(m.name, "app");
        assert_eq!(m.triggers.len(), 2);
        assert_eq!(m.triggers[0].route.as_deref(), Some("/..."));
        assert_eq!(m.triggers[1].route, None);
        let web = &m.components["web"];
        assert_eq!(web.source, Path::new("/app/target/web.wasm"));
        let build = web.build.as_ref().unwrap();
        assert_eq!(build.commands, vec!["cargo build"]);
        assert_eq!(build.workdir, Path::new("/app/web"));
        assert!(m.variables["token"].required);
    }

    #[test]
    fn rejects_unknown_content_and_bad_declarations() {
        let cases = [
            (MINIMAL.replace("[application]", "[application]\nfoo = 1"), "unknown field"),
            (MINIMAL.replace("key_value_stores", "sqlite_databases"), "unknown field"),
            (MINIMAL.replace("private = true", "private = false"), "private = false"),
            (MINIMAL.replace("component = \"web\"", "component = \"nope\""), "unknown component"),
            (MINIMAL.replace("spin_manifest_version = 2", "spin_manifest_version = 1"), "not supported"),
            (MINIMAL.replace("greeting = { default = \"hi\" }", "greeting = {}"), "needs a `default`"),
            (MINIMAL.replace("greeting = { default", "Greeting = { default"), "invalid variable name"),
            (MINIMAL.replace("route = \"/...\"", "route = \"/.well-known/spin/x\""), "reserved"),
            (
                MINIMAL.replace("[component.web.build]", "[component.web.dependencies]\n[component.web.build]"),
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", Manifest::parse(&text, Path::new("/")).unwrap_err());
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
