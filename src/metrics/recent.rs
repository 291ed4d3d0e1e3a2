//! Rolling averages of the latest requests' latencies for `/metrics-json` (SPEC §2): TTFT and
//! TBT in milliseconds over the last [`WINDOW`] successful requests (MindIE's
//! `DYNAMIC_AVERAGE_WINDOW_SIZE`). Fed once per finished request by `http::session`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Requests averaged over.
pub const WINDOW: usize = 1000;

/// A fixed-size window of values with a running sum.
#[derive(Debug, Default)]
struct Window {
    values: VecDeque<f64>,
    sum: f64,
}

impl Window {
    fn push(&mut self, v: f64) {
        if self.values.len() == WINDOW {
            if let Some(old) = self.values.pop_front() {
                self.sum -= old;
            }
        }
        self.values.push_back(v);
        self.sum += v;
    }

    fn average(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            // Recomputing the sum would be exact; the running one is kept non-negative.
            (self.sum / self.values.len() as f64).max(0.0)
        }
    }
}

/// TTFT and TBT of the latest requests.
#[derive(Debug, Default)]
pub struct RecentLatency {
    inner: Mutex<(Window, Window)>,
}

/// The averages, in milliseconds (0 before any request).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyAverages {
    pub ttft_ms: f64,
    pub tbt_ms: f64,
}

impl RecentLatency {
    /// Records one finished request: its time to first token, and its time between tokens
    /// when it produced more than one token.
    pub fn record(&self, ttft: Duration, tbt: Option<Duration>) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.push(ttft.as_secs_f64() * 1000.0);
            if let Some(t) = tbt {
                g.1.push(t.as_secs_f64() * 1000.0);
            }
        }
    }

    pub fn averages(&self) -> LatencyAverages {
        self.inner
            .lock()
            .map(|g| LatencyAverages {
                ttft_ms: g.0.average(),
                tbt_ms: g.1.average(),
            })
            .unwrap_or(LatencyAverages {
                ttft_ms: 0.0,
                tbt_ms: 0.0,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_last_window() {
        let r = RecentLatency::default();
        assert_eq!(r.averages().ttft_ms, 0.0);
        for _ in 0..WINDOW {
            r.record(Duration::from_millis(100), None);
        }
        for _ in 0..WINDOW {
            r.record(Duration::from_millis(10), Some(Duration::from_millis(4)));
        }
        let a = r.averages();
        assert!((a.ttft_ms - 10.0).abs() < 1e-6, "{a:?}");
        assert!((a.tbt_ms - 4.0).abs() < 1e-6, "{a:?}");
    }
}
