//! The one list of keys `config.json` may contain: for every section, each key's JSON type,
//! whether it is required, and its simple range or allowed values. [`walk`](super::walk) checks
//! documents against it; a unit test checks it agrees with the serde structs in
//! [`schema`](super::schema) (same keys, same required set). Rules that relate two keys live in
//! [`rules`](super::rules).

use serde_json::{Map, Value};

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Bool,
    /// Any string.
    Str,
    /// A string with at least one character.
    NonEmptyStr,
    /// One of these strings, exactly.
    Enum(&'static [&'static str]),
    /// One of these strings, ignoring ASCII case.
    EnumCi(&'static [&'static str]),
    /// An integer in `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    /// One of these integers.
    IntSet(&'static [i64]),
    /// An array of strings.
    StrList,
    /// An array of integers, each in `[min, max]`.
    IntList {
        min: i64,
        max: i64,
    },
    /// An array of arrays of integers, each in `[min, max]` (`npuDeviceIds`).
    IntMatrix {
        min: i64,
        max: i64,
    },
    /// `truncation`: a boolean, or one of -1, 0, 1.
    Truncation,
    /// A string or an object (`plugin_params`).
    StrOrObject,
    /// Any object; its content is not checked (`models`).
    AnyObject,
    /// A nested section.
    Section(&'static Section),
    /// An array of nested sections.
    SectionList(&'static Section),
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub key: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// The keys of one JSON object.
#[derive(Debug)]
pub(crate) struct Section {
    pub fields: &'static [Field],
    /// Whether keys not listed are legitimate (MindIE forwards unlisted `ModelConfig` keys to
    /// the model); only near misses of listed keys are then worth a warning.
    pub open: bool,
}

impl Section {
    pub fn field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.key == key)
    }
}

const U32_MAX: i64 = u32::MAX as i64;
const I32_MAX: i64 = i32::MAX as i64;
/// MindIE's limit on token counts (4 Mi).
pub(crate) const MAX_TOKENS: i64 = 4 * 1024 * 1024;

const fn req(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: true,
    }
}

const fn opt(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: false,
    }
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

const U32: Kind = int(0, U32_MAX);
const POSITIVE: Kind = int(1, U32_MAX);
const PORT: Kind = int(1024, 65535);
const ANY_PORT: Kind = int(0, 65535);

/// The whole file.
pub(crate) static ROOT: Section = Section {
    fields: &[
        opt("Version", Kind::Str),
        req("ServerConfig", Kind::Section(&SERVER)),
        req("BackendConfig", Kind::Section(&BACKEND)),
        opt("LogConfig", Kind::Section(&LOG)),
        opt("EnableDynamicAdjustTimeoutConfig", Kind::Bool),
    ],
    open: false,
};

static SERVER: Section = Section {
    fields: &[
        req("ipAddress", Kind::Str),
        opt("managementIpAddress", Kind::Str),
        req("port", PORT),
        opt("managementPort", PORT),
        req("metricsPort", PORT),
        req("allowAllZeroIpListening", Kind::Bool),
        req("maxLinkNum", int(1, 4096)),
        req("httpsEnabled", Kind::Bool),
        opt("fullTextEnabled", Kind::Bool),
        opt("tlsCaPath", Kind::Str),
        opt("tlsCaFile", Kind::StrList),
        opt("tlsCert", Kind::Str),
        opt("tlsPk", Kind::Str),
        opt("tlsPkPwd", Kind::Str),
        opt("tlsCrlPath", Kind::Str),
        opt("tlsCrlFiles", Kind::StrList),
        opt("managementTlsCaFile", Kind::StrList),
        opt("managementTlsCert", Kind::Str),
        opt("managementTlsPk", Kind::Str),
        opt("managementTlsPkPwd", Kind::Str),
        opt("managementTlsCrlPath", Kind::Str),
        opt("managementTlsCrlFiles", Kind::StrList),
        opt("metricsTlsCaFile", Kind::StrList),
        opt("metricsTlsCert", Kind::Str),
        opt("metricsTlsPk", Kind::Str),
        opt("metricsTlsPkPwd", Kind::Str),
        opt("metricsTlsCrlPath", Kind::Str),
        opt("metricsTlsCrlFiles", Kind::StrList),
        opt("kmcKsfMaster", Kind::Str),
        opt("kmcKsfStandby", Kind::Str),
        req("inferMode", Kind::Enum(&["standard", "dmi"])),
        opt("interCommTLSEnabled", Kind::Bool),
        opt("interCommPort", PORT),
        opt("interCommTlsCaPath", Kind::Str),
        opt("interCommTlsCaFiles", Kind::StrList),
        opt("interCommTlsCert", Kind::Str),
        opt("interCommPk", Kind::Str),
        opt("interCommPkPwd", Kind::Str),
        opt("interCommTlsCrlPath", Kind::Str),
        opt("interCommTlsCrlFiles", Kind::StrList),
        opt("openAiSupport", Kind::NonEmptyStr),
        req("tokenTimeout", int(1, 3600)),
        req("e2eTimeout", int(1, 65535)),
        opt("maxRequestLength", int(1, 100)),
        opt("maxJsonDepth", int(1, 1000)),
        opt("distDPServerEnabled", Kind::Bool),
        opt("HealthCheckConfig", Kind::Section(&HEALTH)),
        opt("npuUsageThreshold", int(0, 100)),
        opt("layerwiseDisaggregated", Kind::Bool),
        opt("layerwiseDisaggregatedRoleType", Kind::Str),
        opt("layerwiseDisaggregatedMasterIpAddress", Kind::Str),
        opt("layerwiseDisaggregatedSlaveIpAddress", Kind::StrList),
        opt("layerwiseDisaggregatedDataPort", ANY_PORT),
        opt(
            "layerwiseDisaggregatedCrtlPort",
            Kind::IntList { min: 0, max: 65535 },
        ),
    ],
    open: false,
};

static HEALTH: Section = Section {
    fields: &[opt("npuUsageThreshold", int(0, 100))],
    open: false,
};

static BACKEND: Section = Section {
    fields: &[
        req("backendName", Kind::Enum(&["mindieservice_llm_engine"])),
        opt("modelInstanceNumber", int(1, 10)),
        opt(
            "npuDeviceIds",
            Kind::IntMatrix {
                min: 0,
                max: U32_MAX,
            },
        ),
        opt("tokenizerProcessNumber", int(1, 32)),
        opt("multiNodesInferEnabled", Kind::Bool),
        opt("multiNodesInferPort", PORT),
        opt("interNodeTLSEnabled", Kind::Bool),
        opt("interNodeTlsCaPath", Kind::Str),
        opt("interNodeTlsCaFiles", Kind::StrList),
        opt("interNodeTlsCert", Kind::Str),
        opt("interNodeTlsPk", Kind::Str),
        opt("interNodeTlsPkPwd", Kind::Str),
        opt("interNodeTlsCrlPath", Kind::Str),
        opt("interNodeTlsCrlFiles", Kind::StrList),
        opt("interNodeKmcKsfMaster", Kind::Str),
        opt("interNodeKmcKsfStandby", Kind::Str),
        opt("kvPoolConfig", Kind::Section(&KV_POOL)),
        opt("layerwiseDisaggregated", Kind::AnyObject),
        req("ModelDeployConfig", Kind::Section(&DEPLOY)),
        req("ScheduleConfig", Kind::Section(&SCHEDULE)),
    ],
    open: false,
};

static KV_POOL: Section = Section {
    fields: &[opt("backend", Kind::Str), opt("configPath", Kind::Str)],
    open: false,
};

static DEPLOY: Section = Section {
    fields: &[
        req("maxSeqLen", int(1, MAX_TOKENS)),
        req("maxInputTokenLen", int(1, MAX_TOKENS)),
        opt("truncation", Kind::Truncation),
        opt("maxLoras", U32),
        opt("maxLoraRank", U32),
        opt("LoraModules", Kind::SectionList(&LORA)),
        opt("speculationGamma", U32),
        req("ModelConfig", Kind::SectionList(&MODEL)),
    ],
    open: false,
};

static LORA: Section = Section {
    fields: &[
        req("name", Kind::Str),
        req("path", Kind::Str),
        opt("baseModelName", Kind::Str),
    ],
    open: false,
};

static MODEL: Section = Section {
    fields: &[
        opt(
            "modelInstanceType",
            Kind::Enum(&["Standard", "StandardMock"]),
        ),
        req("modelName", Kind::Str),
        req("modelWeightPath", Kind::Str),
        req("worldSize", POSITIVE),
        req("cpuMemSize", U32),
        req("npuMemSize", int(-1, I32_MAX)),
        req(
            "backendType",
            Kind::Enum(&["atb", "npu", "torch", "ms", "cpu"]),
        ),
        req("trustRemoteCode", Kind::Bool),
        opt("plugin_params", Kind::StrOrObject),
        opt("async_scheduler_wait_time", U32),
        opt("kv_trans_timeout", U32),
        opt("kv_link_timeout", U32),
        opt("tp", POSITIVE),
        opt("dp", POSITIVE),
        opt("cp", POSITIVE),
        opt("sp", POSITIVE),
        opt("moe_tp", POSITIVE),
        opt("moe_ep", POSITIVE),
        opt("pp", POSITIVE),
        opt("models", Kind::AnyObject),
    ],
    open: true,
};

static SCHEDULE: Section = Section {
    fields: &[
        req("templateType", Kind::Enum(&["Standard", "Mix"])),
        req("templateName", Kind::Enum(&["Standard_LLM"])),
        req("cacheBlockSize", int(1, 128)),
        req("maxPrefillBatchSize", U32),
        req("maxPrefillTokens", int(1, MAX_TOKENS)),
        req("prefillTimeMsPerReq", int(0, 1000)),
        // MindIE: 0 FCFS, 1 state, 2 priority, 3 MLFQ.
        req("prefillPolicyType", int(0, 3)),
        req("decodeTimeMsPerReq", int(0, 1000)),
        req("decodePolicyType", int(0, 3)),
        req("maxBatchSize", int(1, 819_200)),
        req("maxIterTimes", POSITIVE),
        req("maxPreemptCount", U32),
        req("supportSelectBatch", Kind::Bool),
        req("maxQueueDelayMicroseconds", int(500, 1_000_000)),
        opt("maxFirstTokenWaitTime", int(0, 3_600_000)),
        opt("maxN", POSITIVE),
        opt("policyType", Kind::IntSet(&[0, 4, 5, 6, 7])),
        opt("prefillChunkSize", POSITIVE),
        opt("maxNumPartialPrefills", int(1, 64)),
        opt("maxLongPartialPrefills", POSITIVE),
        opt("longPrefillTokenThreshold", int(1, 8192)),
        opt("stageSelectPolicy", int(0, 2)),
        opt("dynamicBatchSizeEnable", Kind::Bool),
        opt("bufferResponseEnabled", Kind::Bool),
        opt("prefillExpectedTime", int(1, 10_000)),
        opt("decodeExpectedTime", int(1, 10_000)),
        opt("distributedEnable", Kind::Bool),
        opt("enablePrefixCache", Kind::Bool),
        opt("enableSplit", Kind::Bool),
        opt("enablChunkedPrefill", Kind::Bool),
        opt("splitType", Kind::Bool),
        opt("splitStartType", Kind::Bool),
        opt("splitChunkTokens", int(1, 8192)),
        opt("splitStartBatchSize", U32),
        opt("maxBeamWidth", int(1, 8192)),
        opt("layerwiseDisaggregated", Kind::AnyObject),
    ],
    open: false,
};

static LOG: Section = Section {
    fields: &[
        opt(
            "dynamicLogLevel",
            Kind::EnumCi(&["", "debug", "info", "warn", "warning", "error", "critical"]),
        ),
        opt("dynamicLogLevelValidHours", int(1, 168)),
        opt("dynamicLogLevelValidTime", Kind::Str),
    ],
    open: false,
};

impl Kind {
    /// What a value of this kind looks like, for problem messages.
    pub fn describe(&self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Str => "a string".into(),
            Kind::NonEmptyStr => "a non-empty string".into(),
            Kind::Enum(opts) => one_of(opts, ""),
            Kind::EnumCi(opts) => one_of(opts, " (any case)"),
            Kind::Int { min, max } => format!("an integer in [{min}, {max}]"),
            Kind::IntSet(opts) => {
                let list: Vec<String> = opts.iter().map(i64::to_string).collect();
                format!("one of {}", list.join(", "))
            }
            Kind::StrList => "an array of strings".into(),
            Kind::IntList { min, max } => format!("an array of integers in [{min}, {max}]"),
            Kind::IntMatrix { min, max } => {
                format!("an array of arrays of integers in [{min}, {max}]")
            }
            Kind::Truncation => "false/true or one of -1, 0, 1".into(),
            Kind::StrOrObject => "a string or an object".into(),
            Kind::AnyObject | Kind::Section(_) => "an object".into(),
            Kind::SectionList(_) => "an array of objects".into(),
        }
    }

    /// A well-typed stand-in for a bad or missing value, so the rest of the document can still
    /// be deserialized and checked. Rules never look at a stand-in: its path is marked bad.
    pub fn placeholder(&self) -> Value {
        match self {
            Kind::Bool | Kind::Truncation => Value::Bool(false),
            Kind::Str | Kind::NonEmptyStr | Kind::StrOrObject => Value::from("x"),
            Kind::Enum(opts) | Kind::EnumCi(opts) => Value::from(opts.first().copied()),
            Kind::Int { min, .. } => Value::from(*min),
            Kind::IntSet(opts) => Value::from(opts.first().copied().unwrap_or(0)),
            Kind::StrList | Kind::IntList { .. } | Kind::IntMatrix { .. } => {
                Value::Array(Vec::new())
            }
            Kind::AnyObject => Value::Object(Map::new()),
            Kind::Section(s) => s.placeholder(),
            Kind::SectionList(s) => Value::Array(vec![s.placeholder()]),
        }
    }
}

impl Section {
    /// An object holding a stand-in for every required key.
    pub fn placeholder(&self) -> Value {
        let map = self
            .fields
            .iter()
            .filter(|f| f.required)
            .map(|f| (f.key.to_string(), f.kind.placeholder()))
            .collect();
        Value::Object(map)
    }
}

fn one_of(opts: &[&str], suffix: &str) -> String {
    let list: Vec<String> = opts.iter().map(|o| format!("{o:?}")).collect();
    format!("one of {}{suffix}", list.join(", "))
}

/// Every section reachable from the root, with its JSON path (array elements as `[]`), for
/// "this key belongs elsewhere" hints.
pub(crate) fn all_sections() -> Vec<(String, &'static Section)> {
    fn visit(path: String, s: &'static Section, out: &mut Vec<(String, &'static Section)>) {
        for f in s.fields {
            let child = if path.is_empty() {
                f.key.to_string()
            } else {
                format!("{path}.{}", f.key)
            };
            match f.kind {
                Kind::Section(c) => visit(child, c, out),
                Kind::SectionList(c) => visit(format!("{child}[]"), c, out),
                _ => {}
            }
        }
        out.push((path, s));
    }
    let mut out = Vec::new();
    visit(String::new(), &ROOT, &mut out);
    out
}
