//! The routing table: method + path pattern → pool, first match wins.

use anyhow::{Context, bail};
use http::Method;

use crate::config::RouteConfig;

/// One segment of a path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `:name`: any one non-empty segment.
    Param,
    /// `**` (last only): the rest of the path, zero or more segments.
    Rest,
}

/// A parsed path pattern such as `/api/applications/:token/chats` or `/sessions/**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    segments: Vec<Segment>,
}

impl RoutePattern {
    pub fn parse(pattern: &str) -> anyhow::Result<Self> {
        let Some(rest) = pattern.strip_prefix('/') else {
            bail!("path pattern {pattern:?} must start with '/'");
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let segment = if *part == "**" {
                if index + 1 != parts.len() {
                    bail!("path pattern {pattern:?}: '**' must come last");
                }
                Segment::Rest
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() {
                    bail!("path pattern {pattern:?}: a parameter needs a name");
                }
                Segment::Param
            } else if part.contains('*') || part.contains(':') {
                bail!("path pattern {pattern:?}: '*' and ':' only as whole segments");
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// Whether `path` (without its query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::Param => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(literal) => match parts.next() {
                    Some(part) if part == literal => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

struct Route {
    /// Empty: any method.
    methods: Vec<Method>,
    patterns: Vec<RoutePattern>,
    pool: usize,
}

/// The compiled `[[routes]]` of the config.
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Checks and compiles `routes`: each names a pool `pool_index` knows (it maps a pool name
    /// to its index in the pool list), has paths, and its methods and path patterns parse.
    /// Methods are matched upper-cased.
    pub fn build(routes: &[RouteConfig], pool_index: impl Fn(&str) -> Option<usize>) -> anyhow::Result<Self> {
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let Some(pool) = pool_index(&route.pool) else {
                bail!("route {index}: unknown pool {:?}", route.pool);
            };
            if route.paths.is_empty() {
                bail!("route {index}: no paths");
            }
            let methods = route
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .with_context(|| format!("route {index}: bad method {m:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let patterns = route
                .paths
                .iter()
                .map(|p| RoutePattern::parse(p).with_context(|| format!("route {index}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            compiled.push(Route { methods, patterns, pool });
        }
        Ok(Self { routes: compiled })
    }

    /// The pool index for `method path`, or `None` when no route matches.
    pub fn find(&self, method: &Method, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|route| {
                (route.methods.is_empty() || route.methods.contains(method))
                    && route.patterns.iter().any(|p| p.matches(path))
            })
            .map(|route| route.pool)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{CheckedConfig, GatewayConfig};

    #[test]
    fn patterns() {
        let p = RoutePattern::parse("/api/applications/:token/chats").unwrap();
        assert!(p.matches("/api/applications/abc/chats"));
        assert!(!p.matches("/api/applications/abc/chats/1"));
        assert!(!p.matches("/api/applications//chats"), "a parameter is never empty");
        assert!(!p.matches("/api/applications/abc"));
        assert!(!p.matches("/api/applications/abc/chatsx"));

        let rest = RoutePattern::parse("/sessions/**").unwrap();
        for path in ["/sessions", "/sessions/", "/sessions/1", "/sessions/1/x"] {
            assert!(rest.matches(path), "{path}");
        }
        assert!(!rest.matches("/sessionsx"));
        assert!(!rest.matches("/"));

        let root = RoutePattern::parse("/").unwrap();
        assert!(root.matches("/"));
        assert!(!root.matches("/a"));

        for bad in ["api", "/a/**/b", "/a/:", "/a/b*", "/a/x:y"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// The routing of DESIGN.md, straight from `deploy/gateway.toml`.
    #[test]
    fn the_deploy_table_routes_every_documented_route() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway.toml");
        let CheckedConfig { config, routes: table } = GatewayConfig::load(&path, None).unwrap().check().unwrap();
        let names: Vec<&str> = config.pools.keys().map(String::as_str).collect();
        let route = |method: &str, path: &str| {
            table.find(&Method::from_bytes(method.as_bytes()).unwrap(), path).map(|i| names[i])
        };
        let app = "/api/applications/5f0c";
        // (method, pool, paths); `{app}` stands for an application's path.
        for (method, pool, paths) in [
            ("POST", "chat-write", &["{app}/chats", "{app}/chats/3", "{app}/chats/3/messages"][..]),
            ("GET", "chat-read", &["{app}/chats/3/messages", "{app}/chats", "{app}/chats/3", "{app}/chats/3/search"]),
            ("PUT", "chat-read", &["{app}/chats/3"]),
            ("PATCH", "chat-read", &["{app}/chats/3/messages/2", "{app}"]),
            ("POST", "chat-read", &["{app}/chats/3/messages/2", "/api/applications"]),
            ("GET", "chat-read", &["/api/applications"]),
            ("DELETE", "chat-read", &["/api/applications"]),
            ("GET", "segments", &["/segments", "/segments/users/7/history", "/history/report.csv", "/api/v1/flags/1"]),
            ("POST", "segments", &["/segments/users", "/api/v1/segments/evaluate", "/api/v1/decisions"]),
            ("POST", "events", &["/sessions/", "/user/batches"]),
            ("GET", "events", &["/events/", "/errors/", "/user/last-events"]),
            ("DELETE", "events", &["/events/9"]),
        ] {
            for path in paths {
                let path = path.replace("{app}", app);
                assert_eq!(route(method, &path), Some(pool), "{method} {path}");
            }
        }
        for path in ["/", "/api", "/api/nothing-here", "/api/v1", "/api/v2/segments", "/metrics"] {
            assert_eq!(route("GET", path), None, "{path}");
        }
    }
}
