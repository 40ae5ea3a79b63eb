//! HTTP routing with Spin's rules: exact routes beat wildcards (`/prefix/...`), among wildcards
//! the longest prefix wins, `:name` matches exactly one segment, and when two routes are the
//! same the later one wins.

use anyhow::{bail, Result};

/// One routable entry: a public route pattern mapped to a component.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route as written in the manifest, e.g. `/api/...`.
    pub raw: String,
    /// Component id.
    pub component: String,
    segments: Vec<Segment>,
    wildcard: bool,
    order: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// The outcome of routing a request path.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// Component id.
    pub component: String,
    /// Route as declared (`spin-matched-route`, `spin-raw-component-route`).
    pub raw_route: String,
    /// Route without a trailing wildcard (`spin-component-route`).
    pub component_route: String,
    /// The part of the path after the matched prefix (`spin-path-info`).
    pub path_info: String,
    /// Values of `:name` segments (`spin-path-match-<name>`).
    pub params: Vec<(String, String)>,
}

/// A set of routes, built once at startup.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds a router from `(route, component)` pairs in manifest order.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut routes = Vec::new();
        for (order, (raw, component)) in entries.into_iter().enumerate() {
            routes.push(Route::parse(raw, component, order)?);
        }
        Ok(Router { routes })
    }

    /// The routes in manifest order, for the startup banner.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the component for a request path (no query string).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let mut best: Option<(Rank, &Route, RouteMatch)> = None;
        for route in &self.routes {
            if let Some(m) = route.matches(path) {
                let rank = route.rank();
                if best.as_ref().is_none_or(|(b, _, _)| rank >= *b) {
                    best = Some((rank, route, m));
                }
            }
        }
        best.map(|(_, _, m)| m)
    }
}

/// Orders candidate matches: exact first, then more segments, then more literal segments,
/// then later declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    exact: bool,
    segments: usize,
    literals: usize,
    order: usize,
}

impl Route {
    fn parse(raw: &str, component: &str, order: usize) -> Result<Self> {
        let Some(rest) = raw.strip_prefix('/') else {
            bail!("route {raw:?} must start with '/'");
        };
        let (body, wildcard) = if rest == "..." {
            ("", true)
        } else if let Some(b) = rest.strip_suffix("/...") {
            (b, true)
        } else {
            (rest.trim_end_matches('/'), false)
        };
        let mut segments = Vec::new();
        if !body.is_empty() {
            for seg in body.split('/') {
                if seg.is_empty() || seg == "..." {
                    bail!("route {raw:?} has an empty segment or a misplaced `...`");
                }
                segments.push(match seg.strip_prefix(':') {
                    Some(name) if !name.is_empty() => Segment::Param(name.to_string()),
                    Some(_) => bail!("route {raw:?} has a parameter without a name"),
                    None => Segment::Literal(seg.to_string()),
                });
            }
        }
        Ok(Route { raw: raw.to_string(), component: component.to_string(), segments, wildcard, order })
    }

    fn rank(&self) -> Rank {
        Rank {
            exact: !self.wildcard,
            segments: self.segments.len(),
            literals: self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count(),
            order: self.order,
        }
    }

    /// The route without its trailing wildcard.
    pub fn component_route(&self) -> String {
        if self.wildcard {
            self.raw.strip_suffix("/...").unwrap_or("").to_string()
        } else {
            self.raw.clone()
        }
    }

    fn matches(&self, path: &str) -> Option<RouteMatch> {
        // `pos` always points at the '/' that opens the next segment (or the end of the path).
        let mut pos = 0usize;
        let mut params = Vec::new();
        for seg in &self.segments {
            if path.as_bytes().get(pos) != Some(&b'/') {
                return None;
            }
            let start = pos + 1;
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            let head = &path[start..end];
            match seg {
                _ if head.is_empty() => return None,
                Segment::Literal(lit) if lit == head => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), head.to_string())),
            }
            pos = end;
        }
        let path_info = &path[pos..];
        if !path_info.is_empty() && !path_info.starts_with('/') {
            return None;
        }
        // Exact routes tolerate one trailing slash, nothing more.
        let exact_match = path_info.is_empty() || path_info == "/";
        if !self.wildcard && !exact_match {
            return None;
        }
        Some(RouteMatch {
            component: self.component.clone(),
            raw_route: self.raw.clone(),
            component_route: self.component_route(),
            path_info: if self.wildcard { path_info.to_string() } else { String::new() },
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new([
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/items", "items"),
            ("/api/v1/downloads/...", "downloads"),
            ("/users/:id/files/...", "user-files"),
            ("/dup", "first"),
            ("/dup", "second"),
        ])
        .unwrap()
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router();
        assert_eq!(r.route("/api/items").unwrap().component, "items");
        assert_eq!(r.route("/api/other").unwrap().component, "api");
        assert_eq!(r.route("/api/v1/downloads/abc").unwrap().component, "downloads");
        assert_eq!(r.route("/apix").unwrap().component, "root");
        assert_eq!(r.route("/").unwrap().component, "root");
        assert_eq!(r.route("/dup").unwrap().component, "second");
    }

    #[test]
    fn path_info_follows_spin() {
        let r = Router::new([("/test/...", "t")]).unwrap();
        assert_eq!(r.route("/test").unwrap().path_info, "");
        assert_eq!(r.route("/test/").unwrap().path_info, "/");
        assert_eq!(r.route("/test/hello").unwrap().path_info, "/hello");
        assert_eq!(r.route("/test/a/b/").unwrap().path_info, "/a/b/");
        assert!(r.route("/testing").is_none());
        let root = Router::new([("/...", "r")]).unwrap();
        assert_eq!(root.route("/a b/c").unwrap().path_info, "/a b/c");
        assert_eq!(root.route("/").unwrap().path_info, "/");
        let m = root.route("/x").unwrap();
        assert_eq!(m.component_route, "");
        assert_eq!(m.raw_route, "/...");
    }

    #[test]
    fn params_match_one_segment() {
        let r = router();
        let m = r.route("/users/42/files/a/b").unwrap();
        assert_eq!(m.component, "user-files");
        assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(m.path_info, "/a/b");
        assert_eq!(r.route("/users//files/a").unwrap().component, "root");
    }

    #[test]
    fn rejects_malformed_routes() {
        for bad in ["api", "/a//b", "/a/.../b", "/:"] {
            assert!(Router::new([(bad, "c")]).is_err(), "{bad}");
        }
    }
}
