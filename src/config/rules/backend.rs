//! `BackendConfig` and `LogConfig` rules: devices, the model list, scheduler limits tied to
//! each other, the log-level expiry stamp, and deprecated or ignored keys.

use super::server::KMC_IGNORED;
use super::{be, mc, md, problem, quoted, sc, Rules};

/// Backends that run on Ascend NPUs and so need `npuDeviceIds` to match the model's layout.
const NPU_BACKENDS: [&str; 4] = ["atb", "npu", "torch", "ms"];

impl Rules<'_> {
    pub(super) fn backend(&mut self) {
        self.models();
        self.devices();
        self.schedule();
        self.log_time();
        let c = self.c;
        let b = &c.backend_config;
        for (key, v) in [
            ("interNodeKmcKsfMaster", &b.inter_node_kmc_ksf_master),
            ("interNodeKmcKsfStandby", &b.inter_node_kmc_ksf_standby),
        ] {
            if v.is_some() {
                self.warn(format!("{}: {KMC_IGNORED}", be(key)));
            }
        }
        let s = &b.schedule_config;
        for (key, v) in [
            ("enablePrefixCache", s.enable_prefix_cache),
            ("enableSplit", s.enable_split),
        ] {
            if v.is_some() {
                self.warn(format!(
                    "{}: deprecated and ignored (MindIE enables prefix caching and split-fuse \
                     through ModelConfig.plugin_params)",
                    sc(key)
                ));
            }
        }
        if s.template_type != "Mix" {
            for (key, v) in [
                ("prefillChunkSize", s.prefill_chunk_size),
                ("splitChunkTokens", s.split_chunk_tokens),
            ] {
                if v.is_some() {
                    self.warn(format!(
                        "{}: used only with ScheduleConfig.templateType \"Mix\"; ignored",
                        sc(key)
                    ));
                }
            }
        }
    }

    /// One model for `templateType` Standard; names, weights and memory per model.
    fn models(&mut self) {
        let c = self.c;
        let list = &c.backend_config.model_deploy_config.model_config;
        let template = &c.backend_config.schedule_config.template_type;
        let path = md("ModelConfig");
        self.rule(&[path.as_str()], !list.is_empty(), || {
            problem(path.clone(), "[]", "at least one model")
        });
        let operands = [path.clone(), sc("templateType")];
        self.rule(&operands, template != "Standard" || list.len() <= 1, || {
            problem(
                path.clone(),
                format!("{} entries", list.len()),
                "exactly 1 entry when ScheduleConfig.templateType is \"Standard\"",
            )
        });
        if list.len() > 1 && template != "Standard" {
            let name = list.first().map(|m| m.model_name.as_str()).unwrap_or("");
            self.warn(format!(
                "{path} has {} entries; only the first ({}) is served",
                list.len(),
                quoted(name)
            ));
        }
        for (i, m) in list.iter().enumerate() {
            let p = mc(i, "modelName");
            self.rule(&[p.as_str()], valid_model_name(&m.model_name), || {
                problem(
                    p.clone(),
                    quoted(&m.model_name),
                    "1 to 256 characters from A-Z a-z 0-9 . _ -",
                )
            });
            let p = mc(i, "modelWeightPath");
            let mock = m.model_instance_type == "StandardMock";
            let ops = [p.clone(), mc(i, "modelInstanceType")];
            self.rule(&ops, mock || !m.model_weight_path.is_empty(), || {
                problem(
                    p.clone(),
                    "\"\"",
                    "the model's folder (empty only for StandardMock)",
                )
            });
            let p = mc(i, "npuMemSize");
            self.rule(&[p.as_str()], m.npu_mem_size != 0, || {
                problem(p.clone(), 0, "-1 (automatic) or a size in GB >= 1")
            });
        }
    }

    /// Device lists are non-empty; on NPU backends (single node) there is one list per model
    /// instance, each with `worldSize` distinct ids.
    fn devices(&mut self) {
        let c = self.c;
        let b = &c.backend_config;
        let path = be("npuDeviceIds");
        self.rule(&[path.as_str()], !b.npu_device_ids.is_empty(), || {
            problem(path.clone(), "[]", "at least one list of device ids")
        });
        for (i, ids) in b.npu_device_ids.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.rule(&[p.as_str()], !ids.is_empty(), || {
                problem(p.clone(), "[]", "at least one device id")
            });
        }
        let Some(m) = c.model() else { return };
        let npu = NPU_BACKENDS.contains(&m.backend_type.as_str())
            && m.model_instance_type == "Standard"
            && !b.multi_nodes_infer_enabled;
        if !npu {
            return;
        }
        let n = b.model_instance_number;
        let ops = [
            path.clone(),
            be("modelInstanceNumber"),
            mc(0, "backendType"),
            mc(0, "modelInstanceType"),
        ];
        self.rule(&ops, b.npu_device_ids.len() == n as usize, || {
            problem(
                path.clone(),
                format!("{} list(s)", b.npu_device_ids.len()),
                format!("one list per model instance: modelInstanceNumber ({n}) lists"),
            )
        });
        let world = m.world_size;
        for (i, ids) in b.npu_device_ids.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let ok = distinct.len() == ids.len() && ids.len() == world as usize;
            let mut ops = ops.to_vec();
            ops.extend([p.clone(), mc(0, "worldSize")]);
            self.rule(&ops, ok, || {
                let value = serde_json::Value::from(ids.clone()).to_string();
                problem(
                    p.clone(),
                    value,
                    format!("worldSize ({world}) distinct device ids"),
                )
            });
        }
    }

    /// Scheduler limits tied to each other.
    fn schedule(&mut self) {
        let c = self.c;
        let s = &c.backend_config.schedule_config;
        let d = &c.backend_config.model_deploy_config;
        let batch = s.max_batch_size;
        let batch_keys = |k: &str| [sc(k), sc("maxBatchSize")];

        let p = sc("maxIterTimes");
        let ops = [p.clone(), md("maxSeqLen")];
        self.rule(&ops, s.max_iter_times <= d.max_seq_len, || {
            let allowed = format!("[1, maxSeqLen ({})]", d.max_seq_len);
            problem(p.clone(), s.max_iter_times, allowed)
        });

        let p = sc("maxPrefillBatchSize");
        self.rule(
            &batch_keys("maxPrefillBatchSize"),
            s.max_prefill_batch_size <= batch,
            || {
                let allowed = format!("[0, maxBatchSize ({batch})] (0 means maxBatchSize)");
                problem(p.clone(), s.max_prefill_batch_size, allowed)
            },
        );

        let p = sc("maxPrefillTokens");
        let input = d.effective_max_input_token_len();
        let ops = [p.clone(), md("maxInputTokenLen"), md("maxSeqLen")];
        self.rule(&ops, s.max_prefill_tokens >= input, || {
            let allowed = if input == d.max_input_token_len {
                format!(">= maxInputTokenLen ({input})")
            } else {
                format!(">= effective maxInputTokenLen (maxSeqLen - 1 = {input})")
            };
            problem(p.clone(), s.max_prefill_tokens, allowed)
        });

        let p = sc("maxPreemptCount");
        self.rule(
            &batch_keys("maxPreemptCount"),
            s.max_preempt_count <= batch,
            || {
                problem(
                    p.clone(),
                    s.max_preempt_count,
                    format!("[0, maxBatchSize ({batch})]"),
                )
            },
        );
        if let Some(m) = c.model() {
            let ops = [p.clone(), mc(0, "cpuMemSize")];
            let ok = s.max_preempt_count == 0 || m.cpu_mem_size > 0;
            self.rule(&ops, ok, || {
                problem(
                    p.clone(),
                    s.max_preempt_count,
                    "0 when ModelConfig[0].cpuMemSize is 0 (preemption swaps KV cache to host memory)",
                )
            });
        }

        let p = sc("maxN");
        self.rule(&batch_keys("maxN"), s.max_n <= batch, || {
            problem(p.clone(), s.max_n, format!("[1, maxBatchSize ({batch})]"))
        });

        if let Some(w) = s.max_beam_width {
            let p = sc("maxBeamWidth");
            self.rule(&batch_keys("maxBeamWidth"), w <= batch, || {
                problem(
                    p.clone(),
                    w,
                    format!("[1, min(8192, maxBatchSize ({batch}))]"),
                )
            });
        }

        if let (Some(long), Some(all)) = (s.max_long_partial_prefills, s.max_num_partial_prefills) {
            let p = sc("maxLongPartialPrefills");
            let ops = [p.clone(), sc("maxNumPartialPrefills")];
            self.rule(&ops, long <= all, || {
                problem(
                    p.clone(),
                    long,
                    format!("[1, maxNumPartialPrefills ({all})]"),
                )
            });
        }
    }

    /// `dynamicLogLevelValidTime` is empty or a `YYYY-MM-DD HH:MM:SS` stamp.
    fn log_time(&mut self) {
        let c = self.c;
        let t = &c.log_config.dynamic_log_level_valid_time;
        let p = "LogConfig.dynamicLogLevelValidTime".to_string();
        self.rule(&[p.as_str()], t.is_empty() || valid_timestamp(t), || {
            problem(
                p.clone(),
                quoted(t),
                "\"\" or a time \"YYYY-MM-DD HH:MM:SS\"",
            )
        });
    }
}

/// 1 to 256 characters from `[A-Za-z0-9._-]`.
pub(crate) fn valid_model_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A real calendar time written `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn valid_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() != 19 {
        return false;
    }
    let seps = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return false;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let digits = &b[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits
            .iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d) && h < 24 && mi < 60 && s < 60
}
