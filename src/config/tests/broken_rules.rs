//! Broken variants of the stock file caught by the cross-field rules: addresses, listener and
//! link conflicts, incomplete TLS sets, models, devices, scheduler limits. Each must be refused
//! with one problem at the exact JSON path; near-miss valid variants must load.

use super::support::{accepted, at, default_doc, env, mutate, problems, refused, set, v};
use serde_json::json;

#[test]
fn addresses() {
    refused(
        "all-zero",
        &[("ServerConfig.ipAddress", v(json!("0.0.0.0")))],
        "ServerConfig.ipAddress",
        "allowAllZeroIpListening",
    );
    refused(
        "v6 all-zero management",
        &[("ServerConfig.managementIpAddress", v(json!("::")))],
        "ServerConfig.managementIpAddress",
        "allowAllZeroIpListening",
    );
    refused(
        "host name",
        &[("ServerConfig.ipAddress", v(json!("localhost")))],
        "ServerConfig.ipAddress",
        "an IPv4 or IPv6 address",
    );
    accepted(
        &mutate(&[
            ("ServerConfig.ipAddress", v(json!("0.0.0.0"))),
            ("ServerConfig.allowAllZeroIpListening", v(json!(true))),
        ]),
        &env(&[]),
    );
    accepted(
        &mutate(&[("ServerConfig.ipAddress", v(json!("::1")))]),
        &env(&[]),
    );
}

#[test]
fn listener_conflicts() {
    refused(
        "metrics on the management port",
        &[("ServerConfig.metricsPort", v(json!(1026)))],
        "ServerConfig.metricsPort",
        "managementPort (1026)",
    );
    refused(
        "metrics on the business port and address",
        &[
            ("ServerConfig.managementIpAddress", v(json!("127.0.0.1"))),
            ("ServerConfig.metricsPort", v(json!(1025))),
        ],
        "ServerConfig.metricsPort",
        "port (1025)",
    );
    refused(
        "wildcard management overlapping business",
        &[
            ("ServerConfig.managementIpAddress", v(json!("0.0.0.0"))),
            ("ServerConfig.allowAllZeroIpListening", v(json!(true))),
            ("ServerConfig.managementPort", v(json!(1025))),
        ],
        "ServerConfig.managementPort",
        "overlaps",
    );
    // The same port on different addresses is fine.
    accepted(
        &mutate(&[("ServerConfig.managementPort", v(json!(1025)))]),
        &env(&[]),
    );
    // Business and management on one ip:port share a server; all three likewise.
    let shared = [
        ("ServerConfig.managementIpAddress", v(json!("127.0.0.1"))),
        ("ServerConfig.managementPort", v(json!(1025))),
    ];
    accepted(&mutate(&shared), &env(&[]));
    let mut all = shared.to_vec();
    all.push(("ServerConfig.metricsPort", v(json!(1025))));
    accepted(&mutate(&all), &env(&[]));
}

#[test]
fn link_ports() {
    refused(
        "interCommPort on the management port in dmi",
        &[
            ("ServerConfig.inferMode", v(json!("dmi"))),
            ("ServerConfig.interCommPort", v(json!(1026))),
        ],
        "ServerConfig.interCommPort",
        "managementPort (1026)",
    );
    // Not used outside dmi, so not checked.
    accepted(
        &mutate(&[("ServerConfig.interCommPort", v(json!(1026)))]),
        &env(&[]),
    );
    let multi = [
        ("BackendConfig.multiNodesInferEnabled", v(json!(true))),
        ("BackendConfig.multiNodesInferPort", v(json!(1025))),
    ];
    let p = problems(&mutate(&multi), &env(&[("RANK_TABLE_FILE", "/r.json")]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].path, "BackendConfig.multiNodesInferPort");
}

#[test]
fn multi_node_needs_a_ranktable() {
    let doc = mutate(&[("BackendConfig.multiNodesInferEnabled", v(json!(true)))]);
    let p = problems(&doc, &env(&[]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(at(&p, "BackendConfig.multiNodesInferEnabled")
        .allowed
        .contains("RANK_TABLE_FILE"));
    accepted(&doc, &env(&[("RANK_TABLE_FILE", "/etc/ranktable.json")]));
}

#[test]
fn https_needs_complete_cert_sets() {
    refused(
        "no business cert",
        &[("ServerConfig.tlsCert", v(json!("")))],
        "ServerConfig.tlsCert",
        "httpsEnabled",
    );
    refused(
        "no business key",
        &[("ServerConfig.tlsPk", None)],
        "ServerConfig.tlsPk",
        "httpsEnabled",
    );
    refused(
        "no business CA",
        &[("ServerConfig.tlsCaFile", v(json!([])))],
        "ServerConfig.tlsCaFile",
        "at least one",
    );
    refused(
        "no management key",
        &[("ServerConfig.managementTlsPk", v(json!("")))],
        "ServerConfig.managementTlsPk",
        "own ip:port",
    );
    refused(
        "no management CA",
        &[("ServerConfig.managementTlsCaFile", None)],
        "ServerConfig.managementTlsCaFile",
        "own ip:port",
    );
    refused(
        "metrics cert without key",
        &[("ServerConfig.metricsTlsCert", v(json!("m.pem")))],
        "ServerConfig.metricsTlsPk",
        "metricsTlsCert",
    );
    refused(
        "dmi without interComm cert",
        &[
            ("ServerConfig.inferMode", v(json!("dmi"))),
            ("ServerConfig.interCommTlsCert", v(json!(""))),
        ],
        "ServerConfig.interCommTlsCert",
        "dmi",
    );
    // Management sharing business's listener uses the business set.
    accepted(
        &mutate(&[
            ("ServerConfig.managementIpAddress", None),
            ("ServerConfig.managementPort", None),
            ("ServerConfig.managementTlsPk", None),
            ("ServerConfig.managementTlsCert", None),
            ("ServerConfig.managementTlsCaFile", None),
        ]),
        &env(&[]),
    );
    // Without HTTPS nothing is needed.
    accepted(
        &mutate(&[
            ("ServerConfig.httpsEnabled", v(json!(false))),
            ("ServerConfig.tlsCert", v(json!(""))),
        ]),
        &env(&[]),
    );
}

#[test]
fn models() {
    refused(
        "name with space",
        &[("MC0.modelName", v(json!("llama 65b")))],
        "MC0.modelName",
        "A-Z a-z 0-9 . _ -",
    );
    refused(
        "name too long",
        &[("MC0.modelName", v(json!("a".repeat(257))))],
        "MC0.modelName",
        "1 to 256",
    );
    refused(
        "empty name",
        &[("MC0.modelName", v(json!("")))],
        "MC0.modelName",
        "1 to 256",
    );
    accepted(
        &mutate(&[("MC0.modelName", v(json!("Qwen2.5-7B_instruct")))]),
        &env(&[]),
    );
    refused(
        "empty weights",
        &[("MC0.modelWeightPath", v(json!("")))],
        "MC0.modelWeightPath",
        "StandardMock",
    );
    accepted(
        &mutate(&[
            ("MC0.modelWeightPath", v(json!(""))),
            ("MC0.modelInstanceType", v(json!("StandardMock"))),
        ]),
        &env(&[]),
    );
    refused(
        "no models",
        &[("BackendConfig.ModelDeployConfig.ModelConfig", v(json!([])))],
        "BackendConfig.ModelDeployConfig.ModelConfig",
        "at least one",
    );

    let mut doc = default_doc();
    let second = doc["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0].clone();
    let list = doc["BackendConfig"]["ModelDeployConfig"]["ModelConfig"]
        .as_array_mut()
        .expect("list");
    list.push(second);
    let p = problems(&doc, &env(&[]));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(at(&p, "BackendConfig.ModelDeployConfig.ModelConfig")
        .allowed
        .contains("exactly 1"));
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.templateType",
        json!("Mix"),
    );
    let w = accepted(&doc, &env(&[])).warnings;
    assert!(
        w.iter()
            .any(|x| x.contains("only the first (\"llama_65b\") is served")),
        "{w:#?}"
    );
}

#[test]
fn devices() {
    refused(
        "no device lists",
        &[("BackendConfig.npuDeviceIds", v(json!([])))],
        "BackendConfig.npuDeviceIds",
        "at least one",
    );
    refused(
        "fewer devices than worldSize",
        &[("BackendConfig.npuDeviceIds", v(json!([[0, 1]])))],
        "BackendConfig.npuDeviceIds[0]",
        "worldSize (4)",
    );
    refused(
        "repeated device",
        &[("BackendConfig.npuDeviceIds", v(json!([[0, 1, 1, 2]])))],
        "BackendConfig.npuDeviceIds[0]",
        "distinct",
    );
    refused(
        "lists per instance",
        &[("BackendConfig.modelInstanceNumber", v(json!(2)))],
        "BackendConfig.npuDeviceIds",
        "modelInstanceNumber (2)",
    );
    // The CPU backend does not use NPU ids.
    accepted(
        &mutate(&[
            ("MC0.backendType", v(json!("cpu"))),
            ("BackendConfig.npuDeviceIds", v(json!([[0]]))),
        ]),
        &env(&[]),
    );
}

#[test]
fn schedule_cross_field_rules() {
    let p = problems(
        &mutate(&[("SC.maxPrefillTokens", v(json!(1024)))]),
        &env(&[]),
    );
    let mpt = at(&p, "BackendConfig.ScheduleConfig.maxPrefillTokens");
    assert_eq!(
        (mpt.value.as_str(), mpt.allowed.as_str()),
        ("1024", ">= maxInputTokenLen (2048)")
    );
    refused(
        "maxPrefillTokens under the maxSeqLen cap",
        &[
            ("BackendConfig.ModelDeployConfig.maxSeqLen", v(json!(1024))),
            ("SC.maxPrefillTokens", v(json!(1000))),
        ],
        "SC.maxPrefillTokens",
        "maxSeqLen - 1 = 1023",
    );
    accepted(
        &mutate(&[
            ("BackendConfig.ModelDeployConfig.maxSeqLen", v(json!(1024))),
            ("SC.maxPrefillTokens", v(json!(1023))),
        ]),
        &env(&[]),
    );
    refused(
        "maxIterTimes",
        &[("SC.maxIterTimes", v(json!(4096)))],
        "SC.maxIterTimes",
        "[1, maxSeqLen (2560)]",
    );
    refused(
        "maxPrefillBatchSize",
        &[("SC.maxPrefillBatchSize", v(json!(201)))],
        "SC.maxPrefillBatchSize",
        "maxBatchSize (200)",
    );
    refused(
        "maxPreemptCount > maxBatchSize",
        &[("SC.maxPreemptCount", v(json!(201)))],
        "SC.maxPreemptCount",
        "[0, maxBatchSize (200)]",
    );
    refused(
        "preemption without host memory",
        &[
            ("SC.maxPreemptCount", v(json!(10))),
            ("MC0.cpuMemSize", v(json!(0))),
        ],
        "SC.maxPreemptCount",
        "cpuMemSize is 0",
    );
    accepted(&mutate(&[("SC.maxPreemptCount", v(json!(10)))]), &env(&[]));
    refused(
        "maxN",
        &[("SC.maxN", v(json!(201)))],
        "SC.maxN",
        "[1, maxBatchSize (200)]",
    );
    refused(
        "maxBeamWidth",
        &[("SC.maxBeamWidth", v(json!(300)))],
        "SC.maxBeamWidth",
        "maxBatchSize (200)",
    );
    refused(
        "long partial prefills",
        &[
            ("SC.maxNumPartialPrefills", v(json!(2))),
            ("SC.maxLongPartialPrefills", v(json!(3))),
        ],
        "SC.maxLongPartialPrefills",
        "maxNumPartialPrefills (2)",
    );
}

#[test]
fn split_fuse_chunk_keys() {
    refused(
        "splitChunkTokens above MindIE's range",
        &[("SC.splitChunkTokens", v(json!(8193)))],
        "SC.splitChunkTokens",
        "[1, 8192]",
    );
    refused(
        "prefillChunkSize zero",
        &[("SC.prefillChunkSize", v(json!(0)))],
        "SC.prefillChunkSize",
        "[1, ",
    );
    let mut doc = default_doc();
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.splitChunkTokens",
        json!(256),
    );
    let w = accepted(&doc, &env(&[])).warnings;
    assert!(
        w.iter()
            .any(|x| x.contains("splitChunkTokens: used only with")),
        "Standard ignores it, with a warning: {w:#?}"
    );
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.templateType",
        json!("Mix"),
    );
    let loaded = accepted(&doc, &env(&[]));
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|x| x.contains("splitChunkTokens")),
        "{:#?}",
        loaded.warnings
    );
    let sched = crate::daemon::engine::scheduler_limits(&loaded.config, 64, 128);
    assert_eq!(sched.mix_step_tokens, Some(256));
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.prefillChunkSize",
        json!(128),
    );
    let loaded = accepted(&doc, &env(&[]));
    let sched = crate::daemon::engine::scheduler_limits(&loaded.config, 64, 128);
    assert_eq!(sched.mix_step_tokens, Some(128), "prefillChunkSize wins");
}
