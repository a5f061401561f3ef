//! Latency samples by call kind, and the percentiles the report needs.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Latencies of successful calls, and counts of refused or failed ones, by kind.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    samples: BTreeMap<String, Vec<f64>>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn ok(&self, kind: &str, took: Duration) {
        self.inner
            .lock()
            .unwrap()
            .samples
            .entry(kind.to_string())
            .or_default()
            .push(took.as_secs_f64() * 1000.0);
    }

    /// A call that did not succeed, keyed by what came back (status or transport error).
    pub fn error(&self, kind: &str, outcome: &str) {
        *self
            .inner
            .lock()
            .unwrap()
            .errors
            .entry(format!("{kind} {outcome}"))
            .or_default() += 1;
    }

    pub fn summary(&self, kind: &str) -> Option<Summary> {
        Summary::of(self.inner.lock().unwrap().samples.get(kind)?)
    }

    pub fn all(&self) -> BTreeMap<String, Summary> {
        self.inner
            .lock()
            .unwrap()
            .samples
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), Summary::of(v)?)))
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().errors.clone()
    }
}

/// Percentiles of one set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            count: v.len(),
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": round(self.p50, 2),
            "p95": round(self.p95, 2),
            "p99": round(self.p99, 2),
            "max": round(self.max, 2),
        })
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!((s.p50, s.p95, s.p99, s.max), (50.0, 95.0, 99.0, 100.0));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }
}
