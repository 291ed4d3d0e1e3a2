//! Certificate, key and CRL rotation without a restart (SIGHUP).
//!
//! This module owns the swappable TLS material of a running process and the reload of it.
//!
//! Design:
//! - [`Live<T>`] holds the current rustls config of one plane (server or client half) behind a
//!   `RwLock<Arc<T>>`. Accept loops read it once per new connection ([`Live::current`]); a
//!   connection keeps the `Arc` it started with, so open connections finish on the material
//!   they were accepted with while new ones get the new material.
//! - [`TlsSource`] is how one plane's configs are built from its files: the daemon's planes
//!   use their [`TlsFiles`] directly ([`tls::server_config`] / [`tls::client_config_for`]:
//!   permission checks first, then PEM parsing, key decryption, key/certificate match,
//!   validity, RSA size, CAs and CRLs); the Controller's and Coordinator's `tls_config` items
//!   bring their own source ([`crate::motor::tls_items::Item`]). Start-up and every reload
//!   build through the same source, so a reload applies exactly the start-up rules.
//! - [`Reloader`] is the registry of every plane's TLS: each entry remembers the plane's
//!   source (paths already resolved at start) and its server and/or client holder.
//!   [`Reloader::reload`] rebuilds every entry from its source. A plane is all-or-nothing:
//!   both halves must build before either is swapped; a plane that fails keeps its old
//!   material and its error (naming the file) is reported.
//! - [`ReloadSignal`] runs a reload on every SIGHUP, off the async workers, with one summary
//!   line per reload (`TLS reload done: ...`); the daemon, the Controller and the Coordinator
//!   share it.
//! - Only file contents are re-read: the config files are not, so paths and on/off switches
//!   stay as they were at start.

use std::sync::{Arc, Mutex, RwLock};

use super::perms::PermChecker;
use super::tls::{self, TlsError};
use super::TlsFiles;

/// The current config of one TLS half, swapped whole on reload.
#[derive(Debug)]
pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

/// A plane's server config, as accept loops hold it.
pub type LiveServer = Arc<Live<rustls::ServerConfig>>;
/// A link's client config, as dialers hold it.
pub type LiveClient = Arc<Live<rustls::ClientConfig>>;

impl<T> Live<T> {
    /// A holder starting with `config`.
    pub fn new(config: Arc<T>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(config),
        })
    }

    /// The config new connections use now.
    pub fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A writer only assigns an Arc; a poisoned lock still holds a whole value.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `config` the one new connections use.
    pub fn replace(&self, config: Arc<T>) {
        match self.current.write() {
            Ok(mut g) => *g = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// How one plane's server and client configs are built, checks included. Start-up and every
/// reload call the same methods.
pub trait TlsSource: Send + Sync {
    /// The plane's server config, with every file permission-checked by `checker`.
    fn server_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError>;
    /// The plane's client config, with every file permission-checked by `checker`.
    fn client_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError>;
}

/// The daemon's planes: `config.json`'s files under the daemon's rules.
impl TlsSource for TlsFiles {
    fn server_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config(self, checker)
    }

    fn client_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        tls::client_config_for(self, checker)
    }
}

/// One plane's source and the holders built from it.
struct Entry {
    plane: String,
    source: Box<dyn TlsSource>,
    server: Option<LiveServer>,
    client: Option<LiveClient>,
}

/// What a reload did to one plane.
#[derive(Debug)]
pub struct Outcome {
    /// The plane's name as in start-up messages (`business+management`, `interComm`, ...).
    pub plane: String,
    /// `Err`: the new material was refused and the old stays in use.
    pub result: Result<(), TlsError>,
}

/// Every reloadable TLS plane of this process. Cheap to clone (shared registry).
#[derive(Clone, Default)]
pub struct Reloader {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Reloader {
    /// Builds `plane`'s server config from `source` (permission-checked) and registers it.
    pub fn server(
        &self,
        plane: &str,
        source: impl TlsSource + 'static,
        checker: &mut PermChecker,
    ) -> Result<LiveServer, TlsError> {
        let live = Live::new(source.server_config(checker)?);
        self.register(plane, Box::new(source), Some(live.clone()), None);
        Ok(live)
    }

    /// Builds `plane`'s client config from `source` (permission-checked) and registers it.
    pub fn client(
        &self,
        plane: &str,
        source: impl TlsSource + 'static,
        checker: &mut PermChecker,
    ) -> Result<LiveClient, TlsError> {
        let live = Live::new(source.client_config(checker)?);
        self.register(plane, Box::new(source), None, Some(live.clone()));
        Ok(live)
    }

    /// Builds both halves of a plane that accepts and dials with one identity (interComm).
    pub fn both(
        &self,
        plane: &str,
        source: impl TlsSource + 'static,
        checker: &mut PermChecker,
    ) -> Result<(LiveServer, LiveClient), TlsError> {
        let server = Live::new(source.server_config(checker)?);
        let client = Live::new(source.client_config(checker)?);
        self.register(
            plane,
            Box::new(source),
            Some(server.clone()),
            Some(client.clone()),
        );
        Ok((server, client))
    }

    fn register(
        &self,
        plane: &str,
        source: Box<dyn TlsSource>,
        server: Option<LiveServer>,
        client: Option<LiveClient>,
    ) {
        let entry = Entry {
            plane: plane.to_string(),
            source,
            server,
            client,
        };
        match self.entries.lock() {
            Ok(mut v) => v.push(entry),
            Err(poisoned) => poisoned.into_inner().push(entry),
        }
    }

    /// How many planes are registered.
    pub fn len(&self) -> usize {
        match self.entries.lock() {
            Ok(v) => v.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether no plane uses TLS.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds every plane from its files and swaps the planes that built completely.
    /// Blocking (file reads, key decryption): call it off the async workers.
    pub fn reload(&self, checker: &mut PermChecker) -> Vec<Outcome> {
        let entries = match self.entries.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries
            .iter()
            .map(|e| Outcome {
                plane: e.plane.clone(),
                result: reload_entry(e, checker),
            })
            .collect()
    }

    /// [`Self::reload`], logging one line per plane: `TLS material reloaded: <plane> ...` or
    /// `TLS material NOT reloaded: <plane> keeps its old material: <why, naming the file>`.
    /// The lines hold paths and reasons only, never file contents or passwords.
    pub fn reload_and_log(&self, checker: &mut PermChecker) -> Vec<Outcome> {
        let outcomes = self.reload(checker);
        for o in &outcomes {
            match &o.result {
                Ok(()) => tracing::info!(
                    plane = %o.plane,
                    "TLS material reloaded: {} (certificate, key, CAs and CRLs); new connections use it, open ones keep theirs",
                    o.plane
                ),
                Err(e) => tracing::error!(
                    plane = %o.plane,
                    "TLS material NOT reloaded: {} keeps its old material: {e}",
                    o.plane
                ),
            }
        }
        outcomes
    }
}

/// All-or-nothing for one plane: both halves built before either is swapped.
fn reload_entry(e: &Entry, checker: &mut PermChecker) -> Result<(), TlsError> {
    let server = match &e.server {
        Some(_) => Some(e.source.server_config(checker)?),
        None => None,
    };
    let client = match &e.client {
        Some(_) => Some(e.source.client_config(checker)?),
        None => None,
    };
    if let (Some(live), Some(cfg)) = (&e.server, server) {
        live.replace(cfg);
    }
    if let (Some(live), Some(cfg)) = (&e.client, client) {
        live.replace(cfg);
    }
    Ok(())
}

/// The SIGHUP stream (`None` when it could not be registered). Installed at start, before any
/// plane is built, so that a SIGHUP during start-up does not take its default action (exit).
pub struct ReloadSignal(Option<tokio::signal::unix::Signal>);

impl ReloadSignal {
    /// Catches SIGHUP from now on. Needs a Tokio runtime (call it inside one).
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Self(Some(s)),
            Err(e) => {
                tracing::error!("cannot install the SIGHUP handler ({e}): certificates cannot be reloaded without a restart");
                Self(None)
            }
        }
    }

    /// Reloads every plane of `reloader` on each SIGHUP, with a fresh permission checker from
    /// `checker` (as strict as the start-up one). Reloads run one at a time, off the async
    /// workers; each ends with one `TLS reload done: ...` line.
    pub fn spawn<F>(self, reloader: Reloader, checker: F)
    where
        F: Fn() -> PermChecker + Send + Sync + 'static,
    {
        let Some(mut hup) = self.0 else {
            return;
        };
        let checker = Arc::new(checker);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if reloader.is_empty() {
                    tracing::info!("SIGHUP: no plane uses TLS; nothing to reload");
                    continue;
                }
                tracing::info!(
                    planes = reloader.len(),
                    "SIGHUP: reloading TLS certificates, keys and CRLs"
                );
                let r = reloader.clone();
                let make = checker.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let mut checker = (*make)();
                    let outcomes = r.reload_and_log(&mut checker);
                    outcomes.iter().filter(|o| o.result.is_err()).count()
                })
                .await;
                match done {
                    Ok(0) => tracing::info!("TLS reload done: every plane uses the new material"),
                    Ok(n) => tracing::warn!("TLS reload done: {n} plane(s) kept their old material (see above)"),
                    Err(e) => tracing::error!("TLS reload stopped: {e}; planes not reported above keep their old material"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A source whose halves build empty configs, or fail while `broken` is set.
    struct Fake {
        server_broken: Arc<AtomicBool>,
        client_broken: Arc<AtomicBool>,
    }

    fn refused(half: &str) -> TlsError {
        TlsError::BadFile {
            what: "certificate",
            path: PathBuf::from(format!("/fake/{half}.pem")),
            reason: "refused for the test".into(),
        }
    }

    impl TlsSource for Fake {
        fn server_config(
            &self,
            _: &mut PermChecker,
        ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
            if self.server_broken.load(Ordering::Relaxed) {
                return Err(refused("server"));
            }
            let cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| refused(&e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
            Ok(Arc::new(cfg))
        }

        fn client_config(
            &self,
            _: &mut PermChecker,
        ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
            if self.client_broken.load(Ordering::Relaxed) {
                return Err(refused("client"));
            }
            let cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| refused(&e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        }
    }

    #[test]
    fn any_source_reloads_whole_planes_or_keeps_the_old_material() {
        let (server_broken, client_broken) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let fake = || Fake {
            server_broken: server_broken.clone(),
            client_broken: client_broken.clone(),
        };
        let reloader = Reloader::default();
        let mut checker = PermChecker::new(true);
        let (server, client) = reloader.both("pair", fake(), &mut checker).expect("both");
        let lone = reloader
            .server("lone", fake(), &mut checker)
            .expect("server");
        assert_eq!(reloader.len(), 2);

        // Everything builds: every holder gets a new config.
        let before = (server.current(), client.current(), lone.current());
        let outcomes = reloader.reload(&mut checker);
        assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
        assert!(!Arc::ptr_eq(&before.0, &server.current()));
        assert!(!Arc::ptr_eq(&before.1, &client.current()));
        assert!(!Arc::ptr_eq(&before.2, &lone.current()));

        // The client half fails: the pair keeps both old halves (its server built fine), the
        // server-only plane is reloaded.
        client_broken.store(true, Ordering::Relaxed);
        let before = (server.current(), client.current(), lone.current());
        let outcomes = reloader.reload(&mut checker);
        let pair = outcomes.iter().find(|o| o.plane == "pair").expect("pair");
        let e = pair.result.as_ref().expect_err("pair refused");
        assert!(e.to_string().contains("/fake/client.pem"), "{e}");
        assert!(Arc::ptr_eq(&before.0, &server.current()));
        assert!(Arc::ptr_eq(&before.1, &client.current()));
        assert!(!Arc::ptr_eq(&before.2, &lone.current()));

        // A server half that fails to build at start registers nothing.
        server_broken.store(true, Ordering::Relaxed);
        assert!(reloader.server("late", fake(), &mut checker).is_err());
        assert_eq!(reloader.len(), 2);
    }
}
