//! The gateway's configuration: one serde tree, mirrored field by field by
//! `config/smsgate.toml` (which documents every field).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// The values parsed but do not make sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Root of the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// Message defaults and limits.
    #[serde(default)]
    pub messages: MessagesConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Where messages and queues are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Per-country rules.
    #[serde(default)]
    pub compliance: ComplianceConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// API clients.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// SMPP carriers (SMSCs) to send through.
    #[serde(default)]
    pub carriers: Vec<CarrierConfig>,
    /// Which carriers take which messages (first match by specificity);
    /// without a match, every carrier in the order listed.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Queue scheduling: memory window, retries.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Status webhook delivery.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
}

/// How status webhooks are delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Seconds allowed for one POST (connect included).
    pub timeout_s: u64,
    /// First retry delay in milliseconds (doubling, with jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub retry_max_ms: u64,
    /// Hours after which an undeliverable webhook is given up.
    pub give_up_hours: u64,
    /// Most POSTs in flight to one host.
    pub per_host: usize,
    /// Most POSTs in flight overall.
    pub concurrency: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout_s: 10,
            retry_base_ms: 1000,
            retry_max_ms: 600_000,
            give_up_hours: 24,
            per_host: 32,
            concurrency: 256,
        }
    }
}

/// One routing rule: the messages it matches go to `carriers`, the first
/// available one first (failover down the list).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Recipient country (ISO alpha-2).
    #[serde(default)]
    pub country: Option<String>,
    /// Recipient number prefix in E.164 (`+4474`); the longest matching prefix wins.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Message kind.
    #[serde(default)]
    pub kind: Option<crate::message::Kind>,
    /// Sending account id.
    #[serde(default)]
    pub account: Option<String>,
    /// Carrier names, in order of preference.
    pub carriers: Vec<String>,
}

/// How the queue schedules and retries.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Ready messages held in memory per account and kind; the rest wait in
    /// the store and are paged in as the window drains.
    pub window_per_queue: usize,
    /// Messages read from the store per page.
    pub page_size: usize,
    /// Attempts a message gets for transient carrier errors (timeouts,
    /// errors listed as `retry`) before it fails. Throttling, full queues and
    /// lost connections do not count.
    pub max_attempts: u32,
    /// First retry delay after a transient error, in milliseconds (doubling).
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            window_per_queue: 2048,
            page_size: 512,
            max_attempts: 5,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
        }
    }
}

/// HTTP listener settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger bodies get 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/messages/batch` (up to 1,000 messages).
    pub max_batch_body_bytes: usize,
    /// Seconds a client has to send a whole request head (request line and
    /// headers); then 408 `request_timeout` and the connection is closed.
    /// An idle keep-alive connection is closed after as long.
    pub header_timeout_s: u64,
    /// Seconds a client has to send a whole request body; then 408
    /// `request_timeout` and the connection is closed.
    pub body_timeout_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            max_batch_body_bytes: 4 * 1024 * 1024,
            header_timeout_s: 10,
            body_timeout_s: 30,
        }
    }
}

/// Defaults and limits applied to every message.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Default validity in seconds for OTPs.
    pub otp_validity_s: u64,
    /// Default validity in seconds for transactional messages.
    pub transactional_validity_s: u64,
    /// Default validity in seconds for marketing messages.
    pub marketing_validity_s: u64,
    /// Longest validity a client may ask for.
    pub max_validity_s: u64,
    /// Most segments one message may take (`text_too_long` above).
    pub max_segments: u32,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            otp_validity_s: 300,
            transactional_validity_s: 6 * 3600,
            marketing_validity_s: 24 * 3600,
            max_validity_s: 72 * 3600,
            max_segments: 10,
        }
    }
}

/// Per-country compliance rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceConfig {
    /// The countries file (reloaded on SIGHUP and `POST /admin/reload`).
    pub countries: std::path::PathBuf,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self {
            countries: "config/countries.toml".into(),
        }
    }
}

/// The message store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `embedded` (durable, on disk; the default), `redis` (durable in Redis, see
    /// [`RedisConfig`]) or `memory` (lost on exit).
    pub backend: StoreBackend,
    /// Directory of the embedded store.
    pub path: std::path::PathBuf,
    /// When a commit counts as done: `fsync` (survives power loss) or `os`
    /// (handed to the OS: survives a process crash, not an OS crash).
    pub durability: Durability,
    /// Days a finished message stays queryable before compaction removes it.
    pub retention_days: u32,
    /// Hours a submitted message waits for its delivery receipt.
    pub dlr_wait_hours: u32,
    /// Most messages waiting (queued + scheduled); above it new ones get 503 `overloaded`.
    pub max_backlog: usize,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Microseconds from the start of one group commit to the start of the
    /// next, at least: under load each sync carries more writes (less CPU
    /// per message), at the cost of up to this much latency per commit.
    pub commit_interval_us: u64,
    /// The embedded store commits to smsgate's own write-ahead log (one
    /// append and fdatasync) and applies to fjall behind it, so fjall's
    /// pauses while it writes a memtable out do not reach the commit.
    /// `false` commits to fjall's journal directly.
    pub write_ahead_log: bool,
    /// With the write-ahead log: milliseconds the applier gathers committed
    /// batches before it writes them to fjall as one, keeping only the last
    /// write of each key (a message's record and index entries change
    /// several times within milliseconds). Reads see the pending writes.
    pub apply_delay_ms: u64,
    /// Hours an Idempotency-Key is remembered.
    pub idempotency_hours: u32,
    /// Where the `redis` backend keeps everything (`[store.redis]`).
    pub redis: RedisConfig,
}

/// The `redis` store backend: the same records, indexes and group commits as
/// the embedded store, kept in Redis instead of a local directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0` (`rediss://` is not built in).
    pub url: String,
    /// Prefix of every key, shared by the nodes of one deployment; written as
    /// a hash tag (`{prefix}:…`) so every key lives in one Redis Cluster slot
    /// and each group commit is one MULTI/EXEC.
    pub prefix: String,
    /// This gateway's name, unique among the nodes sharing the prefix: it
    /// names the node's partition (the messages it accepted). A restarted
    /// node takes its partition back under the same name.
    pub node: String,
    /// Milliseconds a node's lease lasts without renewal (renewed every
    /// third of it). When it runs out, another node adopts the partition
    /// and sends what the node left.
    pub lease_ms: u64,
    /// After each commit, wait until this many replicas have it (`WAIT`);
    /// 0: the primary's own persistence (`appendfsync`) is the guarantee.
    pub replicas: u32,
    /// Prefix of what every node of a deployment shares whatever its own
    /// `prefix`: the carriers' TPS buckets.
    pub shared_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            prefix: "smsgate".into(),
            node: "node-1".into(),
            lease_ms: 15_000,
            replicas: 0,
            shared_prefix: "smsgate-shared".into(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            path: "data".into(),
            durability: Durability::Fsync,
            retention_days: 7,
            dlr_wait_hours: 72,
            max_backlog: 1_000_000,
            max_batch: 4096,
            commit_interval_us: 1000,
            write_ahead_log: true,
            apply_delay_ms: 20,
            idempotency_hours: 24,
            redis: RedisConfig::default(),
        }
    }
}

/// Store backend.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded durable store (fjall) in `store.path`.
    Embedded,
    /// Process memory: fast, lost on exit. For tests and throwaway runs.
    Memory,
    /// A Redis server (`[store.redis]`): the embedded store's records and
    /// commits, kept in Redis.
    Redis,
}

/// Commit durability of the embedded store.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync every group commit: survives power loss and OS crashes.
    Fsync,
    /// Write every group commit to the OS: survives kill -9, not an OS crash.
    Os,
}

/// Graceful shutdown on SIGTERM/SIGINT.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds to wait for in-flight submits before unbinding (the rest are requeued).
    pub grace_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_s: 10 }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
    /// Default filter (overridden by `RUST_LOG`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// One API client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Account id (appears in logs and metrics).
    pub id: String,
    /// Hex SHA-256 of the API key (preferred: the key itself is not in the file).
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// The API key in clear (for demos and tests only).
    #[serde(default)]
    pub api_key: Option<String>,
    /// May call the `/admin/*` endpoints (e.g. rule reload).
    #[serde(default)]
    pub admin: bool,
    /// Registered templates (India DLT): where a country requires them, the
    /// text must match one; `{#var#}` matches up to 30 characters.
    #[serde(default)]
    pub templates: Vec<TemplateConfig>,
    /// Sender ids and numbers this account owns: an MO keyword (STOP, START)
    /// sent to one of them applies to this account.
    #[serde(default)]
    pub senders: Vec<String>,
    /// What the gateway answers to HELP, STOP and START (sent as
    /// transactional messages from the number the keyword was sent to).
    #[serde(default)]
    pub replies: KeywordReplies,
    /// Share of the carriers' capacity against other accounts of the same
    /// kind (weighted round robin; default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Key of the `X-Smsgate-Signature` HMAC-SHA256 on this account's status
    /// webhooks (webhooks are sent unsigned without one).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Where status webhooks go when a message names no `callback_url`.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Sender used when a request gives no `from`.
    #[serde(default)]
    pub default_from: Option<String>,
    /// Send limits: a rate with a burst, and a daily quota.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// An account's send limits; 0 means none.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages per second, sustained (the token bucket's refill rate; 0 = no limit).
    pub messages_per_s: f64,
    /// Messages that may go at once (the bucket's size; 0 = one second's worth, at least 1).
    pub burst: u32,
    /// Most messages accepted per UTC day (0 = no quota). Counted in memory:
    /// a restart forgets the day's count.
    pub daily_quota: u64,
}

fn default_weight() -> u32 {
    1
}

/// The answers to MO keywords; an empty text sends no answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeywordReplies {
    /// Answer to HELP / INFO.
    pub help: String,
    /// Confirmation of an opt-out (STOP and friends).
    pub stop: String,
    /// Confirmation of an opt-in (START / UNSTOP).
    pub start: String,
}

impl Default for KeywordReplies {
    fn default() -> Self {
        Self {
            help: "Reply STOP to stop receiving messages, START to receive them again. Msg&data rates may apply.".into(),
            stop: "You are unsubscribed and will receive no more messages. Reply START to subscribe again.".into(),
            start: "You are subscribed again. Reply STOP to unsubscribe.".into(),
        }
    }
}

/// One registered template.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The sender it is registered for (any sender of the account when absent).
    #[serde(default)]
    pub sender: Option<String>,
    /// The template text with `{#var#}` placeholders.
    pub text: String,
}

impl AccountConfig {
    /// Checks the send limits.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let rate = self.limits.messages_per_s;
        if !(rate >= 0.0 && rate.is_finite()) {
            return Err(ConfigError::Invalid(format!(
                "account {}: limits.messages_per_s must be 0 (no limit) or positive",
                self.id
            )));
        }
        Ok(())
    }

    /// The SHA-256 of this account's key, from whichever field is set.
    pub fn key_hash(&self) -> Result<[u8; 32], ConfigError> {
        match (&self.api_key_sha256, &self.api_key) {
            (Some(hex_hash), _) => {
                let bytes = hex::decode(hex_hash.trim()).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "account {}: api_key_sha256 is not hex: {e}",
                        self.id
                    ))
                })?;
                bytes.try_into().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "account {}: api_key_sha256 must be 32 bytes (64 hex digits)",
                        self.id
                    ))
                })
            }
            (None, Some(key)) => Ok(Sha256::digest(key.as_bytes()).into()),
            (None, None) => Err(ConfigError::Invalid(format!(
                "account {} has neither api_key_sha256 nor api_key",
                self.id
            ))),
        }
    }
}

/// One SMSC connection profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// Carrier name (metrics label, message status `carrier`).
    pub name: String,
    /// `smpp://host:port` (plain TCP).
    pub url: String,
    /// SMPP system_id.
    pub system_id: String,
    /// SMPP password.
    pub password: String,
    /// SMPP system_type (often empty).
    #[serde(default)]
    pub system_type: String,
    /// Number of transceiver binds to keep open.
    #[serde(default = "default_binds")]
    pub binds: u32,
    /// Most submit_sm in flight (awaiting submit_sm_resp) per bind.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Most submits per bind answered by the SMSC whose outcome is not yet
    /// stored (0: four times `window`). A window slot is free again at the
    /// submit_sm_resp; this bound is what a kill -9 can send twice.
    #[serde(default)]
    pub unstored: u32,
    /// Seconds between enquire_link keepalives.
    #[serde(default = "default_enquire_link_s")]
    pub enquire_link_s: u64,
    /// Seconds to wait for any response (bind_resp, submit_sm_resp, enquire_link_resp).
    #[serde(default = "default_response_timeout_s")]
    pub response_timeout_s: u64,
    /// Seconds allowed for the TCP connect.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// First reconnect delay in milliseconds (doubles up to `reconnect_max_ms`).
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Most submit_sm per second across all binds of this carrier (0: no
    /// limit until the SMSC throttles). Cut on 0x58 and regained gradually.
    #[serde(default)]
    pub tps: f64,
    /// Milliseconds every bind of the carrier waits after 0x14 (queue full).
    #[serde(default = "default_queue_full_pause_ms")]
    pub queue_full_pause_ms: u64,
    /// How its SMPP error codes are treated.
    #[serde(default)]
    pub errors: CarrierErrors,
    /// The SMSC's dialect: message-id forms, multipart receipts, encoding.
    #[serde(default)]
    pub profile: crate::carrier::profile::CarrierProfile,
}

impl CarrierConfig {
    /// Submits per bind whose outcome may wait for the store (see `unstored`).
    pub fn unstored_limit(&self) -> u32 {
        if self.unstored == 0 {
            self.window.saturating_mul(4)
        } else {
            self.unstored.max(self.window)
        }
    }
}

fn default_queue_full_pause_ms() -> u64 {
    1000
}

/// How a carrier's submit_sm_resp error codes are treated. 0x58 (throttled)
/// and 0x14 (queue full) always slow down and retry; codes listed in neither
/// list fail the message (status `failed`, error `smpp_0x…`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierErrors {
    /// Transient: retried with backoff, up to `scheduler.max_attempts`.
    pub retry: Vec<u32>,
    /// The carrier is failing, not the message: retried and the carrier is
    /// skipped by its routes for `failover_s`.
    pub route_failure: Vec<u32>,
    /// Seconds a carrier is skipped after a route failure.
    pub failover_s: u64,
}

impl Default for CarrierErrors {
    fn default() -> Self {
        Self {
            // System error, submit failed, temporary application error.
            retry: vec![0x08, 0x45, 0x64],
            route_failure: Vec::new(),
            failover_s: 30,
        }
    }
}

fn default_binds() -> u32 {
    1
}
fn default_window() -> u32 {
    32
}
fn default_enquire_link_s() -> u64 {
    30
}
fn default_response_timeout_s() -> u64 {
    10
}
fn default_connect_timeout_s() -> u64 {
    5
}
fn default_reconnect_min_ms() -> u64 {
    100
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}

impl CarrierConfig {
    /// Response timeout as a duration.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.response_timeout_s.max(1))
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.accounts.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one [[accounts]] entry is needed".into(),
            ));
        }
        for account in &self.accounts {
            account.key_hash()?;
            account.check_limits()?;
        }
        for c in &self.carriers {
            if c.binds == 0 || c.window == 0 {
                return Err(ConfigError::Invalid(format!(
                    "carrier {}: binds and window must be at least 1",
                    c.name
                )));
            }
            if !c.url.starts_with("smpp://") {
                return Err(ConfigError::Invalid(format!(
                    "carrier {}: url must start with smpp://",
                    c.name
                )));
            }
        }
        for r in &self.routes {
            if r.carriers.is_empty() {
                return Err(ConfigError::Invalid(
                    "a route needs at least one carrier".into(),
                ));
            }
            if let Some(name) = r
                .carriers
                .iter()
                .find(|n| !self.carriers.iter().any(|c| &c.name == *n))
            {
                return Err(ConfigError::Invalid(format!(
                    "a route names carrier {name}, which is not configured"
                )));
            }
            if let Some(p) = &r.prefix
                && (!p.starts_with('+') || !p[1..].bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ConfigError::Invalid(format!(
                    "route prefix {p} must be + and digits"
                )));
            }
        }
        for (i, c) in self.carriers.iter().enumerate() {
            if self.carriers[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::Invalid(format!(
                    "carrier name {} is used twice",
                    c.name
                )));
            }
            if !(c.tps >= 0.0 && c.tps.is_finite()) {
                return Err(ConfigError::Invalid(format!(
                    "carrier {}: tps must be 0 (no limit) or positive",
                    c.name
                )));
            }
        }
        if self.scheduler.window_per_queue == 0 || self.scheduler.page_size == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.window_per_queue and page_size must be at least 1".into(),
            ));
        }
        if self.messages.max_segments == 0 || self.messages.max_segments > 255 {
            return Err(ConfigError::Invalid(
                "messages.max_segments must be between 1 and 255".into(),
            ));
        }
        if self.http.header_timeout_s == 0 || self.http.body_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "http.header_timeout_s and body_timeout_s must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../config/smsgate.toml");
        let config = Config::parse(text).expect("config/smsgate.toml must stay valid");
        assert!(!config.carriers.is_empty());
    }

    #[test]
    fn an_account_without_a_key_is_refused() {
        let err = Config::parse("[[accounts]]\nid = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Config::parse("[http]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_on"), "{err}");
    }

    #[test]
    fn read_deadlines_default_to_10_and_30_s_and_zero_is_refused() {
        let http = HttpConfig::default();
        assert_eq!((http.header_timeout_s, http.body_timeout_s), (10, 30));
        let example = include_str!("../config/smsgate.toml");
        for (field, default) in [("header_timeout_s", 10), ("body_timeout_s", 30)] {
            let line = format!("{field} = {default}\n");
            assert!(example.contains(&line), "the example shows {field}");
            let text = example.replace(&line, &format!("{field} = 0\n"));
            let err = Config::parse(&text).unwrap_err();
            assert!(err.to_string().contains("timeout_s"), "{field}: {err}");
        }
    }
}
