//! The per-request PD scope: which [`Inference`] a business request's generations run on, and
//! the reply identity both halves of a handed-off request share.
//!
//! Under PD one client request is served twice by the same route handler: on the prefill
//! instance up to its first token, then replayed on the decode instance from the handed-over
//! state. Both replays run the unchanged flavour handler inside a [`Scope`]; the session
//! ([`crate::http::session::Serving::start`]) submits to the scope's inference instead of the
//! local engine, and OpenAI's reply id and `created` come from the scope, so the chunks P and
//! D write belong to one reply. Outside a scope (standard mode) nothing changes.

use crate::engine::Inference;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// What one PD request's handler runs under.
pub struct Scope {
    inference: Arc<dyn Inference>,
    identity: Mutex<Option<ReplyIdentity>>,
    /// The seed chosen for a request that named none (made on P, preset on D).
    seed: Mutex<Option<u64>>,
}

/// A reply's client-visible id and creation time (OpenAI's `id` and `created`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplyIdentity {
    pub id: String,
    pub created: u64,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

impl Scope {
    /// A scope whose generations run on `inference`; `identity` is preset on the decode side
    /// (the prefill side's), `None` on the prefill side (made by the first reply).
    pub fn new(inference: Arc<dyn Inference>, identity: Option<ReplyIdentity>) -> Arc<Self> {
        Self::with_seed(inference, identity, None)
    }

    /// [`Scope::new`] with the seed the prefill side chose (decode side).
    pub fn with_seed(
        inference: Arc<dyn Inference>,
        identity: Option<ReplyIdentity>,
        seed: Option<u64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inference,
            identity: Mutex::new(identity),
            seed: Mutex::new(seed),
        })
    }

    /// The seed chosen in this scope for a request that named none.
    pub fn seed(&self) -> Option<u64> {
        self.seed.lock().ok().and_then(|g| *g)
    }

    /// The reply identity made or preset in this scope.
    pub fn identity(&self) -> Option<ReplyIdentity> {
        self.identity.lock().ok().and_then(|g| g.clone())
    }

    /// Runs `f` (a route handler's future) inside this scope.
    pub async fn run<F: Future>(self: Arc<Self>, f: F) -> F::Output {
        SCOPE.scope(self, f).await
    }
}

/// The inference of the current PD scope, if the caller runs in one.
pub fn inference() -> Option<Arc<dyn Inference>> {
    SCOPE.try_with(|s| s.inference.clone()).ok()
}

/// The reply identity to use: the scope's (made by `make` the first time), or `make()`'s
/// outside a scope.
pub fn reply_identity(make: impl FnOnce() -> ReplyIdentity) -> ReplyIdentity {
    let mut make = Some(make);
    let scoped = SCOPE
        .try_with(|s| {
            let mut g = s.identity.lock().ok()?;
            let make = make.take()?;
            Some(g.get_or_insert_with(make).clone())
        })
        .ok()
        .flatten();
    match (scoped, make) {
        (Some(id), _) => id,
        (None, Some(make)) => make(),
        // The scope's lock was poisoned after `make` was taken: a fresh identity.
        (None, None) => ReplyIdentity {
            id: format!("pd-{}", uuid::Uuid::new_v4().simple()),
            created: 0,
        },
    }
}

/// A random seed for a request that named none; inside a scope the first one is kept, so
/// both halves of a PD request report (and sample with) the same seed.
pub fn fresh_seed() -> u64 {
    let make = || uuid::Uuid::new_v4().as_u64_pair().0;
    SCOPE
        .try_with(|s| s.seed.lock().ok().map(|mut g| *g.get_or_insert_with(make)))
        .ok()
        .flatten()
        .unwrap_or_else(make)
}
