//! Loading as a whole: the stock file, file-level failures, warnings, reporting every problem,
//! and the key table agreeing with the serde structs.

use super::support::{accepted, default_doc, env, load_text, problems, remove, set, DEFAULT};
use crate::config::fields::{Kind, Section, ROOT};
use crate::config::validate::{check, MAX_CONFIG_BYTES};
use crate::config::{Config, ConfigError, Truncation};
use serde_json::{json, Value};

#[test]
fn stock_file_loads_with_only_kmc_warnings() {
    let loaded = load_text(DEFAULT, &env(&[])).expect("stock config loads");
    let c = &loaded.config;
    assert_eq!(c.version, "1.0.0");
    assert_eq!(c.server_config.ip_address, "127.0.0.1");
    assert_eq!(c.server_config.management_ip(), "127.0.0.2");
    assert_eq!(c.server_config.port, 1025);
    assert_eq!(c.server_config.management_port(), 1026);
    assert_eq!(c.server_config.metrics_port, 1027);
    assert_eq!(c.server_config.max_link_num, 1000);
    assert_eq!(c.server_config.tls_ca_file, vec!["ca.pem".to_string()]);
    let model = c.model().expect("one model");
    assert_eq!(model.model_name, "llama_65b");
    assert_eq!(model.world_size, 4);
    assert_eq!(model.npu_mem_size, -1);
    assert_eq!(model.kv_link_timeout, 1080);
    assert!(model.extra.is_empty(), "{:?}", model.extra);
    let d = &c.backend_config.model_deploy_config;
    assert_eq!((d.max_seq_len, d.max_input_token_len), (2560, 2048));
    assert_eq!(d.truncation, Truncation::Reject);
    assert_eq!(c.backend_config.npu_device_ids, vec![vec![0, 1, 2, 3]]);
    assert_eq!(c.backend_config.schedule_config.max_batch_size, 200);
    assert_eq!(c.backend_config.schedule_config.max_n, 128, "default maxN");
    assert_eq!(c.log_config.dynamic_log_level_valid_hours, 2);

    let mut w = loaded.warnings.clone();
    w.sort();
    let kmc = "ignored (KMC not supported; key passphrase files are plain text, SPEC §0.7)";
    assert_eq!(
        w,
        vec![
            format!("BackendConfig.interNodeKmcKsfMaster: {kmc}"),
            format!("BackendConfig.interNodeKmcKsfStandby: {kmc}"),
            format!("ServerConfig.kmcKsfMaster: {kmc}"),
            format!("ServerConfig.kmcKsfStandby: {kmc}"),
        ]
    );
}

#[test]
fn empty_file_is_refused_by_size() {
    match load_text("", &env(&[])) {
        Err(ConfigError::Size { size, .. }) => assert_eq!(size, 0),
        other => panic!("expected a size error, got {other:?}"),
    }
}

#[test]
fn file_over_10_mib_is_refused_by_size() {
    let mut text = DEFAULT.to_string();
    text.push_str(&" ".repeat(MAX_CONFIG_BYTES as usize));
    match load_text(&text, &env(&[])) {
        Err(ConfigError::Size { size, .. }) => assert_eq!(size, text.len() as u64),
        other => panic!("expected a size error, got {other:?}"),
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.json");
    let e = crate::config::load(&path, dir.path(), &env(&[])).expect_err("no file");
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
}

#[test]
fn invalid_json_names_line_and_column() {
    // Line 4 lacks the comma after 1025.
    let text = "{\n  \"ServerConfig\": {\n    \"port\": 1025\n    \"metricsPort\": 1027\n  }\n}\n";
    match load_text(text, &env(&[])) {
        Err(ConfigError::Json {
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!(line, 4, "{message}");
            assert_eq!(column, 5, "{message}");
            assert!(message.contains("line 4"), "{message}");
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[test]
fn utf8_bom_is_accepted() {
    let text = format!("\u{feff}{DEFAULT}");
    assert!(load_text(&text, &env(&[])).is_ok());
}

#[test]
fn non_object_document_is_one_problem() {
    let p = problems(&json!([1, 2, 3]), &env(&[]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].path, "(root)");
    assert_eq!(p[0].value, "[1,2,3]");
}

#[test]
fn unknown_keys_warn_with_did_you_mean() {
    let mut doc = default_doc();
    set(&mut doc, "ServerConfig.maxLinkNumber", json!(300));
    set(&mut doc, "ServerConfig.IpAddress", json!("127.0.0.1"));
    set(&mut doc, "ServerConfig.completelyNew", json!(1));
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.maxBatchSize",
        json!(8),
    );
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.ModelConfig[0].modelname",
        json!("x"),
    );
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.ModelConfig[0].custom_flag",
        json!(1),
    );
    let loaded = accepted(&doc, &env(&[]));
    let w = &loaded.warnings;
    let has = |s: &str| assert!(w.iter().any(|x| x == s), "missing {s:?} in {w:#?}");
    has("unknown key ServerConfig.maxLinkNumber (did you mean \"maxLinkNum\"?)");
    has("unknown key ServerConfig.IpAddress (did you mean \"ipAddress\"?)");
    has("unknown key ServerConfig.completelyNew; ignored");
    has("unknown key BackendConfig.ModelDeployConfig.maxBatchSize (it belongs in BackendConfig.ScheduleConfig); ignored");
    has("unknown key BackendConfig.ModelDeployConfig.ModelConfig[0].modelname (did you mean \"modelName\"?); passed to the model as an extra parameter");
    assert!(
        !w.iter().any(|x| x.contains("custom_flag")),
        "free-form ModelConfig keys pass silently: {w:#?}"
    );
    let extra = &loaded.config.model().expect("model").extra;
    assert_eq!(extra.get("custom_flag"), Some(&json!(1)));
    // Unknown keys stay warnings: the values they carry are not applied.
    assert_eq!(loaded.config.server_config.max_link_num, 1000);
}

#[test]
fn deprecated_keys_and_other_version_warn() {
    let mut doc = default_doc();
    set(&mut doc, "Version", json!("2.0.0"));
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.enablePrefixCache",
        json!(true),
    );
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.enableSplit",
        json!(false),
    );
    let w = accepted(&doc, &env(&[])).warnings;
    assert!(
        w.iter().any(|x| x.starts_with("Version \"2.0.0\"")),
        "{w:#?}"
    );
    for key in ["enablePrefixCache", "enableSplit"] {
        let prefix = format!("BackendConfig.ScheduleConfig.{key}: deprecated");
        assert!(w.iter().any(|x| x.starts_with(&prefix)), "{key}: {w:#?}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut doc = default_doc();
    set(&mut doc, "ServerConfig.port", json!(80));
    set(&mut doc, "ServerConfig.tokenTimeout", json!("600"));
    set(&mut doc, "ServerConfig.ipAddress", json!("0.0.0.0"));
    remove(&mut doc, "ServerConfig.inferMode");
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.ModelConfig[0].modelName",
        json!("llama/65b"),
    );
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.maxPrefillTokens",
        json!(1024),
    );
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.maxIterTimes",
        json!(9999),
    );
    set(&mut doc, "LogConfig.dynamicLogLevel", json!("verbose"));
    let p = problems(&doc, &env(&[]));
    let mut paths: Vec<&str> = p.iter().map(|x| x.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "BackendConfig.ModelDeployConfig.ModelConfig[0].modelName",
            "BackendConfig.ScheduleConfig.maxIterTimes",
            "BackendConfig.ScheduleConfig.maxPrefillTokens",
            "LogConfig.dynamicLogLevel",
            "ServerConfig.inferMode",
            "ServerConfig.ipAddress",
            "ServerConfig.port",
            "ServerConfig.tokenTimeout",
        ],
        "{p:#?}"
    );
    let text = ConfigError::Invalid {
        path: "c.json".into(),
        problems: p,
    }
    .to_string();
    assert!(
        text.starts_with("config file c.json has 8 problem(s):"),
        "{text}"
    );
    assert!(
        text.contains("ServerConfig.port = 80: an integer in [1024, 65535]"),
        "{text}"
    );
}

#[test]
fn a_bad_key_is_reported_once_not_again_by_rules_reading_it() {
    let mut doc = default_doc();
    // maxBatchSize is unusable: the rules comparing maxN, maxPreemptCount and
    // maxPrefillBatchSize against it must stay quiet rather than compare with a stand-in.
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.maxBatchSize",
        json!("200"),
    );
    set(&mut doc, "BackendConfig.ScheduleConfig.maxN", json!(150));
    let p = problems(&doc, &env(&[]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].path, "BackendConfig.ScheduleConfig.maxBatchSize");
    assert_eq!(p[0].value, "\"200\"");
}

/// The stock file plus every optional section, so that serializing the parsed config shows
/// every key serde knows.
fn full_doc() -> Value {
    let mut doc = default_doc();
    set(
        &mut doc,
        "ServerConfig.HealthCheckConfig",
        json!({"npuUsageThreshold": 10}),
    );
    set(
        &mut doc,
        "BackendConfig.kvPoolConfig",
        json!({"backend": "", "configPath": ""}),
    );
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.LoraModules",
        json!([{"name": "a", "path": "/a", "baseModelName": "llama_65b"}]),
    );
    doc
}

/// Calls `f(path, section, object)` for every section object of `doc` the table describes.
fn sections(
    doc: &Value,
    s: &'static Section,
    path: &str,
    f: &mut dyn FnMut(&str, &Section, &Value),
) {
    f(path, s, doc);
    for field in s.fields {
        let child = if path.is_empty() {
            field.key.to_string()
        } else {
            format!("{path}.{}", field.key)
        };
        match (field.kind, doc.get(field.key)) {
            (Kind::Section(c), Some(v)) if v.is_object() => sections(v, c, &child, f),
            (Kind::SectionList(c), Some(Value::Array(items))) => {
                for (i, item) in items.iter().enumerate() {
                    sections(item, c, &format!("{child}[{i}]"), f);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn key_table_lists_exactly_the_keys_serde_knows() {
    let config: Config = serde_json::from_value(full_doc()).expect("full doc deserializes");
    let serialized = serde_json::to_value(&config).expect("serialize");
    let mut seen = 0;
    sections(&serialized, &ROOT, "", &mut |path, s, obj| {
        let Some(map) = obj.as_object() else {
            panic!("{path} serialized as {obj}")
        };
        let mut serde_keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut table_keys: Vec<&str> = s.fields.iter().map(|f| f.key).collect();
        serde_keys.sort_unstable();
        table_keys.sort_unstable();
        assert_eq!(serde_keys, table_keys, "keys of {path:?}");
        seen += 1;
    });
    // root, Server, Health, Backend, kvPool, Deploy, Lora, Model, Schedule, Log
    assert_eq!(seen, 10);
    // What the daemon writes out, it reads back.
    let back = check(serialized, &env(&[])).expect("serialized config validates");
    assert_eq!(back.config, config);
}

#[test]
fn key_table_required_flags_match_serde() {
    let full = full_doc();
    let mut checked = 0;
    sections(&full, &ROOT, "", &mut |path, s, obj| {
        for f in s.fields {
            if obj.get(f.key).is_none() {
                continue;
            }
            let mut doc = full.clone();
            let key = if path.is_empty() {
                f.key.to_string()
            } else {
                format!("{path}.{}", f.key)
            };
            remove(&mut doc, &key);
            let serde_ok = serde_json::from_value::<Config>(doc).is_ok();
            assert_eq!(
                serde_ok, !f.required,
                "{key}: required in table = {}",
                f.required
            );
            checked += 1;
        }
    });
    assert!(checked > 100, "checked {checked} keys");
}

#[test]
fn null_on_an_optional_key_means_absent_and_on_a_required_key_is_a_problem() {
    let mut doc = default_doc();
    set(&mut doc, "ServerConfig.managementPort", Value::Null);
    let loaded = accepted(&doc, &env(&[]));
    assert_eq!(loaded.config.server_config.management_port(), 1025);
    set(&mut doc, "ServerConfig.port", Value::Null);
    let p = problems(&doc, &env(&[]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(
        (p[0].path.as_str(), p[0].value.as_str()),
        ("ServerConfig.port", "null")
    );
}

#[test]
fn keys_of_newer_mindie_files_are_known() {
    let mut doc = default_doc();
    for (path, v) in [
        ("ServerConfig.metricsTlsCaFile", json!(["metrics_ca.pem"])),
        (
            "ServerConfig.metricsTlsCert",
            json!("security/certs/metrics/server.pem"),
        ),
        (
            "ServerConfig.metricsTlsPk",
            json!("security/keys/metrics/server.key.pem"),
        ),
        (
            "ServerConfig.metricsTlsCrlPath",
            json!("security/metrics/certs/"),
        ),
        ("ServerConfig.metricsTlsCrlFiles", json!(["server_crl.pem"])),
        ("ServerConfig.layerwiseDisaggregated", json!(false)),
        ("ServerConfig.layerwiseDisaggregatedRoleType", json!("")),
        (
            "ServerConfig.layerwiseDisaggregatedMasterIpAddress",
            json!("127.0.0.3"),
        ),
        (
            "ServerConfig.layerwiseDisaggregatedSlaveIpAddress",
            json!(["127.0.0.4"]),
        ),
        ("ServerConfig.layerwiseDisaggregatedDataPort", json!(10024)),
        (
            "ServerConfig.layerwiseDisaggregatedCrtlPort",
            json!([10001, 10002]),
        ),
        (
            "ServerConfig.HealthCheckConfig",
            json!({"npuUsageThreshold": 10}),
        ),
        (
            "BackendConfig.kvPoolConfig",
            json!({"backend": "", "configPath": ""}),
        ),
        (
            "BackendConfig.ModelDeployConfig.ModelConfig[0].models",
            json!({"layerwiseDisaggregatedMasterDeviceNum": 2}),
        ),
        (
            "BackendConfig.ModelDeployConfig.ModelConfig[0].plugin_params",
            json!("{\"plugin_type\":\"prefix_cache\"}"),
        ),
        ("BackendConfig.ScheduleConfig.maxBeamWidth", json!(16)),
        (
            "BackendConfig.ScheduleConfig.enablChunkedPrefill",
            json!(false),
        ),
        ("EnableDynamicAdjustTimeoutConfig", json!(false)),
    ] {
        set(&mut doc, path, v);
    }
    let loaded = accepted(&doc, &env(&[]));
    assert!(
        loaded.warnings.iter().all(|w| w.contains("KMC")),
        "{:#?}",
        loaded.warnings
    );
    let s = &loaded.config.server_config;
    assert_eq!(
        s.layerwise_disaggregated_crtl_port,
        Some(vec![10001, 10002])
    );
    assert_eq!(s.npu_usage_threshold(), 10);
    let m = loaded.config.model().expect("model");
    assert_eq!(
        m.plugin_params,
        Some(json!("{\"plugin_type\":\"prefix_cache\"}"))
    );
}
