//! Assembles the pipeline — api → compliance → queue → carrier → dlr — and
//! runs it; tests and `main` start the whole gateway through [`Gateway`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Accounts, AppState};
use crate::carrier::route::Routing;
use crate::carrier::{Carriers, SessionPolicy};
use crate::compliance::{Admission, InboundHandler, Preferences, RuleBook, RulesError};
use crate::config::{Config, ConfigError, StoreBackend, StoreConfig};
use crate::dlr;
use crate::metrics::Metrics;
use crate::queue::{DurableStore, MemoryStore, Queue, Store, StoreError};
use crate::shared_limit::SharedLimits;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The countries file is invalid.
    #[error("cannot load the country rules")]
    Rules(#[from] RulesError),
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Address tried.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Gateway {
    admission: Arc<Admission>,
    countries_file: std::path::PathBuf,
    http_addr: SocketAddr,
    metrics: Arc<Metrics>,
    queue: Arc<Queue>,
    http_stop: CancellationToken,
    http: JoinHandle<()>,
    carriers: Carriers,
    dlr: JoinHandle<()>,
    scheduler_stop: CancellationToken,
    scheduler: JoinHandle<()>,
    webhooks: JoinHandle<()>,
    housekeeping_stop: CancellationToken,
    housekeeping: JoinHandle<()>,
}

impl Gateway {
    /// Opens the configured store (recovering what it holds) and starts every stage.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = match config.store.backend {
            StoreBackend::Memory => Arc::new(MemoryStore::new()),
            StoreBackend::Embedded | StoreBackend::Redis => {
                let store_config = config.store.clone();
                let m = metrics.clone();
                let store =
                    tokio::task::spawn_blocking(move || DurableStore::open(&store_config, m))
                        .await
                        .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
                Arc::new(store)
            }
        };
        Self::start_with_store(config, store, metrics).await
    }

    /// Starts every stage on the given store.
    pub async fn start_with_store(
        config: Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        // Nodes on Redis share each carrier's TPS and each account's rate.
        let shared_limits = match config.store.backend {
            StoreBackend::Redis => Some(SharedLimits::new(&config.store.redis)?),
            _ => None,
        };
        let mut accounts = Accounts::from_config(&config.accounts)?;
        if let Some(shared) = &shared_limits {
            accounts.share_limits(shared);
        }
        let accounts = Arc::new(accounts);
        let rules = RuleBook::load(&config.compliance.countries)?;
        // Compile the recipient patterns of the configured countries off the
        // runtime, so their first messages do not wait for it.
        let countries: Vec<String> = rules.countries().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            let warmed =
                crate::compliance::number::warm_patterns(countries.iter().map(String::as_str));
            tracing::debug!(countries = warmed, "number patterns compiled");
        });
        let preferences = Arc::new(Preferences::load(store.clone(), metrics.clone()).await?);
        let routing = Arc::new(Routing::new(&config.carriers, &config.routes));
        let weights = config
            .accounts
            .iter()
            .map(|a| (a.id.clone(), a.weight))
            .collect();
        let queue = Queue::new(
            store,
            routing,
            metrics.clone(),
            config.scheduler.clone(),
            weights,
            config.store.max_backlog,
        );
        let housekeeping_stop = CancellationToken::new();
        let housekeeping = tokio::spawn(housekeeping(
            queue.clone(),
            config.store.clone(),
            housekeeping_stop.clone(),
        ));

        let scheduler_stop = CancellationToken::new();
        let scheduler = tokio::spawn(queue.clone().run_scheduler(scheduler_stop.clone()));
        if config.store.backend == StoreBackend::Redis {
            // Nodes sharing the store take over the work of one that died.
            let every = Duration::from_millis(config.store.redis.lease_ms.max(1000) / 3);
            tokio::spawn(queue.clone().run_adoption(every, scheduler_stop.clone()));
            // The submit guard sees other nodes' opt-outs within a tick.
            let (prefs, stop) = (preferences.clone(), scheduler_stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => prefs.sync().await,
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        let webhooks = dlr::webhooks::spawn(
            queue.clone(),
            metrics.clone(),
            config.webhooks.clone(),
            &config.accounts,
            scheduler_stop.clone(),
        );

        let (inbound_tx, inbound_rx) = mpsc::channel(dlr::INBOUND_CAPACITY);
        let admission = Arc::new(
            Admission::with_rules(config.messages.clone(), rules, preferences.clone())
                .with_accounts(&config.accounts)?,
        );
        let keywords = Arc::new(InboundHandler::new(
            preferences.clone(),
            admission.clone(),
            queue.clone(),
            metrics.clone(),
            &config.accounts,
        ));
        let dead_letters = dlr::DeadLetters::default();
        let dlr = dlr::spawn(
            queue.clone(),
            metrics.clone(),
            keywords,
            &config.carriers,
            dead_letters.clone(),
            inbound_rx,
        );
        let carriers = Carriers::start(
            &config.carriers,
            queue.clone(),
            preferences.clone(),
            inbound_tx,
            metrics.clone(),
            SessionPolicy {
                grace: Duration::from_secs(config.shutdown.grace_s),
                max_attempts: config.scheduler.max_attempts,
                shared_limits: shared_limits.as_ref(),
            },
        );

        let state = AppState::new(api::Shared {
            accounts,
            admission: admission.clone(),
            countries_file: Arc::new(config.compliance.countries.clone()),
            preferences,
            queue: queue.clone(),
            metrics: metrics.clone(),
            binds_up: carriers.binds_up_handle(),
            concat_ref: Arc::new(AtomicU8::new(rand::random())),
            max_body_bytes: config.http.max_body_bytes,
            max_batch_body_bytes: config.http.max_batch_body_bytes,
            body_timeout: Duration::from_secs(config.http.body_timeout_s),
            idempotency: Arc::default(),
            idempotency_window: chrono::Duration::hours(i64::from(config.store.idempotency_hours)),
            dead_letters,
        });
        let addr = config.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;
        let http_stop = CancellationToken::new();
        let stop = http_stop.clone();
        let app = api::router(state);
        let deadlines = api::server::Deadlines {
            header: Duration::from_secs(config.http.header_timeout_s),
        };
        let http = tokio::spawn(api::server::serve(
            listener,
            app,
            deadlines,
            metrics.clone(),
            stop,
        ));
        tracing::info!(%http_addr, "smsgate listening");
        Ok(Self {
            admission,
            countries_file: config.compliance.countries.clone(),
            http_addr,
            metrics,
            queue,
            http_stop,
            http,
            carriers,
            dlr,
            scheduler_stop,
            scheduler,
            webhooks,
            housekeeping_stop,
            housekeeping,
        })
    }

    /// Re-reads the countries file; an invalid file is refused and the rules
    /// in force stay.
    pub fn reload_rules(&self) -> Result<(), RulesError> {
        let rules = RuleBook::load(&self.countries_file)?;
        self.admission.set_rules(rules);
        tracing::info!(file = %self.countries_file.display(), "country rules reloaded");
        Ok(())
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The queue stage (depths, lookups).
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Number of carrier binds up.
    pub fn binds_up(&self) -> usize {
        self.carriers.binds_up()
    }

    /// Graceful stop: refuse new HTTP connections, finish in-flight requests,
    /// drain the binds' windows (up to the grace period), unbind, and let the
    /// DLR stage finish what it received.
    pub async fn shutdown(self) {
        self.http_stop.cancel();
        let _ = self.http.await;
        self.carriers.shutdown().await;
        // Every inbound sender is gone now, so the DLR stage drains and ends.
        let _ = self.dlr.await;
        self.scheduler_stop.cancel();
        let _ = self.scheduler.await;
        let _ = self.webhooks.await;
        self.housekeeping_stop.cancel();
        let _ = self.housekeeping.await;
        if let Err(e) = self.queue.close().await {
            tracing::error!(error = %e, "store did not close cleanly");
        }
        tracing::info!("smsgate stopped");
    }
}

/// How often housekeeping (retention, idempotency expiry) runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// Periodic compaction: finished messages past retention, idempotency keys
/// past their window, submitted messages whose receipt never came.
async fn housekeeping(queue: Arc<Queue>, config: StoreConfig, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let now = chrono::Utc::now();
        let result = queue
            .compact(
                now - chrono::Duration::days(i64::from(config.retention_days)),
                now - chrono::Duration::hours(i64::from(config.idempotency_hours)),
                now - chrono::Duration::hours(i64::from(config.dlr_wait_hours)),
            )
            .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "compaction"),
            Err(e) => tracing::error!(error = %e, "compaction failed"),
        }
    }
}
