//! The engine's condition as the management plane judges it, shared by every health route,
//! `/v1/engine-server/running-status` and the status role: initialising, idle, serving, busy,
//! stopping, or abnormal (gone, or stuck).
//!
//! Stuck-step detection (SPEC §0.12): the engine stamps `EngineStatus::progress_at` whenever a
//! step finishes or it has nothing to do, and publishes nothing while a step runs. When that
//! stamp is older than the stall threshold while requests are running or waiting, the engine
//! is stuck: health turns abnormal with the reason, and recovers by itself once steps finish
//! again. The threshold comes from env [`STALL_ENV`] (seconds, fractions allowed; default
//! [`DEFAULT_STALL`]; `0` turns detection off). It must exceed the longest legitimate step
//! (a large prefill on a slow CPU).

use super::MgmtState;
use crate::config::Env;
use crate::engine::EngineStatus;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Env var: seconds without engine progress, while work waits, before health says stuck.
pub const STALL_ENV: &str = "MIES_ENGINE_STALL_SECONDS";

/// Stall threshold when [`STALL_ENV`] is unset.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);

/// Reads [`STALL_ENV`]: `None` when detection is off (`0`).
pub fn stall_after_from_env(env: &Env) -> Result<Option<Duration>, String> {
    let Some(raw) = env.get(STALL_ENV).map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Some(DEFAULT_STALL));
    };
    match raw.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Some(Duration::from_secs_f64(v))),
        _ => Err(format!(
            "{STALL_ENV} = {raw:?}: must be a number of seconds in (0, 86400], or 0 to turn stuck-engine detection off"
        )),
    }
}

/// [`Fault::code`] of an instance whose other node (a multi-node slave) is down: not ready
/// (503) but alive (a restart of this process would not bring the node back).
pub const NODE_DOWN: &str = "NODE_DOWN";

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The engine is not running yet (loading, or no model).
    Init(String),
    /// Ready, nothing to do.
    Idle,
    /// Ready, working.
    Serving,
    /// Every batch slot taken and requests queue behind them.
    Busy,
    /// Draining for a stop: no new work.
    Stopping,
    /// The engine is gone or stuck.
    Abnormal(Fault),
}

/// Why the engine is abnormal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub message: String,
    /// A stable code for `running-status`'s `errors[].errCode`.
    pub code: &'static str,
    /// When it began, in Unix milliseconds.
    pub since_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Condition {
    /// Judges the engine now.
    pub fn of(s: &MgmtState) -> Self {
        Self::judge(
            s.life.is_stopping(),
            s.engine.status(),
            s.stall_after,
            Instant::now(),
        )
    }

    /// Judges an engine snapshot at `now` (see the module docs).
    pub fn judge(
        stopping: bool,
        st: EngineStatus,
        stall_after: Option<Duration>,
        now: Instant,
    ) -> Self {
        if stopping {
            return Condition::Stopping;
        }
        if !st.ready && st.node_down {
            return Condition::Abnormal(Fault {
                message: st
                    .reason
                    .unwrap_or_else(|| "a node of this instance is down".into()),
                code: NODE_DOWN,
                since_ms: unix_ms(SystemTime::now()),
            });
        }
        if !st.ready {
            let reason = st.reason.unwrap_or_else(|| "engine not ready".into());
            // An engine that ran and stopped is a fault; one that never ran is starting.
            return if st.progress_at.is_some() {
                Condition::Abnormal(Fault {
                    message: format!("engine stopped: {reason}"),
                    code: "ENGINE_STOPPED",
                    since_ms: unix_ms(SystemTime::now()),
                })
            } else {
                Condition::Init(reason)
            };
        }
        if let (Some(limit), Some(stalled)) = (stall_after, st.stalled_for(now)) {
            if stalled >= limit {
                let since = SystemTime::now().checked_sub(stalled).unwrap_or(UNIX_EPOCH);
                return Condition::Abnormal(Fault {
                    message: format!(
                        "engine stuck: no step finished for {:.1} s with {} running and {} waiting request(s) (limit {:.1} s, {STALL_ENV})",
                        stalled.as_secs_f64(),
                        st.running,
                        st.waiting,
                        limit.as_secs_f64()
                    ),
                    code: "ENGINE_STALLED",
                    since_ms: unix_ms(since),
                });
            }
        }
        if st.waiting > 0 && st.free_slots == 0 {
            Condition::Busy
        } else if st.running + st.waiting > 0 {
            Condition::Serving
        } else {
            Condition::Idle
        }
    }

    /// Requests are being served (possibly slowly, when busy).
    pub fn serving(&self) -> bool {
        matches!(self, Condition::Idle | Condition::Serving | Condition::Busy)
    }

    /// MindIE's running-status code: 0 READY, 1 NORMAL, 2 ABNORMAL, 3 PAUSE, 4 INIT, 5 BUSY.
    pub fn code(&self) -> u8 {
        match self {
            Condition::Idle => 0,
            Condition::Serving => 1,
            Condition::Abnormal(_) => 2,
            Condition::Stopping => 3,
            Condition::Init(_) => 4,
            Condition::Busy => 5,
        }
    }

    /// A one-line description for replies and logs.
    pub fn describe(&self) -> String {
        match self {
            Condition::Init(r) => format!("Service is not ready: {r}"),
            Condition::Idle | Condition::Serving => "Service is ready".into(),
            Condition::Busy => "Service is alive but busy".into(),
            Condition::Stopping => "Service is stopping".into(),
            Condition::Abnormal(f) => format!("Service is abnormal: {}", f.message),
        }
    }
}

/// Logs when the engine turns abnormal and when it recovers, checking every second until
/// `stop` is cancelled (health replies carry the same reason; this leaves a trace in the log).
pub fn spawn_watch(
    state: MgmtState,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut abnormal = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match Condition::of(&state) {
                Condition::Abnormal(f) if !abnormal => {
                    abnormal = true;
                    tracing::error!(code = f.code, "{}", f.message);
                }
                Condition::Abnormal(_) => {}
                c if abnormal => {
                    abnormal = false;
                    tracing::warn!(status = c.code(), "engine recovered: {}", c.describe());
                }
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_threshold_from_env() {
        let e = |v: &str| stall_after_from_env(&Env::from_pairs([(STALL_ENV, v)]));
        assert_eq!(
            stall_after_from_env(&Env::from_pairs::<_, String, String>([])),
            Ok(Some(DEFAULT_STALL))
        );
        assert_eq!(e("0"), Ok(None));
        assert_eq!(e("1.5"), Ok(Some(Duration::from_millis(1500))));
        assert!(e("-1").is_err());
        assert!(e("soon").unwrap_err().contains(STALL_ENV));
    }

    fn ready(running: usize, waiting: usize, free_slots: usize, idle_for: u64) -> EngineStatus {
        EngineStatus {
            ready: true,
            running,
            waiting,
            free_slots,
            progress_at: Some(Instant::now() - Duration::from_secs(idle_for)),
            ..EngineStatus::default()
        }
    }

    #[test]
    fn conditions() {
        let limit = Some(Duration::from_secs(5));
        let now = Instant::now();
        let judge = |st: EngineStatus| Condition::judge(false, st, limit, now);
        assert_eq!(judge(ready(0, 0, 8, 0)), Condition::Idle);
        assert_eq!(judge(ready(2, 0, 6, 0)), Condition::Serving);
        assert_eq!(judge(ready(8, 3, 0, 0)), Condition::Busy);
        // No progress for 10 s with work: stuck. Without work the stamp does not matter.
        let stuck = judge(ready(1, 0, 7, 10));
        assert!(
            matches!(&stuck, Condition::Abnormal(f) if f.code == "ENGINE_STALLED"),
            "{stuck:?}"
        );
        assert_eq!(stuck.code(), 2);
        assert!(!stuck.serving());
        assert_eq!(judge(ready(0, 0, 8, 10)), Condition::Idle);
        // Detection off.
        assert_eq!(
            Condition::judge(false, ready(1, 0, 7, 10), None, now),
            Condition::Serving
        );
        assert_eq!(
            Condition::judge(true, ready(0, 0, 8, 0), limit, now),
            Condition::Stopping
        );
        let never_ran = EngineStatus {
            reason: Some("loading".into()),
            ..EngineStatus::default()
        };
        assert_eq!(judge(never_ran), Condition::Init("loading".into()));
        let gone = EngineStatus {
            progress_at: Some(now),
            reason: Some("engine stopped".into()),
            ..EngineStatus::default()
        };
        assert!(matches!(judge(gone), Condition::Abnormal(f) if f.code == "ENGINE_STOPPED"));
    }
}
