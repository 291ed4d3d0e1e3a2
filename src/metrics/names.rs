//! Every metric the daemon exports, in one place. Names, types, buckets and the single
//! `model_name` label are MindIE's; no MindIE name changes meaning here.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
const E2E_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0];
const KV_PULL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 16000.0, 20000.0, 32000.0,
    50000.0, 64000.0, 128000.0,
];

/// Handles to every metric, already bound to the served model's label value.
pub struct Metrics {
    registry: Registry,
    model: String,
    pub request_received: IntCounterVec,
    pub request_success: IntCounterVec,
    pub request_failed: IntCounterVec,
    pub prompt_tokens: IntCounterVec,
    pub generation_tokens: IntCounterVec,
    pub num_preemptions: IntCounterVec,
    /// The project's own series: requests the business plane refused with 503 before reading
    /// them (`maxLinkNum` in flight, or stopping). Not in `request_received_total`.
    pub request_refused: IntCounterVec,
    pub num_requests_running: GaugeVec,
    pub num_requests_waiting: GaugeVec,
    pub num_requests_swapped: GaugeVec,
    pub avg_prompt_throughput: GaugeVec,
    pub avg_generation_throughput: GaugeVec,
    pub failed_request_perc: GaugeVec,
    pub npu_cache_usage_perc: GaugeVec,
    pub cpu_cache_usage_perc: GaugeVec,
    pub npu_prefix_cache_hit_rate: GaugeVec,
    pub all_radix_match_num: GaugeVec,
    pub npu_radix_match_hit_num: GaugeVec,
    pub time_to_first_token: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub e2e_request_latency: HistogramVec,
    pub request_prompt_tokens: HistogramVec,
    pub request_generation_tokens: HistogramVec,
    /// PD (`inferMode: "dmi"`): the project's own series; MindIE exports none for PD.
    /// Bytes of KV pulled from prefill instances (decode side).
    pub pd_kv_transfer_bytes: IntCounterVec,
    /// Duration of each KV pull, dial to last byte (decode side).
    pub pd_kv_transfer_seconds: HistogramVec,
    /// KV pulls that failed (decode side).
    pub pd_kv_transfer_failed: IntCounterVec,
    /// Requests handed to a decode instance (prefill side).
    pub pd_handoffs: IntCounterVec,
    /// Hand-offs whose decode instance never released the KV, freed when the lease expired
    /// (prefill side).
    pub pd_kv_leases_expired: IntCounterVec,
    /// KV leases waiting for their pull now (prefill side).
    pub pd_kv_leases_held: GaugeVec,
    /// 1 while this instance's role is prefill (flex counts as both).
    pub pd_role_prefill: GaugeVec,
    /// 1 while this instance's role is decode (flex counts as both).
    pub pd_role_decode: GaugeVec,
    /// TTFT/TBT of the latest requests (`/metrics-json`; not a Prometheus series).
    pub recent: super::recent::RecentLatency,
}

const LABEL: &[&str] = &["model_name"];

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), LABEL)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), LABEL)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        LABEL,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Registers every metric for the model(s) served; several names are joined with `" & "`
    /// as MindIE does. Each series is created at zero so scrapers see it from the start.
    pub fn new(model_names: &[&str]) -> prometheus::Result<Self> {
        let r = Registry::new();
        let m = Self {
            request_received: counter(&r, "request_received_total", "Count of received requests.")?,
            request_success: counter(
                &r,
                "request_success_total",
                "Count of successfully processed requests.",
            )?,
            request_failed: counter(&r, "request_failed_total", "Count of failed requests.")?,
            prompt_tokens: counter(
                &r,
                "prompt_tokens_total",
                "Number of prefill tokens processed.",
            )?,
            generation_tokens: counter(
                &r,
                "generation_tokens_total",
                "Number of generation tokens processed.",
            )?,
            num_preemptions: counter(
                &r,
                "num_preemptions_total",
                "Cumulative number of preemption from the engine.",
            )?,
            request_refused: counter(
                &r,
                "request_refused_total",
                "Count of requests refused with 503 before being received (maxLinkNum reached or stopping).",
            )?,
            num_requests_running: gauge(
                &r,
                "num_requests_running",
                "Number of requests currently running on NPU.",
            )?,
            num_requests_waiting: gauge(
                &r,
                "num_requests_waiting",
                "Number of requests waiting to be processed.",
            )?,
            num_requests_swapped: gauge(
                &r,
                "num_requests_swapped",
                "Number of requests swapped to CPU.",
            )?,
            avg_prompt_throughput: gauge(
                &r,
                "avg_prompt_throughput_toks_per_s",
                "Average prefill throughput in tokens/s.",
            )?,
            avg_generation_throughput: gauge(
                &r,
                "avg_generation_throughput_toks_per_s",
                "Average generation throughput in tokens/s.",
            )?,
            failed_request_perc: gauge(
                &r,
                "failed_request_perc",
                "Requests failure rate. 1 means 100 percent usage.",
            )?,
            npu_cache_usage_perc: gauge(
                &r,
                "npu_cache_usage_perc",
                "NPU KV-cache usage. 1 means 100 percent usage.",
            )?,
            cpu_cache_usage_perc: gauge(
                &r,
                "cpu_cache_usage_perc",
                "CPU KV-cache usage. 1 means 100 percent usage.",
            )?,
            npu_prefix_cache_hit_rate: gauge(
                &r,
                "npu_prefix_cache_hit_rate",
                "NPU prefix cache block hit rate.",
            )?,
            all_radix_match_num: gauge(
                &r,
                "all_radix_match_num",
                "Number of prefix cache matches attempted.",
            )?,
            npu_radix_match_hit_num: gauge(
                &r,
                "npu_radix_match_hit_num",
                "Number of prefix cache matches that hit.",
            )?,
            time_to_first_token: histogram(
                &r,
                "time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                TTFT_BUCKETS,
            )?,
            time_per_output_token: histogram(
                &r,
                "time_per_output_token_seconds",
                "Histogram of time per output token in seconds.",
                TPOT_BUCKETS,
            )?,
            e2e_request_latency: histogram(
                &r,
                "e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.",
                E2E_BUCKETS,
            )?,
            request_prompt_tokens: histogram(
                &r,
                "request_prompt_tokens",
                "Number of prefill tokens processed.",
                TOKEN_BUCKETS,
            )?,
            request_generation_tokens: histogram(
                &r,
                "request_generation_tokens",
                "Number of generation tokens processed.",
                TOKEN_BUCKETS,
            )?,
            pd_kv_transfer_bytes: counter(
                &r,
                "pd_kv_transfer_bytes_total",
                "Bytes of KV cache pulled from prefill instances.",
            )?,
            pd_kv_transfer_seconds: histogram(
                &r,
                "pd_kv_transfer_seconds",
                "Histogram of KV cache pull durations in seconds.",
                KV_PULL_BUCKETS,
            )?,
            pd_kv_transfer_failed: counter(
                &r,
                "pd_kv_transfer_failed_total",
                "Count of failed KV cache pulls.",
            )?,
            pd_handoffs: counter(
                &r,
                "pd_handoffs_total",
                "Count of requests handed to a decode instance.",
            )?,
            pd_kv_leases_expired: counter(
                &r,
                "pd_kv_leases_expired_total",
                "Count of handed-off KV leases freed because no decode instance released them.",
            )?,
            pd_kv_leases_held: gauge(
                &r,
                "pd_kv_leases_held",
                "KV leases waiting for a decode instance's pull.",
            )?,
            pd_role_prefill: gauge(
                &r,
                "pd_role_prefill",
                "1 while the PD role is prefill or flex.",
            )?,
            pd_role_decode: gauge(
                &r,
                "pd_role_decode",
                "1 while the PD role is decode or flex.",
            )?,
            recent: super::recent::RecentLatency::default(),
            registry: r,
            model: model_names.join(" & "),
        };
        m.touch_all();
        Ok(m)
    }

    /// The `model_name` label value.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn touch_all(&self) {
        let l = [self.model.as_str()];
        for c in [
            &self.request_received,
            &self.request_success,
            &self.request_failed,
            &self.prompt_tokens,
            &self.generation_tokens,
            &self.num_preemptions,
            &self.request_refused,
            &self.pd_kv_transfer_bytes,
            &self.pd_kv_transfer_failed,
            &self.pd_handoffs,
            &self.pd_kv_leases_expired,
        ] {
            c.with_label_values(&l);
        }
        for g in [
            &self.num_requests_running,
            &self.num_requests_waiting,
            &self.num_requests_swapped,
            &self.avg_prompt_throughput,
            &self.avg_generation_throughput,
            &self.failed_request_perc,
            &self.npu_cache_usage_perc,
            &self.cpu_cache_usage_perc,
            &self.npu_prefix_cache_hit_rate,
            &self.all_radix_match_num,
            &self.npu_radix_match_hit_num,
            &self.pd_kv_leases_held,
            &self.pd_role_prefill,
            &self.pd_role_decode,
        ] {
            g.with_label_values(&l);
        }
        for h in [
            &self.time_to_first_token,
            &self.time_per_output_token,
            &self.e2e_request_latency,
            &self.request_prompt_tokens,
            &self.request_generation_tokens,
            &self.pd_kv_transfer_seconds,
        ] {
            h.with_label_values(&l);
        }
    }

    /// One KV pull of `bytes` that took `took`.
    pub fn kv_transfer(&self, bytes: u64, took: std::time::Duration) {
        let l = [self.model.as_str()];
        self.pd_kv_transfer_bytes
            .with_label_values(&l)
            .inc_by(bytes);
        self.pd_kv_transfer_seconds
            .with_label_values(&l)
            .observe(took.as_secs_f64());
    }

    /// Classic Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_mindie_names_and_label() {
        let m = Metrics::new(&["llama_65b"]).unwrap();
        m.request_received.with_label_values(&["llama_65b"]).inc();
        m.time_to_first_token
            .with_label_values(&["llama_65b"])
            .observe(0.03);
        let text = m.render().unwrap();
        assert!(text.contains("# TYPE request_received_total counter"));
        assert!(text.contains("request_received_total{model_name=\"llama_65b\"} 1"));
        assert!(text.contains("# TYPE time_to_first_token_seconds histogram"));
        assert!(text.contains(
            "time_to_first_token_seconds_bucket{model_name=\"llama_65b\",le=\"0.04\"} 1"
        ));
        assert!(text.contains(
            "time_to_first_token_seconds_bucket{model_name=\"llama_65b\",le=\"0.02\"} 0"
        ));
        assert!(text.contains("num_requests_running{model_name=\"llama_65b\"} 0"));
        assert!(text.contains(
            "request_generation_tokens_bucket{model_name=\"llama_65b\",le=\"128000\"} 0"
        ));
    }

    #[test]
    fn several_models_join_with_ampersand() {
        let m = Metrics::new(&["a", "b"]).unwrap();
        assert_eq!(m.model(), "a & b");
        assert!(m.render().unwrap().contains("model_name=\"a & b\""));
    }
}
