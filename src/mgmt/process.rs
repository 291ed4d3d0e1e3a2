//! What this process holds, served on the management plane at `GET /v1/process` (this
//! project's route; MindIE's `/v1/status` keeps its exact shape): resident memory, threads, open
//! file descriptors and live tokio tasks. A soak run samples it to show that none of them grows
//! with the number of requests served (issue 16); an operator can watch it the same way.
//! Read from `/proc/self` on each call (a few small files); zero where `/proc` is not there.

use serde_json::{json, Value};

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessView {
    /// Resident set size, bytes (`VmRSS`).
    pub resident_bytes: u64,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Tasks alive on the tokio runtime this is called from (0 outside one).
    pub alive_tasks: u64,
}

/// The process's resident memory, bytes (0 where `/proc` is not there).
pub fn rss_bytes() -> u64 {
    status_field("VmRSS:").map_or(0, |kib| kib * 1024)
}

/// A numeric field of `/proc/self/status` (its first number).
fn status_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

impl ProcessView {
    /// Reads it now.
    pub fn now() -> Self {
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let alive_tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |h| h.metrics().num_alive_tasks() as u64);
        Self {
            resident_bytes: rss_bytes(),
            threads: status_field("Threads:").unwrap_or(0),
            open_fds,
            alive_tasks,
        }
    }

    /// The body of `/v1/process`.
    pub fn json(&self) -> Value {
        json!({
            "residentBytes": self.resident_bytes,
            "threads": self.threads,
            "openFds": self.open_fds,
            "aliveTasks": self.alive_tasks,
        })
    }
}

/// GET `/v1/process`.
pub async fn process_view() -> axum::Json<Value> {
    axum::Json(ProcessView::now().json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_this_process() {
        let v = ProcessView::now();
        assert!(v.resident_bytes > 1 << 20, "{v:?}");
        assert!(v.threads >= 3, "{v:?}"); // the test thread and two workers
        assert!(v.open_fds >= 3, "{v:?}");
        let before = v.alive_tasks;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let t = tokio::spawn(async move {
            let _ = rx.await;
        });
        assert_eq!(ProcessView::now().alive_tasks, before + 1);
        let _ = tx.send(());
        t.await.unwrap();
        // The join handle can resolve just before the runtime releases the finished task
        // (seen once in CI: still counted right after `await`), so give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ProcessView::now().alive_tasks != before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(ProcessView::now().alive_tasks, before);
        assert_eq!(v.json()["residentBytes"], v.resident_bytes);
    }
}
