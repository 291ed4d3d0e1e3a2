//! One reader per decode instance: `GET /dresult` on its business port, frames parsed as
//! Motor parses them ([`crate::pd::frames::parse`]) and handed to the waiting requests.
//!
//! - A refresh that adds a decode instance starts its reader and waits for the first
//!   connection: `max_retry + 1` attempts, 1 s apart ([`open`]); if none succeeds the refresh
//!   is answered 400 and the instance is left out.
//! - A stream that breaks (the instance died, a `close:` frame, or nothing at all — not even
//!   a heartbeat — for [`IDLE_LIMIT`]) fails the requests waiting on it at once, marks the
//!   instance unusable and reconnects the same way; when every attempt fails the instance is
//!   removed until a later refresh lists it again.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::pd::frames::{self, FrameKind};

/// Instances send `ka:` after 5 s idle; three missed heartbeats mean the link is dead.
pub const IDLE_LIMIT: Duration = Duration::from_secs(15);
/// Pause between connection attempts.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Starts the reader of decode instance `id` (replacing an older one) and waits until its
/// first connection is open (`true`) or every attempt failed (`false`).
pub async fn open(shared: &Arc<Shared>, id: u64) -> bool {
    let stop = shared.stop.child_token();
    if let Some(old) = shared.readers().insert(id, stop.clone()) {
        old.cancel();
    }
    let (first_tx, first_rx) = oneshot::channel();
    tokio::spawn(run(shared.clone(), id, stop, first_tx));
    first_rx.await.unwrap_or(false)
}

/// Stops the reader of `id` (the instance left the list) and fails its requests.
pub fn close(shared: &Shared, id: u64) {
    if let Some(t) = shared.readers().remove(&id) {
        t.cancel();
    }
    shared.registry.set_dresult(id, false);
    let n = shared
        .waiters
        .fail_decoder(id, &format!("decode instance {id} left the cluster"));
    if n > 0 {
        tracing::warn!(
            instance = id,
            requests = n,
            "decode instance removed; its requests end with an error"
        );
    }
}

enum Ended {
    /// Connected, then the stream ended.
    Broken(String),
    /// Could not connect.
    NoConnection(String),
    Stopped,
}

async fn run(shared: Arc<Shared>, id: u64, stop: CancellationToken, first: oneshot::Sender<bool>) {
    let mut first = Some(first);
    let attempts = shared.cfg.exceptions.max_retry + 1;
    let mut failures = 0u32;
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => Ended::Stopped,
            e = read_once(&shared, id, &mut first) => e,
        };
        shared.registry.set_dresult(id, false);
        match ended {
            Ended::Stopped => break,
            Ended::Broken(why) => {
                failures = 0;
                let n = shared.waiters.fail_decoder(
                    id,
                    &format!("decode instance {id} lost its /dresult stream: {why}"),
                );
                tracing::warn!(instance = id, requests = n, "/dresult stream broke: {why}");
            }
            Ended::NoConnection(why) => {
                failures += 1;
                tracing::warn!(
                    instance = id,
                    attempt = failures,
                    of = attempts,
                    "/dresult: {why}"
                );
                if failures >= attempts {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(false);
                    }
                    shared.registry.remove(id);
                    shared.readers().remove(&id);
                    shared
                        .waiters
                        .fail_decoder(id, &format!("decode instance {id} is unreachable"));
                    tracing::error!(instance = id, "decode instance unreachable after {attempts} attempts; removed until a refresh lists it again");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
    if let Some(tx) = first.take() {
        let _ = tx.send(false);
    }
}

async fn read_once(
    shared: &Arc<Shared>,
    id: u64,
    first: &mut Option<oneshot::Sender<bool>>,
) -> Ended {
    let Some(member) = shared.registry.get(id) else {
        return Ended::NoConnection(format!("instance {id} is not listed"));
    };
    let uri = match shared.business.uri(member.business, "/dresult") {
        Ok(u) => u,
        Err(e) => return Ended::NoConnection(e.to_string()),
    };
    let req = match Request::get(uri)
        .header(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        )
        .body(Full::default())
    {
        Ok(r) => r,
        Err(e) => return Ended::NoConnection(e.to_string()),
    };
    let resp =
        match tokio::time::timeout(shared.business.timeout(), shared.business.send(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Ended::NoConnection(e.to_string()),
            Err(_) => return Ended::NoConnection("no answer to GET /dresult".into()),
        };
    if resp.status() != 200 {
        return Ended::NoConnection(format!("GET /dresult answered {}", resp.status()));
    }
    shared.registry.set_dresult(id, true);
    tracing::info!(instance = id, addr = %member.business, "/dresult stream open");
    if let Some(tx) = first.take() {
        let _ = tx.send(true);
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(IDLE_LIMIT, body.frame()).await {
            Err(_) => return Ended::Broken(format!("nothing for {} s", IDLE_LIMIT.as_secs())),
            Ok(None) => return Ended::Broken("the instance ended the stream".into()),
            Ok(Some(Err(e))) => return Ended::Broken(e.to_string()),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let (parsed, used) = frames::parse(&buf);
        buf.drain(..used);
        for f in parsed {
            match f.kind {
                FrameKind::Ka => {}
                FrameKind::Close => return Ended::Broken(format!("close: {}", f.payload)),
                _ => shared.waiters.dispatch(f),
            }
        }
    }
}
