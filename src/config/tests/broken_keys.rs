//! Broken variants of the stock file caught by the key table: wrong types, missing required
//! keys, values outside a key's own range. Each must be refused with one problem at the exact
//! JSON path.

use super::support::{at, env, mutate, problems, refused, v, SC};
use serde_json::json;

#[test]
fn wrong_types() {
    refused(
        "port as string",
        &[("ServerConfig.port", v(json!("1025")))],
        "ServerConfig.port",
        "an integer in [1024, 65535]",
    );
    refused(
        "bool as string",
        &[("ServerConfig.httpsEnabled", v(json!("true")))],
        "ServerConfig.httpsEnabled",
        "true or false",
    );
    refused(
        "float count",
        &[("SC.maxBatchSize", v(json!(200.5)))],
        "SC.maxBatchSize",
        "an integer",
    );
    refused(
        "CA list element",
        &[("ServerConfig.tlsCaFile", v(json!(["ca.pem", 7])))],
        "ServerConfig.tlsCaFile[1]",
        "a string",
    );
    refused(
        "device id as string",
        &[("BackendConfig.npuDeviceIds", v(json!([[0, 1, "2", 3]])))],
        "BackendConfig.npuDeviceIds[0][2]",
        "an integer",
    );
    refused(
        "section as array",
        &[("LogConfig", v(json!([])))],
        "LogConfig",
        "an object",
    );
    refused(
        "truncation 2",
        &[("BackendConfig.ModelDeployConfig.truncation", v(json!(2)))],
        "BackendConfig.ModelDeployConfig.truncation",
        "-1, 0, 1",
    );
    refused(
        "model entry not object",
        &[(
            "BackendConfig.ModelDeployConfig.ModelConfig",
            v(json!(["llama"])),
        )],
        "BackendConfig.ModelDeployConfig.ModelConfig[0]",
        "an object",
    );
}

#[test]
fn missing_required_keys() {
    refused(
        "no ipAddress",
        &[("ServerConfig.ipAddress", None)],
        "ServerConfig.ipAddress",
        "required",
    );
    refused(
        "no tokenTimeout",
        &[("ServerConfig.tokenTimeout", None)],
        "ServerConfig.tokenTimeout",
        "required",
    );
    refused(
        "no modelWeightPath",
        &[("MC0.modelWeightPath", None)],
        "MC0.modelWeightPath",
        "required",
    );
    refused(
        "no ScheduleConfig",
        &[("BackendConfig.ScheduleConfig", None)],
        SC,
        "required: an object",
    );
    refused(
        "no maxSeqLen",
        &[("BackendConfig.ModelDeployConfig.maxSeqLen", None)],
        "BackendConfig.ModelDeployConfig.maxSeqLen",
        "required",
    );
}

#[test]
fn values_out_of_range() {
    let p = problems(&mutate(&[("ServerConfig.port", v(json!(80)))]), &env(&[]));
    let port = at(&p, "ServerConfig.port");
    assert_eq!(
        (port.value.as_str(), port.allowed.as_str()),
        ("80", "an integer in [1024, 65535]")
    );
    refused(
        "port 70000",
        &[("ServerConfig.port", v(json!(70000)))],
        "ServerConfig.port",
        "[1024, 65535]",
    );
    refused(
        "maxLinkNum 0",
        &[("ServerConfig.maxLinkNum", v(json!(0)))],
        "ServerConfig.maxLinkNum",
        "[1, 4096]",
    );
    refused(
        "tokenTimeout",
        &[("ServerConfig.tokenTimeout", v(json!(3601)))],
        "ServerConfig.tokenTimeout",
        "[1, 3600]",
    );
    refused(
        "e2eTimeout",
        &[("ServerConfig.e2eTimeout", v(json!(0)))],
        "ServerConfig.e2eTimeout",
        "[1, 65535]",
    );
    refused(
        "maxRequestLength",
        &[("ServerConfig.maxRequestLength", v(json!(101)))],
        "ServerConfig.maxRequestLength",
        "[1, 100]",
    );
    refused(
        "npuUsageThreshold",
        &[(
            "ServerConfig.HealthCheckConfig",
            v(json!({"npuUsageThreshold": 101})),
        )],
        "ServerConfig.HealthCheckConfig.npuUsageThreshold",
        "[0, 100]",
    );
    refused(
        "inferMode",
        &[("ServerConfig.inferMode", v(json!("pd")))],
        "ServerConfig.inferMode",
        "\"standard\", \"dmi\"",
    );
    refused(
        "openAiSupport empty",
        &[("ServerConfig.openAiSupport", v(json!("")))],
        "ServerConfig.openAiSupport",
        "non-empty",
    );
    refused(
        "backendName",
        &[("BackendConfig.backendName", v(json!("my_engine")))],
        "BackendConfig.backendName",
        "mindieservice_llm_engine",
    );
    refused(
        "modelInstanceNumber",
        &[("BackendConfig.modelInstanceNumber", v(json!(11)))],
        "BackendConfig.modelInstanceNumber",
        "[1, 10]",
    );
    refused(
        "tokenizerProcessNumber",
        &[("BackendConfig.tokenizerProcessNumber", v(json!(33)))],
        "BackendConfig.tokenizerProcessNumber",
        "[1, 32]",
    );
    refused(
        "backendType",
        &[("MC0.backendType", v(json!("gpu")))],
        "MC0.backendType",
        "\"cpu\"",
    );
    refused(
        "npuMemSize -2",
        &[("MC0.npuMemSize", v(json!(-2)))],
        "MC0.npuMemSize",
        "[-1,",
    );
    refused(
        "npuMemSize 0",
        &[("MC0.npuMemSize", v(json!(0)))],
        "MC0.npuMemSize",
        "-1 (automatic)",
    );
    refused(
        "worldSize 0",
        &[("MC0.worldSize", v(json!(0)))],
        "MC0.worldSize",
        "[1,",
    );
    refused(
        "cacheBlockSize",
        &[("SC.cacheBlockSize", v(json!(256)))],
        "SC.cacheBlockSize",
        "[1, 128]",
    );
    refused(
        "maxQueueDelay",
        &[("SC.maxQueueDelayMicroseconds", v(json!(100)))],
        "SC.maxQueueDelayMicroseconds",
        "[500, 1000000]",
    );
    refused(
        "policy type",
        &[("SC.prefillPolicyType", v(json!(4)))],
        "SC.prefillPolicyType",
        "[0, 3]",
    );
    refused(
        "templateType",
        &[("SC.templateType", v(json!("Fast")))],
        "SC.templateType",
        "\"Mix\"",
    );
    refused(
        "templateName",
        &[("SC.templateName", v(json!("Other")))],
        "SC.templateName",
        "Standard_LLM",
    );
    refused(
        "maxFirstTokenWaitTime",
        &[("SC.maxFirstTokenWaitTime", v(json!(3_600_001)))],
        "SC.maxFirstTokenWaitTime",
        "[0, 3600000]",
    );
    refused(
        "stageSelectPolicy",
        &[("SC.stageSelectPolicy", v(json!(3)))],
        "SC.stageSelectPolicy",
        "[0, 2]",
    );
    refused(
        "log level",
        &[("LogConfig.dynamicLogLevel", v(json!("verbose")))],
        "LogConfig.dynamicLogLevel",
        "\"critical\"",
    );
    refused(
        "log hours",
        &[("LogConfig.dynamicLogLevelValidHours", v(json!(169)))],
        "LogConfig.dynamicLogLevelValidHours",
        "[1, 168]",
    );
    refused(
        "log time",
        &[(
            "LogConfig.dynamicLogLevelValidTime",
            v(json!("2024-02-30 10:00:00")),
        )],
        "LogConfig.dynamicLogLevelValidTime",
        "YYYY-MM-DD HH:MM:SS",
    );
    refused(
        "log time format",
        &[(
            "LogConfig.dynamicLogLevelValidTime",
            v(json!("2024/01/01 10:00")),
        )],
        "LogConfig.dynamicLogLevelValidTime",
        "YYYY-MM-DD",
    );
}
