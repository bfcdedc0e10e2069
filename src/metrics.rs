//! Prometheus metrics. Recording sits beside the decision and never changes it; the
//! Check path only touches pre-created atomic counters, never a lock.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `leash_decisions_total` | counter | `decision` (allow, deny), `reason` (deny reason code, `none` for allow) |
//! | `leash_check_duration_seconds` | histogram | |
//! | `leash_policy_reloads_total` | counter | `result` (applied, unchanged, rejected) |
//! | `leash_policy_ready` | gauge | |
//! | `leash_policy_last_applied_timestamp_seconds` | gauge | |
//! | `leash_decision_log_dropped_total` | counter | |
//! | `leash_build_info` | gauge | `version` |
//! | `leash_connections_refused_total` | counter | `port` (grpc, grpc_uds, control, admin) |
//! | `leash_requests_timed_out_total` | counter | `port` (grpc, grpc_uds, control, control_uds) |
//! | `leash_credentials_minted_total` | counter | |
//! | `leash_credential_mint_failures_total` | counter | `reason` |
//! | `leash_credential_key_rotations_total` | counter | |
//! | `leash_token_cache_hits_total`, `leash_token_cache_misses_total` | counter | |
//! | `leash_token_cache_entries` | gauge | |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::decision::DenyReason;
use crate::token::CacheStats;

/// Reads the verified-token cache's counters when Prometheus scrapes: nothing is
/// counted twice on the Check path, the cache keeps its own.
type CacheReader = Box<dyn Fn() -> CacheStats + Send + Sync>;

#[derive(Default, Clone)]
struct TokenCache(Arc<OnceLock<CacheReader>>);

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl Collector for TokenCache {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.get().map(|read| read()).unwrap_or_default();
        for (name, help, value) in [
            (
                "leash_token_cache_hits",
                "Checks whose token was found verified in the cache",
                stats.hits,
            ),
            (
                "leash_token_cache_misses",
                "Checks whose token was verified afresh",
                stats.misses,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let entries = ConstGauge::new(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        entries.encode(encoder.encode_descriptor(
            "leash_token_cache_entries",
            "Verified tokens held in the cache",
            None,
            entries.metric_type(),
        )?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are the lowercase words dashboards use"
)]
enum DecisionLabel {
    allow,
    deny,
}

/// A deny reason code as a label value; `None` for allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReasonLabel(Option<DenyReason>);

impl EncodeLabelValue for ReasonLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.map_or("none", DenyReason::code))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: DecisionLabel,
    reason: ReasonLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are the lowercase words dashboards use"
)]
pub enum ReloadResult {
    applied,
    unchanged,
    rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    reason: ReasonLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// All of leash's metrics, registered once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    allowed: Counter,
    /// Indexed by [`DenyReason::index`].
    denied: Vec<Counter>,
    check_duration: Arc<AtomicHistogram>,
    reloads: Family<ReloadLabels, Counter>,
    policy_ready: Gauge,
    last_applied: Gauge,
    log_dropped: Counter,
    connections_refused: Family<PortLabels, Counter>,
    requests_timed_out: Family<PortLabels, Counter>,
    credentials_minted: Counter,
    /// Indexed like [`MINT_FAILURES`].
    mint_failures: Vec<Counter>,
    key_rotations: Counter,
    token_cache: TokenCache,
}

/// The denials that count as failures to mint.
const MINT_FAILURES: [DenyReason; 3] = [
    DenyReason::MintFailed,
    DenyReason::MintWidening,
    DenyReason::MintTokenExposed,
];

/// Counts decision records the log could not take; handed to the audit sink.
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Counter);

impl DropCounter {
    pub fn inc(&self) {
        self.0.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "leash_decisions",
            "Checks answered, by decision and deny reason code",
            decisions.clone(),
        );
        let allowed = decisions
            .get_or_create(&DecisionLabels {
                decision: DecisionLabel::allow,
                reason: ReasonLabel(None),
            })
            .clone();
        let denied = DenyReason::ALL
            .iter()
            .map(|reason| {
                decisions
                    .get_or_create(&DecisionLabels {
                        decision: DecisionLabel::deny,
                        reason: ReasonLabel(Some(*reason)),
                    })
                    .clone()
            })
            .collect();

        let check_duration = Arc::new(AtomicHistogram::new(&CHECK_BUCKETS));
        registry.register(
            "leash_check_duration_seconds",
            "Time from receiving a CheckRequest to having its response, in seconds",
            SharedHistogram(check_duration.clone()),
        );

        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "leash_policy_reloads",
            "Policy loads by result: applied, unchanged or rejected (the old set kept serving)",
            reloads.clone(),
        );
        for result in [
            ReloadResult::applied,
            ReloadResult::unchanged,
            ReloadResult::rejected,
        ] {
            drop(reloads.get_or_create(&ReloadLabels { result }));
        }
        let policy_ready = Gauge::default();
        registry.register(
            "leash_policy_ready",
            "1 once a policy set is compiled and serving",
            policy_ready.clone(),
        );
        let last_applied = Gauge::default();
        registry.register(
            "leash_policy_last_applied_timestamp_seconds",
            "Unix time at which the serving policy set was applied",
            last_applied.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("leash_build_info", "leash build", build);
        let log_dropped = Counter::default();
        registry.register(
            "leash_decision_log_dropped",
            "Decision records dropped because the log writer fell behind",
            log_dropped.clone(),
        );

        let connections_refused = Family::<PortLabels, Counter>::default();
        registry.register(
            "leash_connections_refused",
            "Connections closed on accept because the port had listen.max_connections open",
            connections_refused.clone(),
        );

        let requests_timed_out = Family::<PortLabels, Counter>::default();
        registry.register(
            "leash_requests_timed_out",
            "gRPC requests ended with DEADLINE_EXCEEDED after listen.request_timeout (Envoy denies)",
            requests_timed_out.clone(),
        );
        // Every port's series from the start, so a dashboard's rate() and an alert see
        // zero rather than nothing.
        for port in ["grpc", "grpc_uds", "control", "control_uds", "admin"] {
            drop(connections_refused.get_or_create(&PortLabels { port }));
            if port != "admin" {
                drop(requests_timed_out.get_or_create(&PortLabels { port }));
            }
        }

        let credentials_minted = Counter::default();
        registry.register(
            "leash_credentials_minted",
            "Credentials minted for allowed calls, sent upstream in place of the agent's token",
            credentials_minted.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "leash_credential_mint_failures",
            "Calls denied because no credential could be minted for them, by reason code",
            failures.clone(),
        );
        let mint_failures = MINT_FAILURES
            .iter()
            .map(|reason| {
                failures
                    .get_or_create(&FailureLabels {
                        reason: ReasonLabel(Some(*reason)),
                    })
                    .clone()
            })
            .collect();
        let key_rotations = Counter::default();
        registry.register(
            "leash_credential_key_rotations",
            "Times a new signing key took over from the key directory",
            key_rotations.clone(),
        );

        let token_cache = TokenCache::default();
        registry.register_collector(Box::new(token_cache.clone()));

        Self {
            registry,
            allowed,
            denied,
            check_duration,
            reloads,
            policy_ready,
            last_applied,
            log_dropped,
            connections_refused,
            requests_timed_out,
            credentials_minted,
            mint_failures,
            key_rotations,
            token_cache,
        }
    }

    /// Reports the verified-token cache that `read` reads, from now on.
    pub fn watch_token_cache(&self, read: impl Fn() -> CacheStats + Send + Sync + 'static) {
        let _ = self.token_cache.0.set(Box::new(read));
    }

    /// A credential was minted (`Ok`), or a call was denied for want of one.
    pub fn record_mint(&self, outcome: Result<(), DenyReason>) {
        match outcome {
            Ok(()) => {
                self.credentials_minted.inc();
            }
            Err(reason) => {
                if let Some(i) = MINT_FAILURES.iter().position(|r| *r == reason)
                    && let Some(counter) = self.mint_failures.get(i)
                {
                    counter.inc();
                }
            }
        }
    }

    pub fn key_rotated(&self) {
        self.key_rotations.inc();
    }

    /// Counted off the Check path: only when a request ran out of time.
    pub fn request_timed_out(&self, port: &'static str) {
        self.requests_timed_out
            .get_or_create(&PortLabels { port })
            .inc();
    }

    /// Counted off the Check path: only when a port is already full.
    pub fn connection_refused(&self, port: &'static str) {
        self.connections_refused
            .get_or_create(&PortLabels { port })
            .inc();
    }

    pub fn decision_log_dropped(&self) -> DropCounter {
        DropCounter(self.log_dropped.clone())
    }

    #[inline]
    pub fn record_decision(&self, reason: Option<DenyReason>, took: Duration) {
        let counter = match reason {
            None => Some(&self.allowed),
            Some(reason) => self.denied.get(reason.index()),
        };
        if let Some(counter) = counter {
            counter.inc();
        }
        self.check_duration.observe(took);
    }

    pub fn record_reload(&self, result: ReloadResult, applied_at_unix: Option<i64>) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        if let Some(at) = applied_at_unix {
            self.policy_ready.set(1);
            self.last_applied.set(at);
        }
    }

    /// Allowed, denied, and denials by reason code (only reasons seen).
    pub fn decision_counts(&self) -> (u64, u64, Vec<(&'static str, u64)>) {
        let by_reason: Vec<(&'static str, u64)> = DenyReason::ALL
            .iter()
            .zip(&self.denied)
            .map(|(reason, counter)| (reason.code(), counter.get()))
            .filter(|(_, n)| *n > 0)
            .collect();
        let denied = by_reason.iter().map(|(_, n)| n).sum();
        (self.allowed.get(), denied, by_reason)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Bucket bounds in seconds: Checks take microseconds, so the fine end matters.
const CHECK_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.1, 1.0,
];

/// A histogram updated with atomic adds only; prometheus-client's own takes a write
/// lock per observation, which would serialize every Check.
#[derive(Debug)]
struct AtomicHistogram {
    bounds: Vec<f64>,
    /// One more than `bounds`: the last counts observations above every bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct SharedHistogram(Arc<AtomicHistogram>);

impl EncodeMetric for SharedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(h.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = Duration::from_nanos(h.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_decisions_by_reason_and_latency() {
        let metrics = Metrics::new();
        metrics.record_decision(None, Duration::from_micros(3));
        metrics.record_decision(Some(DenyReason::PolicyUndefined), Duration::from_millis(2));
        metrics.record_reload(ReloadResult::applied, Some(1_700_000_000));
        let text = metrics.encode();
        assert!(
            text.contains(r#"leash_decisions_total{decision="allow",reason="none"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leash_decisions_total{decision="deny",reason="policy.undefined"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leash_check_duration_seconds_bucket{le="0.000005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leash_check_duration_seconds_bucket{le="0.0025"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("leash_check_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"leash_policy_reloads_total{result="applied"} 1"#),
            "{text}"
        );
        assert!(text.contains("leash_policy_ready 1"), "{text}");
        assert_eq!(
            metrics.decision_counts(),
            (1, 1, vec![("policy.undefined", 1)])
        );
    }

    #[test]
    fn the_token_cache_is_read_when_scraped() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(text.contains("leash_token_cache_hits_total 0"), "{text}");
        metrics.watch_token_cache(|| CacheStats {
            hits: 41,
            misses: 2,
            entries: 2,
        });
        let text = metrics.encode();
        assert!(text.contains("leash_token_cache_hits_total 41"), "{text}");
        assert!(text.contains("leash_token_cache_misses_total 2"), "{text}");
        assert!(text.contains("leash_token_cache_entries 2"), "{text}");
    }

    /// The counters are made from the reasons the enum derives, so a new reason is
    /// counted without anyone listing it.
    #[test]
    fn every_reason_is_counted() {
        let metrics = Metrics::new();
        for reason in DenyReason::ALL {
            metrics.record_decision(Some(*reason), Duration::ZERO);
        }
        let text = metrics.encode();
        assert_eq!(DenyReason::ALL.len(), DenyReason::COUNT);
        for reason in DenyReason::ALL {
            let line = format!(
                "leash_decisions_total{{decision=\"deny\",reason=\"{}\"}} 1",
                reason.code()
            );
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}
