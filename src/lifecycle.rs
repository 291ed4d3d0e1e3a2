//! The daemon's life cycle as every plane sees it: whether it is stopping, how many business
//! requests are in flight, and the one trigger that starts the shutdown (signals and
//! `/stopService` both pull it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the daemon is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Stop accepting, drain in-flight requests up to the deadline, exit 0.
    Graceful,
    /// Stop at once; in-flight requests are cut.
    Force,
}

/// Shared life-cycle state. Cheap to clone through an `Arc`.
#[derive(Debug, Default)]
pub struct Lifecycle {
    stopping: AtomicBool,
    force: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
    shutdown: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// True once a stop was asked for: readiness turns false and new business work is refused.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Marks the daemon as stopping without yet closing listeners (`/stopService` uses this
    /// before it waits for the drain and answers).
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Pulls the shutdown trigger: listeners close and the daemon drains (or not, if forced).
    pub fn trigger(&self, mode: StopMode) {
        self.begin_stopping();
        if mode == StopMode::Force {
            self.force.store(true, Ordering::SeqCst);
        }
        self.shutdown.cancel();
    }

    pub fn is_forced(&self) -> bool {
        self.force.load(Ordering::SeqCst)
    }

    /// Resolves when the shutdown trigger was pulled.
    pub fn triggered(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// The token listeners watch to stop accepting.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Business requests currently being served.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Counts one business request until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard { life: self.clone() }
    }

    /// Waits until no business request is in flight, or the deadline passes. Returns whether
    /// the daemon drained.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.inflight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

/// Holds one in-flight count; dropping it (response finished, client gone) releases it.
#[derive(Debug)]
pub struct InflightGuard {
    life: Arc<Lifecycle>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.life.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.life.idle.notify_waiters();
        }
    }
}

/// SIGTERM and SIGINT, listened for from [`StopSignals::install`] on: install them before
/// announcing the start, so a signal right after the announcement stops the process cleanly
/// instead of meeting the default action.
pub struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    /// Registers both; where that fails, logs so (`otherwise` says how the process can still
    /// be stopped) and [`StopSignals::recv`] never returns.
    pub fn install(otherwise: &str) -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers; {otherwise}");
                Self(None)
            }
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        let Some((term, int)) = &mut self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_guards() {
        let life = Lifecycle::new();
        let g1 = life.enter();
        let g2 = life.enter();
        assert_eq!(life.inflight(), 2);
        assert!(!life.wait_idle(Duration::from_millis(20)).await);
        let l2 = life.clone();
        let waiter = tokio::spawn(async move { l2.wait_idle(Duration::from_secs(5)).await });
        drop(g1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(g2);
        assert!(waiter.await.unwrap_or(false));
        assert_eq!(life.inflight(), 0);
    }

    #[test]
    fn trigger_marks_stopping_and_force() {
        let life = Lifecycle::new();
        assert!(!life.is_stopping());
        life.trigger(StopMode::Force);
        assert!(life.is_stopping());
        assert!(life.is_forced());
        assert!(life.token().is_cancelled());
    }
}
