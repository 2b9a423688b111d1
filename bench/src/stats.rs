//! Latency histograms (nanoseconds, 3 significant digits) and the median
//! over rounds that every reported figure is.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency histogram from 1 µs to 100 s.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1_000, 100_000_000_000);
        self.0.record(ns).expect("clamped into bounds");
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0..=1) in microseconds; NaN when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// The median of some rounds' values, NaN ignored; NaN when none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_rounds() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0, "odd count");
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5, "even count");
        assert!(median([f64::NAN]).is_nan(), "nothing measured");
    }

    #[test]
    fn quantiles_in_microseconds() {
        let mut h = Latencies::default();
        for us in 1..=100 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
    }
}
