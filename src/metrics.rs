//! Every Prometheus metric the gateway exports, named in one place so the
//! dashboards and the code cannot drift apart. All names carry the `smsgate_`
//! prefix and follow Prometheus naming (`_total` counters, `_seconds` histograms).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds) for accept → submit and submit → receipt.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0, 3600.0,
];

/// Buckets (seconds) of HTTP response times: finer at the low end, where a
/// healthy gateway answers.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The gateway's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// Messages accepted (202), by kind.
    pub accepted: IntCounterVec,
    /// Requests refused, by reason code.
    pub rejected: IntCounterVec,
    /// Admission refusals by reason, country and kind.
    pub refused: IntCounterVec,
    /// Marketing deferred to the next allowed instant (quiet hours), by country.
    pub deferred: IntCounterVec,
    /// Opt-outs recorded, by source (`api`, `mo_keyword`).
    pub optouts: IntCounterVec,
    /// Messages whose every segment the carrier accepted, by kind and carrier.
    pub submitted: IntCounterVec,
    /// Segments submitted (submit_sm answered OK), by carrier.
    pub segments_submitted: IntCounterVec,
    /// Messages delivered, by kind and carrier.
    pub delivered: IntCounterVec,
    /// Messages undeliverable, by kind and carrier.
    pub undeliverable: IntCounterVec,
    /// Messages that failed permanently at the carrier, by kind and carrier.
    pub failed: IntCounterVec,
    /// Messages expired before submission or at the SMSC, by kind.
    pub expired: IntCounterVec,
    /// submit_sm errors, by carrier and reason (throttled, queue_full, timeout, disconnected, permanent).
    pub submit_errors: IntCounterVec,
    /// Messages handed back to the queue for another attempt, by reason.
    pub retries: IntCounterVec,
    /// Delivery receipts received, by carrier and receipt state.
    pub receipts: IntCounterVec,
    /// Receipts whose id matched no message, by carrier.
    pub dlr_unmatched: IntCounterVec,
    /// Receipts handed to the node that sent their message.
    pub dlr_forwarded: IntCounterVec,
    /// Mobile-originated (non-receipt) deliver_sm received, by carrier.
    pub mo_received: IntCounterVec,
    /// Inbound keywords acted on (stop, start, help).
    pub mo_keywords: IntCounterVec,
    /// Status webhook attempts by outcome (delivered, retried, abandoned).
    pub webhooks: IntCounterVec,
    /// Successful binds, by carrier.
    pub binds_total: IntCounterVec,
    /// Time to answer an HTTP request, by route and status class (`2xx`, `4xx`, `5xx`).
    pub http_request: HistogramVec,
    /// Accept → last segment's submit_sm_resp, by kind.
    pub accept_to_submit: HistogramVec,
    /// Submit → final receipt, by kind and carrier.
    pub submit_to_dlr: HistogramVec,
    /// Messages waiting in the queue, by kind (plus `scheduled`).
    pub queue_depth: IntGaugeVec,
    /// Ready messages in memory by kind and the carrier their route takes now.
    pub queue_depth_by_carrier: IntGaugeVec,
    /// Ready messages held in memory by kind (the rest wait in the store).
    pub queue_in_memory: IntGaugeVec,
    /// Ready → handed to a bind, by kind.
    pub time_in_queue: HistogramVec,
    /// 0x58/0x14 answers that cut a carrier's rate, by carrier and reason.
    pub throttle_events: IntCounterVec,
    /// A carrier's send rate in force (submits/s; -1 when unlimited).
    pub carrier_rate: GaugeVec,
    /// Route failures that took a carrier out of its routes, by carrier.
    pub route_failures: IntCounterVec,
    /// submit_sm awaiting response, by carrier and bind.
    pub inflight: IntGaugeVec,
    /// 1 when the bind is up, by carrier and bind.
    pub bind_up: IntGaugeVec,
    /// Duration of one group commit of the durable store.
    pub store_commit_seconds: Histogram,
    /// Writes per group commit.
    pub store_commit_writes: Histogram,
    /// Duration of applying one group of committed batches to fjall behind the
    /// write-ahead log.
    pub store_apply_seconds: Histogram,
    /// Bytes the durable store uses on disk.
    pub store_disk_bytes: IntGauge,
    /// Records removed by compaction (retention, expired idempotency keys).
    pub store_compacted: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("metric definitions are static and valid");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique");
            h
        };
        let http_request = HistogramVec::new(
            HistogramOpts::new(
                "smsgate_http_request_seconds",
                "Time from an HTTP request's arrival at the router to its response, by route and status class.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "status"],
        )
        .expect("metric definitions are static and valid");
        let store_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "smsgate_store_commit_seconds",
                "Duration of one group commit (write + sync) of the durable store.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric definitions are static and valid");
        let store_commit_writes = Histogram::with_opts(
            HistogramOpts::new(
                "smsgate_store_commit_writes",
                "Writes per group commit of the durable store.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ]),
        )
        .expect("metric definitions are static and valid");
        let store_apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "smsgate_store_apply_seconds",
                "Duration of applying one group of committed batches to fjall behind the write-ahead log.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric definitions are static and valid");
        let store_disk_bytes = IntGauge::new(
            "smsgate_store_disk_bytes",
            "Bytes the durable store uses on disk.",
        )
        .expect("metric definitions are static and valid");
        let store_compacted = IntCounter::new(
            "smsgate_store_compacted_total",
            "Records removed by compaction (retention, expired idempotency keys).",
        )
        .expect("metric definitions are static and valid");
        for c in [
            Box::new(store_commit_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(store_commit_writes.clone()),
            Box::new(store_apply_seconds.clone()),
            Box::new(store_disk_bytes.clone()),
            Box::new(store_compacted.clone()),
            Box::new(http_request.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            http_request,
            store_commit_seconds,
            store_commit_writes,
            store_apply_seconds,
            store_disk_bytes,
            store_compacted,
            accepted: counter(
                "smsgate_messages_accepted_total",
                "Messages accepted with 202.",
                &["kind"],
            ),
            rejected: counter(
                "smsgate_messages_rejected_total",
                "Requests refused, by error code.",
                &["reason"],
            ),
            refused: counter(
                "smsgate_rejected_total",
                "Admission refusals by reason, recipient country and kind.",
                &["reason", "country", "kind"],
            ),
            deferred: counter(
                "smsgate_deferred_total",
                "Marketing deferred to the next allowed local time.",
                &["country"],
            ),
            optouts: counter(
                "smsgate_optouts_total",
                "Opt-outs recorded, by source.",
                &["source"],
            ),
            submitted: counter(
                "smsgate_messages_submitted_total",
                "Messages whose every segment the carrier accepted.",
                &["kind", "carrier"],
            ),
            segments_submitted: counter(
                "smsgate_segments_submitted_total",
                "submit_sm answered OK.",
                &["carrier"],
            ),
            delivered: counter(
                "smsgate_messages_delivered_total",
                "Messages delivered to the handset.",
                &["kind", "carrier"],
            ),
            undeliverable: counter(
                "smsgate_messages_undeliverable_total",
                "Messages the carrier could not deliver.",
                &["kind", "carrier"],
            ),
            failed: counter(
                "smsgate_messages_failed_total",
                "Messages the carrier refused permanently.",
                &["kind", "carrier"],
            ),
            expired: counter(
                "smsgate_messages_expired_total",
                "Messages whose validity ran out.",
                &["kind"],
            ),
            submit_errors: counter(
                "smsgate_submit_errors_total",
                "submit_sm errors by reason.",
                &["carrier", "reason"],
            ),
            retries: counter(
                "smsgate_retries_total",
                "Messages requeued for another attempt.",
                &["reason"],
            ),
            receipts: counter(
                "smsgate_dlr_received_total",
                "Delivery receipts received, by state.",
                &["carrier", "state"],
            ),
            dlr_unmatched: counter(
                "smsgate_dlr_unmatched_total",
                "Delivery receipts matching no known message.",
                &["carrier"],
            ),
            dlr_forwarded: counter(
                "smsgate_dlr_forwarded_total",
                "Delivery receipts handed to the node that sent their message (nodes sharing a Redis store).",
                &["carrier"],
            ),
            mo_received: counter(
                "smsgate_mo_received_total",
                "Inbound (mobile-originated) messages received.",
                &["carrier"],
            ),
            webhooks: counter(
                "smsgate_webhooks_total",
                "Status webhook attempts by outcome (delivered, retried, abandoned).",
                &["outcome"],
            ),
            mo_keywords: counter(
                "smsgate_mo_keywords_total",
                "Inbound keywords acted on, by keyword (stop, start, help).",
                &["keyword"],
            ),
            binds_total: counter(
                "smsgate_binds_total",
                "Successful SMPP binds (reconnects included).",
                &["carrier"],
            ),
            accept_to_submit: histogram(
                "smsgate_accept_to_submit_seconds",
                "Time from 202 to the last segment's submit_sm_resp.",
                &["kind"],
            ),
            submit_to_dlr: histogram(
                "smsgate_submit_to_dlr_seconds",
                "Time from submission to the final delivery receipt.",
                &["kind", "carrier"],
            ),
            queue_depth: gauge(
                "smsgate_queue_depth",
                "Messages waiting to be sent, by kind (scheduled counted as kind=\"scheduled\").",
                &["kind"],
            ),
            queue_depth_by_carrier: gauge(
                "smsgate_queue_depth_by_carrier",
                "Ready messages in memory by kind and the carrier their route takes now (none: no carrier up).",
                &["kind", "carrier"],
            ),
            queue_in_memory: gauge(
                "smsgate_queue_in_memory",
                "Ready messages held in memory, by kind (the rest of the backlog waits in the store).",
                &["kind"],
            ),
            time_in_queue: histogram(
                "smsgate_time_in_queue_seconds",
                "Time from ready (accepted or released) to handed to a carrier bind.",
                &["kind"],
            ),
            throttle_events: counter(
                "smsgate_throttle_events_total",
                "Throttling answers (0x58 throttled, 0x14 queue full), by carrier and reason.",
                &["carrier", "reason"],
            ),
            carrier_rate: {
                let g = GaugeVec::new(
                    Opts::new(
                        "smsgate_carrier_rate_limit",
                        "A carrier's send rate in force (submits/s; -1 when unlimited), updated at each cut and every second.",
                    ),
                    &["carrier"],
                )
                .expect("metric definitions are static and valid");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric names are unique");
                g
            },
            route_failures: counter(
                "smsgate_route_failures_total",
                "Carrier errors configured as route failures (the carrier is skipped for a while).",
                &["carrier"],
            ),
            inflight: gauge(
                "smsgate_bind_inflight",
                "submit_sm awaiting response, per bind.",
                &["carrier", "bind"],
            ),
            bind_up: gauge(
                "smsgate_bind_up",
                "1 when the SMPP bind is up.",
                &["carrier", "bind"],
            ),
            registry,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which Metrics::new rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
