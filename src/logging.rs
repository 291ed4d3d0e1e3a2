//! Logging set-up from MindIE's environment variables (SPEC §0.9): `MINDIE_LOG_LEVEL`,
//! `MINDIE_LOG_TO_STDOUT`, `MINDIE_LOG_TO_FILE`, `MINDIE_LOG_PATH`, `MINDIE_LOG_ROTATE`, and
//! this project's `MINDIE_LOG_FORMAT` (`text`, MindIE's lines, the default; or `json`, one JSON
//! object per line for log pipelines, carrying the fields of the current span, such as the
//! `request_id` of the request being served).
//! By default logs go to stdout so `nohup ... > output.log` captures them. The level can be
//! changed at run time through [`LogHandle`]; [`handle`] gives the one [`init`] installed
//! (the management plane's log-level control uses it).

use crate::config::Env;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// MindIE's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`) and,
    /// inside a span, `span` (its name and fields, e.g. `request_id`).
    Json,
}

impl LogFormat {
    /// `text` or `json` (any case); `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Logging choices derived from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A tracing level: error, warn, info, debug, trace.
    pub level: String,
    pub to_stdout: bool,
    pub to_file: bool,
    pub dir: PathBuf,
    /// Rotate when the file exceeds this many bytes.
    pub rotate_bytes: u64,
    /// Rotated files kept.
    pub rotate_keep: u32,
    /// `MINDIE_LOG_FORMAT`: text (default) or json, for stdout and the file alike.
    pub format: LogFormat,
    /// The `MINDIE_LOG_FORMAT` value that was not understood (text is used; [`init`] warns).
    pub format_refused: Option<String>,
}

/// Picks the value for this process from MindIE's optional per-component form
/// (`llm:debug;server:info`): the `server` entry, else `llm`, else the plain value.
fn component_value(raw: &str) -> Option<String> {
    if !raw.contains(':') {
        return Some(raw.trim().to_string());
    }
    let entries: Vec<(String, String)> = raw
        .split([';', ','])
        .filter_map(|e| e.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    ["server", "llm", "*"].iter().find_map(|want| {
        entries
            .iter()
            .find(|(k, _)| k == want)
            .map(|(_, v)| v.clone())
    })
}

/// Maps MindIE's level names to tracing's. `None` for unknown names.
pub fn tracing_level(mindie: &str) -> Option<&'static str> {
    match mindie.trim().to_ascii_lowercase().as_str() {
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        "error" | "critical" => Some("error"),
        "trace" => Some("trace"),
        _ => None,
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `-fs 20 -r 10`: file size in MB and files kept.
fn parse_rotate(v: &str) -> (u64, u32) {
    let (mut mb, mut keep) = (20u64, 10u32);
    let words: Vec<&str> = v.split_whitespace().collect();
    for pair in words.windows(2) {
        match pair[0] {
            "-fs" => {
                mb = pair[1]
                    .parse()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .unwrap_or(mb)
            }
            "-r" => {
                keep = pair[1]
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .unwrap_or(keep)
            }
            _ => {}
        }
    }
    (mb * 1024 * 1024, keep)
}

impl LogSettings {
    pub fn from_env(env: &Env) -> Self {
        let level = env
            .get("MINDIE_LOG_LEVEL")
            .and_then(component_value)
            .and_then(|v| tracing_level(&v))
            .unwrap_or("info")
            .to_string();
        let flag = |key: &str, default: bool| {
            env.get(key)
                .and_then(component_value)
                .and_then(|v| parse_bool(&v))
                .unwrap_or(default)
        };
        let dir = env
            .get("MINDIE_LOG_PATH")
            .and_then(component_value)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = env.get("HOME").unwrap_or("/root");
                Path::new(home).join("mindie/log")
            });
        let (rotate_bytes, rotate_keep) = env
            .get("MINDIE_LOG_ROTATE")
            .and_then(component_value)
            .map(|v| parse_rotate(&v))
            .unwrap_or((20 * 1024 * 1024, 10));
        let raw_format = env.get("MINDIE_LOG_FORMAT").map(str::to_string);
        let format = raw_format.as_deref().and_then(LogFormat::parse);
        let format_refused = raw_format.filter(|_| format.is_none());
        Self {
            level,
            to_stdout: flag("MINDIE_LOG_TO_STDOUT", true),
            to_file: flag("MINDIE_LOG_TO_FILE", false),
            dir,
            rotate_bytes,
            rotate_keep,
            format: format.unwrap_or_default(),
            format_refused,
        }
    }
}

/// A log file that rotates by size: `name.log` → `name.log.1` → … up to `keep` files.
struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    limit: u64,
    keep: u32,
}

impl RotatingFile {
    fn open(path: PathBuf, limit: u64, keep: u32) -> io::Result<Self> {
        let file = open_log(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            file,
            written,
            limit,
            keep,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.keep).rev() {
            let from = self.path.with_extension(format!("log.{i}"));
            if from.exists() {
                fs::rename(&from, self.path.with_extension(format!("log.{}", i + 1)))?;
            }
        }
        let first = self.path.with_extension("log.1");
        fs::rename(&self.path, &first)?;
        set_mode(&first, 0o440);
        self.file = open_log(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit && self.written > 0 {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Changes the log level at run time; `reset` returns to the start-up level.
#[derive(Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    base: String,
}

impl LogHandle {
    /// Applies a MindIE level name (debug, info, warn, error, critical).
    pub fn set_level(&self, mindie_level: &str) -> Result<(), String> {
        let level = tracing_level(mindie_level).ok_or_else(|| {
            format!("log level {mindie_level:?}: allowed debug, info, warn, error, critical")
        })?;
        self.apply(level)
    }

    /// The start-up level (a tracing level name).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn reset(&self) -> Result<(), String> {
        let base = self.base.clone();
        self.apply(&base)
    }

    fn apply(&self, level: &str) -> Result<(), String> {
        self.handle
            .reload(filter(level))
            .map_err(|e| format!("log level change failed: {e}"))
    }
}

fn filter(level: &str) -> EnvFilter {
    // Our crates at the chosen level; noisy dependencies one notch quieter.
    EnvFilter::new(format!("warn,mindie={level},mindieservice_daemon={level}"))
}

/// The handle of the subscriber [`init`] installed (`None` before, or in tests that log
/// elsewhere).
static HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// The level handle of the installed subscriber, if [`init`] ran.
pub fn handle() -> Option<LogHandle> {
    HANDLE.get().cloned()
}

/// The format [`init`] installed (text before).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// One output of the subscriber, in the chosen format.
fn output<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(false)
            .with_target(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_target(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// Prints an operator line on stdout, such as MindIE's `Daemon start success!` that scripts
/// wait for: as it is in the text format, as a JSON log object (level INFO, the line as its
/// `message`) in the JSON format, so every stdout line stays one JSON object. Printed whatever
/// the log level, as MindIE prints it.
pub fn print_line(line: &str) {
    if FORMAT.get() != Some(&LogFormat::Json) {
        println!("{line}");
        return;
    }
    let mut stamp = String::new();
    let _ = fmt::time::FormatTime::format_time(
        &fmt::time::SystemTime,
        &mut fmt::format::Writer::new(&mut stamp),
    );
    let obj = serde_json::json!({
        "timestamp": stamp,
        "level": "INFO",
        "fields": { "message": line },
        "target": "mindieservice_daemon",
    });
    println!("{obj}");
}

/// Installs the global subscriber. Call once, first thing.
pub fn init(settings: &LogSettings) -> io::Result<LogHandle> {
    let (filter_layer, handle) = reload::Layer::new(filter(&settings.level));
    let stdout_layer = settings
        .to_stdout
        .then(|| output(settings.format, io::stdout));
    let file_layer = if settings.to_file {
        let dir = settings.dir.join("debug");
        fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o750);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = dir.join(format!("mindie-server_{}_{stamp}.log", std::process::id()));
        let file = RotatingFile::open(path, settings.rotate_bytes, settings.rotate_keep)?;
        Some(output(settings.format, Mutex::new(file)))
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(stdout_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let h = LogHandle {
        handle,
        base: settings.level.clone(),
    };
    let _ = HANDLE.set(h.clone());
    let _ = FORMAT.set(settings.format);
    if let Some(v) = &settings.format_refused {
        tracing::warn!(
            "MINDIE_LOG_FORMAT={v:?} is not a log format (allowed: text, json); using text"
        );
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_settings() {
        let env = Env::from_pairs([
            ("MINDIE_LOG_LEVEL", "llm:debug;server:warn"),
            ("MINDIE_LOG_TO_FILE", "1"),
            ("MINDIE_LOG_PATH", "/tmp/x"),
            ("MINDIE_LOG_ROTATE", "-fs 5 -r 3"),
        ]);
        let s = LogSettings::from_env(&env);
        assert_eq!(s.level, "warn");
        assert!(s.to_file);
        assert!(s.to_stdout);
        assert_eq!(s.dir, PathBuf::from("/tmp/x"));
        assert_eq!((s.rotate_bytes, s.rotate_keep), (5 * 1024 * 1024, 3));
        let d = LogSettings::from_env(&Env::from_pairs([("MINDIE_LOG_LEVEL", "CRITICAL")]));
        assert_eq!(d.level, "error");
        assert!(!d.to_file);
        assert_eq!(d.format, LogFormat::Text);
        let j = LogSettings::from_env(&Env::from_pairs([("MINDIE_LOG_FORMAT", "JSON")]));
        assert_eq!((j.format, j.format_refused), (LogFormat::Json, None));
        let x = LogSettings::from_env(&Env::from_pairs([("MINDIE_LOG_FORMAT", "xml")]));
        assert_eq!(
            (x.format, x.format_refused.as_deref()),
            (LogFormat::Text, Some("xml"))
        );
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::open(path.clone(), 10, 2).unwrap();
        for _ in 0..5 {
            f.write_all(b"0123456789").unwrap();
        }
        assert!(path.exists());
        assert!(dir.path().join("a.log.1").exists());
        assert!(dir.path().join("a.log.2").exists());
        assert!(!dir.path().join("a.log.3").exists());
    }
}
