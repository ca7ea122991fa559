//! Upstream pools: round-robin over the healthy members, health state per member, and the
//! member list rebuilt when a host name resolves to other addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::split_host_port;
use crate::metrics::{Metrics, UpstreamMetrics};

/// One upstream address and whether it takes traffic.
pub struct Upstream {
    pub addr: SocketAddr,
    /// `addr`, or `name:port (addr)` when it came from a host name.
    pub label: String,
    healthy: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
    pub metrics: Arc<UpstreamMetrics>,
    /// Keep-alive connections of the express lane, newest last, with when each went idle.
    idle: Mutex<Vec<(tokio::net::TcpStream, Instant)>>,
}

impl Upstream {
    fn new(pool: &str, addr: SocketAddr, metrics: &Metrics) -> Self {
        let label = addr.to_string();
        Self {
            addr,
            metrics: metrics.upstream(pool, &label),
            label,
            // Out until its first health check passes.
            healthy: AtomicBool::new(false),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently idle keep-alive connection that has been idle less than `max_idle`
    /// (older ones are closed).
    pub fn take_idle(&self, max_idle: Duration) -> Option<tokio::net::TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let (stream, since) = idle.pop()?;
        if since.elapsed() < max_idle {
            return Some(stream);
        }
        // The newest is too old, so every other one is too.
        idle.clear();
        None
    }

    /// Keeps a connection for the next request, unless `limit` are kept already.
    pub fn put_idle(&self, stream: tokio::net::TcpStream, limit: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < limit {
            idle.push((stream, Instant::now()));
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Records an active check; returns `Some(new state)` when the state flipped.
    pub fn observe_check(&self, passed: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        if passed {
            self.failures.store(0, Relaxed);
            let passes = self.passes.fetch_add(1, Relaxed).saturating_add(1);
            (passes >= healthy_after && !self.healthy.swap(true, Relaxed)).then_some(true)
        } else {
            self.passes.store(0, Relaxed);
            let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
            (failures >= unhealthy_after && self.healthy.swap(false, Relaxed)).then_some(false)
        }
    }

    /// Live traffic could not connect: out at once, back when active checks pass again.
    /// Returns whether it was healthy until now.
    pub fn mark_down(&self) -> bool {
        self.passes.store(0, Relaxed);
        self.healthy.swap(false, Relaxed)
    }
}

/// A named set of upstreams.
pub struct Pool {
    pub name: String,
    /// The configured `host:port` entries.
    specs: Vec<String>,
    /// Addresses each host-name spec resolved to last time.
    resolved: Mutex<BTreeMap<String, Vec<SocketAddr>>>,
    members: RwLock<Arc<Vec<Arc<Upstream>>>>,
    cursor: AtomicUsize,
    pub metrics: Arc<crate::metrics::PoolMetrics>,
}

impl Pool {
    /// A pool of `specs`. Literal addresses are members at once; host names join when the
    /// health task resolves them. Members of `previous` (the pool of the same name before a
    /// reload) keep their health state and resolutions.
    pub fn new(name: &str, specs: &[String], previous: Option<&Pool>, metrics: &Metrics) -> Self {
        let resolved = previous
            .map(|p| p.resolved.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(spec, _)| specs.contains(spec))
            .collect();
        let pool = Self {
            name: name.to_owned(),
            specs: specs.to_vec(),
            resolved: Mutex::new(resolved),
            members: RwLock::new(Arc::new(Vec::new())),
            cursor: AtomicUsize::new(0),
            metrics: metrics.pool(name),
        };
        let carried = previous.map(|p| p.members()).unwrap_or_default();
        pool.rebuild_members(&carried, metrics);
        pool
    }

    pub fn members(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.members.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn is_configured(&self) -> bool {
        !self.specs.is_empty()
    }

    /// The specs that are host names, to resolve.
    pub fn host_specs(&self) -> Vec<String> {
        self.specs.iter().filter(|spec| spec.parse::<SocketAddr>().is_err()).cloned().collect()
    }

    /// Stores what `spec` resolves to now; rebuilds the members when that changed.
    pub fn set_resolved(&self, spec: &str, mut addrs: Vec<SocketAddr>, metrics: &Metrics) -> bool {
        addrs.sort();
        addrs.dedup();
        {
            let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
            if resolved.get(spec) == Some(&addrs) {
                return false;
            }
            resolved.insert(spec.to_owned(), addrs);
        }
        let current = self.members();
        self.rebuild_members(&current, metrics);
        true
    }

    fn rebuild_members(&self, carried: &[Arc<Upstream>], metrics: &Metrics) {
        let resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for spec in &self.specs {
            if let Ok(addr) = spec.parse::<SocketAddr>() {
                addrs.push(addr);
            } else if let Some(list) = resolved.get(spec) {
                addrs.extend(list);
            }
        }
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|addr| seen.insert(*addr));
        let members: Vec<Arc<Upstream>> = addrs
            .into_iter()
            .map(|addr| {
                carried
                    .iter()
                    .find(|u| u.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(&self.name, addr, metrics)))
            })
            .collect();
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(members);
    }

    /// The next healthy member round-robin, skipping those in `tried`.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<Arc<Upstream>> {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        let count = members.len();
        if count == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed);
        (0..count)
            .map(|offset| &members[(start + offset) % count])
            .find(|u| u.is_healthy() && !tried.contains(&u.addr))
            .cloned()
    }

    /// A connection to `upstream` failed or timed out: nothing was sent, and it is out at once
    /// (even when it is the last member), back when its active check passes.
    pub fn unreachable(&self, upstream: &Upstream, error: &dyn std::fmt::Display) {
        upstream.metrics.connect_failures.inc();
        if upstream.mark_down() {
            tracing::warn!(pool = %self.name, upstream = %upstream.label, %error, "upstream unreachable, out until its health check passes");
        }
    }

    /// A request failed on `upstream` before any byte of a response came back (its connection
    /// was reset or closed). On a new connection, or for a request checked before it went out
    /// on a pooled one (see `proxy::closed_by_peer`), that means the upstream is going or gone
    /// (a process being killed still takes requests into sockets nobody will read): it is out
    /// at once, as after a refused connect, while another member is healthy to take its
    /// traffic. A lone member stays in; its active check decides. An idempotent request on a
    /// pooled connection may only have met a keep-alive close; it is retried and the upstream
    /// stays in. Returns whether this took it out.
    pub fn unanswered(
        &self,
        upstream: &Upstream,
        reused: bool,
        idempotent: bool,
        error: &dyn std::fmt::Display,
    ) -> bool {
        let out = (!reused || !idempotent)
            && self.has_alternative(std::slice::from_ref(&upstream.addr))
            && upstream.mark_down();
        if out {
            tracing::warn!(pool = %self.name, upstream = %upstream.label, %error, "upstream failed a request before answering, out until its health check passes");
        }
        out
    }

    /// Whether a healthy member not in `tried` exists.
    pub fn has_alternative(&self, tried: &[SocketAddr]) -> bool {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        members.iter().any(|u| u.is_healthy() && !tried.contains(&u.addr))
    }
}

/// Resolves a `host:port` spec to every address it has.
pub async fn resolve(spec: &str) -> std::io::Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(spec).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(specs: &[&str]) -> (Pool, Metrics) {
        let metrics = Metrics::default();
        let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        (Pool::new("p", &specs, None, &metrics), metrics)
    }

    fn up(pool: &Pool) {
        for member in pool.members().iter() {
            member.observe_check(true, 1, 1);
        }
    }

    #[test]
    fn round_robin_over_healthy_members_only() {
        let (pool, _) = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        assert!(pool.select(&[]).is_none(), "members start out until a check passes");
        up(&pool);
        let picks: Vec<u16> = (0..6).map(|_| pool.select(&[]).unwrap().addr.port()).collect();
        let mut cycle = picks[..3].to_vec();
        assert_eq!(picks[3..], cycle[..], "the same order every round");
        cycle.sort_unstable();
        assert_eq!(cycle, [1, 2, 3], "each member once per round");

        pool.members()[1].mark_down();
        let picks: Vec<u16> = (0..4).map(|_| pool.select(&[]).unwrap().addr.port()).collect();
        assert!(!picks.contains(&2), "{picks:?}");

        let tried = [pool.members()[0].addr];
        for _ in 0..4 {
            assert_eq!(pool.select(&tried).unwrap().addr.port(), 3, "a retry avoids what was tried");
        }
        assert!(pool.has_alternative(&tried));
        assert!(!pool.has_alternative(&[pool.members()[0].addr, pool.members()[2].addr]));
    }

    #[test]
    fn an_unanswered_request_takes_a_member_out_while_another_is_healthy() {
        let (pool, _) = pool(&["127.0.0.1:1", "127.0.0.1:2"]);
        up(&pool);
        let [first, second] = [pool.members()[0].clone(), pool.members()[1].clone()];
        let error = "connection reset";
        assert!(!pool.unanswered(&first, true, true, &error), "a GET on a pooled connection: a keep-alive race");
        assert!(first.is_healthy());
        assert!(pool.unanswered(&first, true, false, &error), "a POST checked before it went");
        assert!(!first.is_healthy());
        assert!(!pool.unanswered(&first, false, true, &error), "already out");
        assert!(!pool.unanswered(&second, false, true, &error), "the last healthy member stays in");
        assert!(second.is_healthy());
        assert_eq!(first.observe_check(true, 1, 1), Some(true), "a passing check brings it back");
    }

    #[test]
    fn thresholds() {
        let (pool, _) = pool(&["127.0.0.1:1"]);
        let member = pool.members()[0].clone();
        assert_eq!(member.observe_check(true, 2, 3), None);
        assert_eq!(member.observe_check(true, 2, 3), Some(true));
        assert_eq!(member.observe_check(false, 2, 3), None);
        assert_eq!(member.observe_check(false, 2, 3), None);
        assert_eq!(member.observe_check(true, 2, 3), None, "a pass resets the failures");
        for _ in 0..2 {
            assert_eq!(member.observe_check(false, 2, 3), None);
        }
        assert_eq!(member.observe_check(false, 2, 3), Some(false));
        assert!(!member.is_healthy());
    }

    #[test]
    fn resolution_and_reload_keep_health_state() {
        let (pool, metrics) = pool(&["127.0.0.1:1", "svc.internal:80"]);
        assert_eq!(pool.members().len(), 1);
        let addrs: Vec<SocketAddr> = vec!["10.0.0.2:80".parse().unwrap(), "10.0.0.1:80".parse().unwrap()];
        assert!(pool.set_resolved("svc.internal:80", addrs.clone(), &metrics));
        assert!(!pool.set_resolved("svc.internal:80", addrs, &metrics), "no change, no rebuild");
        assert_eq!(pool.members().len(), 3);
        up(&pool);

        let specs = vec!["svc.internal:80".to_owned(), "127.0.0.1:9".to_owned()];
        let reloaded = Pool::new("p", &specs, Some(&pool), &metrics);
        let members = reloaded.members();
        assert_eq!(members.len(), 3);
        assert!(members.iter().filter(|m| m.addr.port() == 80).all(|m| m.is_healthy()), "kept");
        assert!(!members.iter().find(|m| m.addr.port() == 9).unwrap().is_healthy(), "new members start out");
    }
}
