//! The gauges MindIE refreshes once a second (SPEC §3): queue sizes, KV-cache usage, prefix-cache
//! hits, throughput averaged over the last interval, the failed-request fraction; and the
//! preemption counter, advanced by the engine's running total. Request counters and histograms
//! are fed per request by the HTTP layer from event timestamps.

use super::Metrics;
use crate::engine::{EngineMonitor, EngineStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the gauges are refreshed.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Counter readings at the previous refresh.
struct Previous {
    at: Instant,
    prompt_tokens: u64,
    generation_tokens: u64,
    preemptions: u64,
}

/// Sets every gauge from one engine snapshot; returns the readings for the next call.
fn refresh(m: &Metrics, st: &EngineStatus, prev: &Previous) -> Previous {
    let l = [m.model()];
    m.num_requests_running
        .with_label_values(&l)
        .set(st.running as f64);
    m.num_requests_waiting
        .with_label_values(&l)
        .set(st.waiting as f64);
    m.num_requests_swapped
        .with_label_values(&l)
        .set(st.swapped as f64);
    // The CPU backend's KV pool is the device cache; there is no host swap space.
    m.npu_cache_usage_perc
        .with_label_values(&l)
        .set(st.cache_usage());
    m.cpu_cache_usage_perc.with_label_values(&l).set(0.0);
    m.npu_prefix_cache_hit_rate
        .with_label_values(&l)
        .set(st.prefix_hit_rate());
    m.all_radix_match_num
        .with_label_values(&l)
        .set(st.prefix_query_tokens as f64);
    m.npu_radix_match_hit_num
        .with_label_values(&l)
        .set(st.prefix_hit_tokens as f64);
    let preempt = m.num_preemptions.with_label_values(&l);
    preempt.inc_by(st.preemptions_total.saturating_sub(prev.preemptions));

    let received = m.request_received.with_label_values(&l).get();
    let failed = m.request_failed.with_label_values(&l).get();
    m.failed_request_perc
        .with_label_values(&l)
        .set(if received == 0 {
            0.0
        } else {
            failed as f64 / received as f64
        });

    let now = Instant::now();
    let prompt = m.prompt_tokens.with_label_values(&l).get();
    let generation = m.generation_tokens.with_label_values(&l).get();
    let secs = now.duration_since(prev.at).as_secs_f64();
    if secs > 0.0 {
        m.avg_prompt_throughput
            .with_label_values(&l)
            .set(prompt.saturating_sub(prev.prompt_tokens) as f64 / secs);
        m.avg_generation_throughput
            .with_label_values(&l)
            .set(generation.saturating_sub(prev.generation_tokens) as f64 / secs);
    }
    Previous {
        at: now,
        prompt_tokens: prompt,
        generation_tokens: generation,
        preemptions: st.preemptions_total.max(prev.preemptions),
    }
}

/// Refreshes the gauges every [`INTERVAL`] until `stop` is cancelled.
pub fn spawn(
    metrics: Arc<Metrics>,
    engine: Arc<dyn EngineMonitor>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut prev = Previous {
            at: Instant::now(),
            prompt_tokens: 0,
            generation_tokens: 0,
            preemptions: 0,
        };
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            prev = refresh(&metrics, &engine.status(), &prev);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_the_engine() {
        let m = Metrics::new(&["m"]).unwrap();
        m.request_received.with_label_values(&["m"]).inc_by(4);
        m.request_failed.with_label_values(&["m"]).inc();
        let st = EngineStatus {
            running: 2,
            waiting: 3,
            free_npu_blocks: 25,
            total_npu_blocks: 100,
            preemptions_total: 5,
            prefix_query_tokens: 10,
            prefix_hit_tokens: 4,
            ..EngineStatus::default()
        };
        let prev = Previous {
            at: Instant::now() - Duration::from_secs(1),
            prompt_tokens: 0,
            generation_tokens: 0,
            preemptions: 0,
        };
        let next = refresh(&m, &st, &prev);
        refresh(&m, &st, &next);
        let text = m.render().unwrap();
        assert!(text.contains("num_requests_running{model_name=\"m\"} 2"));
        assert!(text.contains("num_requests_waiting{model_name=\"m\"} 3"));
        assert!(text.contains("npu_cache_usage_perc{model_name=\"m\"} 0.75"));
        assert!(text.contains("npu_prefix_cache_hit_rate{model_name=\"m\"} 0.4"));
        assert!(text.contains("failed_request_perc{model_name=\"m\"} 0.25"));
        // The running total is added once, not per refresh.
        assert!(text.contains("num_preemptions_total{model_name=\"m\"} 5"));
    }
}
