//! Certificate, key and CRL rotation without a restart (SIGHUP).
//!
//! This module owns the swappable TLS material of a running process and the reload of it.
//!
//! Design:
//! - [`Live<T>`] holds the current rustls config of one plane (server or client half) behind a
//!   `RwLock<Arc<T>>`. Accept loops read it once per new connection ([`Live::current`]); a
//!   connection keeps the `Arc` it started with, so open connections finish on the material
//!   they were accepted with while new ones get the new material.
//! - [`Reloader`] is the registry of every plane's TLS: each entry remembers the plane's
//!   [`TlsFiles`] (paths already resolved at start) and its server and/or client holder.
//!   [`Reloader::reload`] rebuilds every entry from the same files with the same checks as at
//!   start ([`tls::server_config`] / [`tls::client_config_for`]: permission checks first, then
//!   PEM parsing, key decryption, key/certificate match, validity, RSA size, CAs and CRLs).
//!   A plane is all-or-nothing: both halves must build before either is swapped; a plane that
//!   fails keeps its old material and its error (naming the file) is reported.
//! - Only file contents are re-read: `config.json` is not, so paths and on/off switches stay
//!   as they were at start.

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

/// One plane's files and the holders built from them.
struct Entry {
    plane: String,
    files: TlsFiles,
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
    /// Builds `plane`'s server config from `files` (permission-checked) and registers it.
    pub fn server(
        &self,
        plane: &str,
        files: TlsFiles,
        checker: &mut PermChecker,
    ) -> Result<LiveServer, TlsError> {
        let live = Live::new(tls::server_config(&files, checker)?);
        self.register(plane, files, Some(live.clone()), None);
        Ok(live)
    }

    /// Builds `plane`'s client config from `files` (permission-checked) and registers it.
    pub fn client(
        &self,
        plane: &str,
        files: TlsFiles,
        checker: &mut PermChecker,
    ) -> Result<LiveClient, TlsError> {
        let live = Live::new(tls::client_config_for(&files, checker)?);
        self.register(plane, files, None, Some(live.clone()));
        Ok(live)
    }

    /// Builds both halves of a plane that accepts and dials with one identity (interComm).
    pub fn both(
        &self,
        plane: &str,
        files: TlsFiles,
        checker: &mut PermChecker,
    ) -> Result<(LiveServer, LiveClient), TlsError> {
        let server = Live::new(tls::server_config(&files, checker)?);
        let client = Live::new(tls::client_config_for(&files, checker)?);
        self.register(plane, files, Some(server.clone()), Some(client.clone()));
        Ok((server, client))
    }

    fn register(
        &self,
        plane: &str,
        files: TlsFiles,
        server: Option<LiveServer>,
        client: Option<LiveClient>,
    ) {
        let entry = Entry {
            plane: plane.to_string(),
            files,
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
        Some(_) => Some(tls::server_config(&e.files, checker)?),
        None => None,
    };
    let client = match &e.client {
        Some(_) => Some(tls::client_config_for(&e.files, checker)?),
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
