//! Where CANN's libraries are: as MindIE finds them, `$ASCEND_TOOLKIT_HOME/lib64` and
//! `$ASCEND_HOME_PATH/lib64` (exported by CANN's `set_env.sh`), then the loader's own path
//! (`LD_LIBRARY_PATH`, `ld.so.cache`) for a library no home has. `MINDIE_RS_ACL_LIBS` (a colon-separated list of files)
//! replaces the search: every role is looked up in exactly those files (tests point it at
//! the emulated CANN). Pure logic: opening is `ffi::Acl::load`'s.

use std::path::{Path, PathBuf};

use super::ffi::Role;
use crate::config::Env;

/// Replaces the library search (colon-separated files).
pub const LIBS_ENV: &str = "MINDIE_RS_ACL_LIBS";
const HOME_VARS: [&str; 2] = ["ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"];

/// The hint every "not found" message ends with.
const FIX: &str = "load CANN's environment first (`source /usr/local/Ascend/ascend-toolkit/set_env.sh`, \
                   or the set_env.sh of your CANN install), or set \"backendType\": \"cpu\" to run on this host's CPU";

/// The search, read from the environment once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CannSearch {
    /// `MINDIE_RS_ACL_LIBS`, split.
    pub libs: Option<Vec<PathBuf>>,
    /// `(variable, value)` of the CANN home variables, in search order.
    pub homes: Vec<(&'static str, Option<PathBuf>)>,
}

impl CannSearch {
    pub fn from_env(env: &Env) -> CannSearch {
        let libs = env.get(LIBS_ENV).filter(|v| !v.trim().is_empty()).map(|v| {
            v.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        });
        let homes = HOME_VARS
            .iter()
            .map(|&var| {
                (
                    var,
                    env.get(var).filter(|v| !v.is_empty()).map(PathBuf::from),
                )
            })
            .collect();
        CannSearch { libs, homes }
    }

    /// The libraries to open, by role (runtime, tensor meta, operators, collectives); HCCL is
    /// required only for more than one device.
    pub fn roles(&self, need_hccl: bool) -> Vec<Role> {
        let spec: [(&[&str], bool, &str); 4] = [
            (&["libascendcl.so", "libacl_rt.so"], true, "the ACL runtime"),
            (&["libnnopbase.so"], true, "the aclnn tensor meta library"),
            (
                &[
                    "libopapi.so",
                    "libopapi_transformer.so",
                    "libopapi_nn.so",
                    "libopapi_math.so",
                ],
                true,
                "the aclnn operator library",
            ),
            (
                &["libhccl.so", "libhcomm.so"],
                need_hccl,
                "HCCL (needed for worldSize > 1)",
            ),
        ];
        if let Some(files) = &self.libs {
            // One role of all the listed files, each required to open; the symbols of every
            // role are then looked up across them.
            return vec![Role {
                paths: files.clone(),
                required: true,
                missing: format!(
                    "the Ascend runtime is not available: none of the files in {LIBS_ENV} ({}) \
                     could be opened; fix {LIBS_ENV} or unset it to search CANN's install",
                    files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            }];
        }
        spec.iter()
            .map(|(names, required, what)| Role {
                paths: names.iter().flat_map(|n| self.candidates(n)).collect(),
                required: *required,
                missing: self.missing(names, what),
            })
            .collect()
    }

    /// `name` in the first CANN home's `lib64` that has the file, else the bare name (the
    /// loader's search path).
    fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let found = self
            .homes
            .iter()
            .filter_map(|(_, home)| home.as_deref())
            .map(|h| h.join("lib64").join(name))
            .find(|p| p.is_file());
        vec![found.unwrap_or_else(|| PathBuf::from(name))]
    }

    fn missing(&self, names: &[&str], what: &str) -> String {
        let wanted = match names {
            [one] => one.to_string(),
            [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
            [] => String::new(),
        };
        let places: Vec<String> = self
            .homes
            .iter()
            .map(|(var, home)| match home {
                Some(h) => format!("{}", Path::new(h).join("lib64").display()),
                None => format!("${var}/lib64 ({var} unset)"),
            })
            .collect();
        format!(
            "the Ascend runtime is not available: {what}, {wanted}, was not found in {} or the \
             loader path; {FIX}",
            places.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn without_cann_the_message_names_the_library_and_the_fix() {
        let s = CannSearch::from_env(&env(&[]));
        let roles = s.roles(false);
        assert_eq!(roles.len(), 4);
        assert_eq!(
            roles[0].paths,
            vec![
                PathBuf::from("libascendcl.so"),
                PathBuf::from("libacl_rt.so")
            ]
        );
        let m = &roles[0].missing;
        assert!(m.contains("libascendcl.so (or libacl_rt.so)"), "{m}");
        assert!(
            m.contains("ASCEND_TOOLKIT_HOME unset") && m.contains("set_env.sh"),
            "{m}"
        );
        assert!(m.contains("\"backendType\": \"cpu\""), "{m}");
        assert!(!roles[3].required, "HCCL only for several devices");
        assert!(s.roles(true)[3].required);
    }

    #[test]
    fn cann_homes_come_first_where_the_files_exist() {
        let dir = std::env::temp_dir().join(format!("mindie-locate-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib64")).unwrap();
        std::fs::write(dir.join("lib64/libnnopbase.so"), b"").unwrap();
        let home = dir.to_string_lossy().to_string();
        let s = CannSearch::from_env(&env(&[("ASCEND_HOME_PATH", &home)]));
        let roles = s.roles(false);
        assert_eq!(
            roles[1].paths,
            vec![dir.join("lib64/libnnopbase.so")],
            "found in a home: not searched again on the loader path"
        );
        assert_eq!(
            roles[0].paths[0],
            PathBuf::from("libascendcl.so"),
            "absent file: loader path only"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_override_replaces_the_search() {
        let s = CannSearch::from_env(&env(&[(LIBS_ENV, "/x/a.so:/x/b.so")]));
        let roles = s.roles(true);
        assert_eq!(roles.len(), 1);
        assert_eq!(
            roles[0].paths,
            vec![PathBuf::from("/x/a.so"), PathBuf::from("/x/b.so")]
        );
        assert!(roles[0].missing.contains(LIBS_ENV));
    }
}
