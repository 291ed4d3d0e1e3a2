//! One concurrency level of the sweep: `concurrency` workers, each with its own kept-alive
//! connection, take request indexes from a shared counter and send streaming requests until
//! the level's request count is reached or its duration has passed (requests in flight then
//! finish). Returns the level's records and its wall time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;

use crate::client::Endpoint;
use crate::record::{ErrorKind, Record};
use crate::workload::Workload;

/// What one level runs.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    pub concurrency: usize,
    /// Requests to send in all.
    pub requests: u64,
    /// No new request starts after this long.
    pub duration: Option<Duration>,
    /// Limit for one request, first byte to `[DONE]`.
    pub request_timeout: Duration,
    /// Index of the level's first request: prompts differ across levels too.
    pub first_index: u64,
}

/// The default request count of a level: 4 per worker, at least 8.
pub fn default_requests(concurrency: usize) -> u64 {
    (4 * concurrency as u64).max(8)
}

/// Runs a level; returns its records (in completion order) and its wall time.
pub async fn run_level(
    endpoint: &Endpoint,
    workload: &Arc<Workload>,
    level: Level,
) -> (Vec<Record>, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..level.concurrency.max(1) {
        let (ep, wl, next) = (endpoint.clone(), workload.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = None;
            let mut records = Vec::new();
            loop {
                if level.duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= level.requests {
                    break;
                }
                let body = match serde_json::to_vec(&wl.body(level.first_index + i)) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        records.push(Record::failed(
                            ErrorKind::Transport,
                            format!("body: {e}"),
                            Duration::ZERO,
                        ));
                        continue;
                    }
                };
                let rec = ep
                    .stream(
                        &mut conn,
                        wl.path(),
                        body,
                        wl.expected_output(),
                        level.request_timeout,
                    )
                    .await;
                records.push(rec);
            }
            records
        }));
    }
    let mut records = Vec::new();
    for w in workers {
        match w.await {
            Ok(r) => records.extend(r),
            Err(e) => records.push(Record::failed(
                ErrorKind::Transport,
                format!("worker died: {e}"),
                Duration::ZERO,
            )),
        }
    }
    (records, start.elapsed())
}
