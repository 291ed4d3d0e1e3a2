//! Motor's `tls_config` items: each link or server `x` has `x_tls_enable` (bool) and
//! `x_tls_items {ca_cert, tls_cert, tls_key, tls_passwd, tls_crl}` (SPEC-CLUSTER §2–3). This
//! module turns one item into [`TlsFiles`] and those into rustls configs with the daemon's own
//! machinery: permission checks on every file, mutual TLS, CRLs, encrypted keys. [`Item`] is
//! an item as a reloadable [`TlsSource`]: the Controller and the Coordinator register their
//! items in a [`crate::security::reload::Reloader`] so that SIGHUP rebuilds them by the same
//! rules as at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::security::perms::PermChecker;
use crate::security::reload::TlsSource;
use crate::security::tls::{self, TlsError};
use crate::security::TlsFiles;

/// Why a `tls_config` item is unusable. Names the item and the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsItemError {
    #[error("tls_config.{key}: expected {expected}, found {found}")]
    Type {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("tls_config.{item}_tls_items.{field} is missing or empty; TLS is enabled for `{item}`, so it is required")]
    Missing { item: String, field: &'static str },
}

/// The files of item `name`, or `None` when `name_tls_enable` is false or absent. Relative
/// paths resolve against `base`.
pub fn item(
    tls_config: Option<&Value>,
    name: &str,
    base: &Path,
) -> Result<Option<TlsFiles>, TlsItemError> {
    let Some(cfg) = tls_config else {
        return Ok(None);
    };
    let enable_key = format!("{name}_tls_enable");
    let enabled = match cfg.get(&enable_key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(TlsItemError::Type {
                key: enable_key,
                expected: "true or false",
                found: other.to_string(),
            })
        }
    };
    if !enabled {
        return Ok(None);
    }
    let items_key = format!("{name}_tls_items");
    let items = match cfg.get(&items_key) {
        Some(Value::Object(o)) => o,
        None => {
            return Err(TlsItemError::Missing {
                item: name.to_string(),
                field: "(the whole object)",
            })
        }
        Some(other) => {
            return Err(TlsItemError::Type {
                key: items_key,
                expected: "an object",
                found: other.to_string(),
            })
        }
    };
    let path = |field: &'static str| -> Result<Option<PathBuf>, TlsItemError> {
        match items.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => {
                let p = Path::new(s.trim());
                Ok(Some(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                }))
            }
            Some(other) => Err(TlsItemError::Type {
                key: format!("{items_key}.{field}"),
                expected: "a path string",
                found: other.to_string(),
            }),
        }
    };
    let required = |field: &'static str| -> Result<PathBuf, TlsItemError> {
        path(field)?.ok_or(TlsItemError::Missing {
            item: name.to_string(),
            field,
        })
    };
    Ok(Some(TlsFiles {
        ca_files: vec![required("ca_cert")?],
        cert: required("tls_cert")?,
        key: required("tls_key")?,
        key_password: path("tls_passwd")?,
        crl_files: path("tls_crl")?.into_iter().collect(),
    }))
}

/// One enabled `tls_config` item's files, built into configs by Motor's rules: every file
/// permission-checked (the checker comes from `MINDIE_CHECK_INPUTFILES_PERMISSION`, see
/// [`super::files::checker_from_env`]), the server half requiring client certificates that chain to the
/// item's CA and are not in its CRL, the client half presenting the item's certificate.
#[derive(Debug, Clone)]
pub struct Item(pub TlsFiles);

impl TlsSource for Item {
    fn server_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config(&self.0, checker)
    }

    fn client_config(
        &self,
        checker: &mut PermChecker,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        tls::client_config_for(&self.0, checker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disabled_or_absent_items_are_none() {
        let base = Path::new("/base");
        assert!(item(None, "x", base).expect("none").is_none());
        let cfg = json!({"x_tls_enable": false, "x_tls_items": {}});
        assert!(item(Some(&cfg), "x", base).expect("off").is_none());
        assert!(item(Some(&cfg), "y", base).expect("absent").is_none());
    }

    #[test]
    fn enabled_item_resolves_paths_and_optional_fields() {
        let cfg = json!({"x_tls_enable": true, "x_tls_items": {
            "ca_cert": "./sec/ca.pem", "tls_cert": "/abs/cert.pem", "tls_key": "k.pem",
            "tls_passwd": "p.txt", "tls_crl": ""}});
        let f = item(Some(&cfg), "x", Path::new("/base"))
            .expect("ok")
            .expect("some");
        assert_eq!(f.ca_files, vec![PathBuf::from("/base/./sec/ca.pem")]);
        assert_eq!(f.cert, PathBuf::from("/abs/cert.pem"));
        assert_eq!(f.key, PathBuf::from("/base/k.pem"));
        assert_eq!(f.key_password, Some(PathBuf::from("/base/p.txt")));
        assert!(f.crl_files.is_empty());
    }

    #[test]
    fn enabled_item_without_cert_names_the_field() {
        let cfg =
            json!({"x_tls_enable": true, "x_tls_items": {"ca_cert": "ca.pem", "tls_key": "k"}});
        let e = item(Some(&cfg), "x", Path::new("/")).expect_err("missing");
        assert!(e.to_string().contains("x_tls_items.tls_cert"), "{e}");
        let cfg = json!({"x_tls_enable": "yes"});
        let e = item(Some(&cfg), "x", Path::new("/")).expect_err("type");
        assert!(e.to_string().contains("x_tls_enable"), "{e}");
    }
}
