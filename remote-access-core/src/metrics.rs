//! What a gateway counts for its operator, and the Prometheus text format it is read in
//! ([`crate::Gateway::metrics_text`]). A leaf: the authority times its store here, the gateway
//! counts logins, refusals, cuts and bytes.
//!
//! Every label value is a fixed code (`wrong_key`, `ssh`, ...), never text from a peer, so the
//! number of series is bounded whatever users send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Histogram bucket bounds in seconds: from half a millisecond (a revocation cut on one
/// process, a Redis round trip on one host) to the one-second bound of a store ping.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A latency histogram (Prometheus cumulative buckets on render).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket, not cumulative; the last one is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (index, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BUCKETS.get(index) {
                Some(bound) => writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}"),
                None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}"),
            }
            .ok();
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}").ok();
    }
}

/// Counters by a pair of label values (fixed codes).
#[derive(Debug, Default)]
pub(crate) struct Labelled(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl Labelled {
    pub(crate) fn add(&self, first: &'static str, second: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry((first, second)).or_default() += 1;
    }

    /// Renders with the label names `labels`; a counter with one label uses `second` = "".
    fn render(&self, out: &mut String, name: &str, help: &str, labels: (&str, Option<&str>)) {
        header(out, name, help, "counter");
        for (&(first, second), count) in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            match labels.1 {
                Some(label) => {
                    writeln!(out, "{name}{{{}=\"{first}\",{label}=\"{second}\"}} {count}", labels.0)
                }
                None => writeln!(out, "{name}{{{}=\"{first}\"}} {count}", labels.0),
            }
            .ok();
        }
    }
}

/// Bytes on users' connections (as they cross the gateway's sockets, encryption included).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) from_users: AtomicU64,
    pub(crate) to_users: AtomicU64,
}

/// What a gateway counts.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Logins let in, by protocol (`ssh`, `vnc`).
    pub(crate) logins_accepted: Labelled,
    /// Logins refused, by protocol and reason (`wrong_key`, `revoked`, `backing_off`, ...).
    pub(crate) logins_refused: Labelled,
    /// Connections closed before they could try a login, by protocol and reason (`too_fast`,
    /// `backing_off`, `evicted`, `silent`, `pre_auth_timeout`).
    pub(crate) closed_before_login: Labelled,
    /// Channels and requests refused to logged-in users, by reason.
    pub(crate) channels_refused: Labelled,
    /// From the moment this gateway learns that a build's access ended (a revocation, a
    /// deadline, another gateway's notice) to the moment it has closed a connection of it.
    pub(crate) cut_latency: Histogram,
    pub(crate) traffic: std::sync::Arc<Traffic>,
}

/// A snapshot of gauges the gateway reads elsewhere, rendered with the counters.
pub(crate) struct Gauges {
    pub(crate) ssh_connections: usize,
    pub(crate) vnc_connections: usize,
    pub(crate) unauthenticated: usize,
    pub(crate) builder_channels: usize,
    pub(crate) store_up: bool,
    pub(crate) draining: bool,
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4) of everything counted, with `gauges` and
    /// the store's round trips.
    pub(crate) fn render(&self, gauges: &Gauges, store_round_trip: &Histogram) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            header(out, name, help, "gauge");
            writeln!(out, "{name} {value}").ok();
        };
        header(
            &mut out,
            "remote_access_connections",
            "Live user connections being served, by protocol.",
            "gauge",
        );
        writeln!(out, "remote_access_connections{{protocol=\"ssh\"}} {}", gauges.ssh_connections).ok();
        writeln!(out, "remote_access_connections{{protocol=\"vnc\"}} {}", gauges.vnc_connections).ok();
        gauge(
            &mut out,
            "remote_access_unauthenticated_connections",
            "Connections (SSH and VNC) that have not logged in yet.",
            gauges.unauthenticated,
        );
        gauge(
            &mut out,
            "remote_access_builder_channels",
            "Connections to builders that SSH users opened.",
            gauges.builder_channels,
        );
        gauge(
            &mut out,
            "remote_access_store_up",
            "1 while the session store answers its pings (logins are refused while 0).",
            usize::from(gauges.store_up),
        );
        gauge(
            &mut out,
            "remote_access_draining",
            "1 while the gateway drains: its ports are closed, live connections served on.",
            usize::from(gauges.draining),
        );
        self.logins_accepted.render(
            &mut out,
            "remote_access_logins_accepted_total",
            "Logins let in, by protocol.",
            ("protocol", None),
        );
        self.logins_refused.render(
            &mut out,
            "remote_access_logins_refused_total",
            "Logins refused, by protocol and reason.",
            ("protocol", Some("reason")),
        );
        self.closed_before_login.render(
            &mut out,
            "remote_access_connections_closed_before_login_total",
            "Connections closed before they could log in, by protocol and reason.",
            ("protocol", Some("reason")),
        );
        self.channels_refused.render(
            &mut out,
            "remote_access_channels_refused_total",
            "Channels and forwardings refused to logged-in SSH users, by reason.",
            ("reason", None),
        );
        self.cut_latency.render(
            &mut out,
            "remote_access_cut_seconds",
            "From this gateway learning that a build's access ended to its closing one of the build's connections.",
        );
        store_round_trip.render(
            &mut out,
            "remote_access_store_round_trip_seconds",
            "Round trip of the store's ping and heartbeat, once a second (answered ones).",
        );
        header(
            &mut out,
            "remote_access_user_bytes_total",
            "Bytes on users' connections, by direction.",
            "counter",
        );
        let (from, to) =
            (self.traffic.from_users.load(Ordering::Relaxed), self.traffic.to_users.load(Ordering::Relaxed));
        writeln!(out, "remote_access_user_bytes_total{{direction=\"from_users\"}} {from}").ok();
        writeln!(out, "remote_access_user_bytes_total{{direction=\"to_users\"}} {to}").ok();
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}").ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(9));
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 9.0033\n") && out.contains("x_seconds_count 3\n"), "{out}");
        assert!(out.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"), "{out}");
    }

    #[test]
    fn labelled_counters_render_one_line_per_pair() {
        let counters = Labelled::default();
        counters.add("ssh", "wrong_key");
        counters.add("ssh", "wrong_key");
        counters.add("vnc", "wrong_password");
        let mut out = String::new();
        counters.render(&mut out, "refused_total", "help", ("protocol", Some("reason")));
        assert!(out.contains("refused_total{protocol=\"ssh\",reason=\"wrong_key\"} 2\n"), "{out}");
        assert!(out.contains("refused_total{protocol=\"vnc\",reason=\"wrong_password\"} 1\n"), "{out}");
    }
}
