//! The live state every part of the gateway shares: the current [`Table`] (settings, routes,
//! pools), swapped whole on reload, and the metrics.

use std::sync::{Arc, PoisonError, RwLock};

use crate::config::{CheckedConfig, ConfigSource, HealthCheckSettings, ServerSettings};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::routes::RouteTable;

/// One consistent view of the configuration. A request holds the `Arc<Table>` it started
/// with, so a reload never changes the pool under a request in flight.
pub struct Table {
    pub server: ServerSettings,
    pub health_check: HealthCheckSettings,
    pub routes: RouteTable,
    pub pools: Vec<Arc<Pool>>,
}

impl Table {
    /// Builds the table of `checked`; pools of the same name in `previous` hand over their
    /// members' health state.
    pub fn build(checked: CheckedConfig, previous: Option<&Table>, metrics: &Metrics) -> Self {
        let CheckedConfig { config, routes } = checked;
        // In `config.pools` order, which the routes' pool indices are positions in.
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, specs)| {
                let old = previous.and_then(|t| t.pool(name));
                Arc::new(Pool::new(name, specs, old.as_deref(), metrics))
            })
            .collect();
        Self { server: config.server, health_check: config.health_check, routes, pools }
    }

    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name).cloned()
    }

    /// Pools that have upstreams configured but none healthy: the gateway is ready when empty.
    pub fn unready_pools(&self) -> Vec<&str> {
        self.pools
            .iter()
            .filter(|pool| pool.is_configured() && !pool.members().iter().any(|u| u.is_healthy()))
            .map(|pool| pool.name.as_str())
            .collect()
    }

    /// (pool, upstream, healthy) for every member, for metrics and `/upstreams`.
    pub fn health(&self) -> Vec<(String, String, bool)> {
        self.pools
            .iter()
            .flat_map(|pool| {
                pool.members().iter().map(|u| (pool.name.clone(), u.label.clone(), u.is_healthy())).collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The gateway: where its config comes from, the live table, the metrics.
pub struct Gateway {
    source: ConfigSource,
    table: RwLock<Arc<Table>>,
    pub metrics: Arc<Metrics>,
    /// Wakes the health task after a reload, so new members are checked at once.
    pub reloaded: tokio::sync::Notify,
    /// The merged `/openapi.json` (built per table, so a reload rebuilds it).
    pub openapi: crate::openapi::OpenApiCache,
}

impl Gateway {
    pub fn new(source: ConfigSource, checked: CheckedConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let table = Table::build(checked, None, &metrics);
        Self {
            source,
            table: RwLock::new(Arc::new(table)),
            metrics,
            reloaded: tokio::sync::Notify::new(),
            openapi: Default::default(),
        }
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the config again and swaps the table. On any error the running table stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let result = self.source.load().map(|checked| {
            let current = self.table();
            let server = &checked.config.server;
            if server.listen != current.server.listen
                || server.admin_listen != current.server.admin_listen
                || server.threads != current.server.threads
            {
                tracing::warn!("listen addresses and threads change only on restart");
            }
            Table::build(checked, Some(&current), &self.metrics)
        });
        match result {
            Ok(table) => {
                *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
                self.metrics.reloads_ok.inc();
                self.reloaded.notify_one();
                tracing::info!(config = %self.source.path.display(), "configuration reloaded");
                Ok(())
            }
            Err(error) => {
                self.metrics.reloads_failed.inc();
                tracing::error!(config = %self.source.path.display(), error = format!("{error:#}"), "reload failed, keeping the running configuration");
                Err(error)
            }
        }
    }
}
