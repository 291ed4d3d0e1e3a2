//! The scheduler's own view of MindIE's `ScheduleConfig` (plus the few `ModelDeployConfig` and
//! backend facts it needs): a plain struct the engine fills from `config.json`, validated
//! once when the [`super::Scheduler`] is built.
//!
//! Knob by knob (MindIE name → field):
//! - `templateType` → [`SchedulerLimits::template`] (`Standard`: prefill and decode steps apart;
//!   `Mix`: SplitFuse, decodes and prompt chunks share a step).
//! - `cacheBlockSize` → `block_size`; the backend's block count → `num_blocks`.
//! - `maxSeqLen` → `max_seq_len` (prompt + output tokens).
//! - `maxBatchSize`, `maxPrefillBatchSize` (0 → `maxBatchSize`), `maxPrefillTokens`.
//! - `prefillTimeMsPerReq`, `decodeTimeMsPerReq`, `supportSelectBatch`.
//! - `prefillPolicyType`, `decodePolicyType` (see [`PolicyType`]).
//! - `maxIterTimes`, `maxPreemptCount`.
//! - `maxQueueDelayMicroseconds` → `max_queue_delay`, `maxFirstTokenWaitTime` (ms) →
//!   `max_first_token_wait` (zero turns the forcing off).
//! - `maxN` is not a scheduler knob: each of a request's `n` samples is its own sequence (they
//!   share the prompt's blocks through the prefix cache); `n ≤ maxN` is checked upstream.

use std::str::FromStr;
use std::time::Duration;

/// `templateType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Prefill steps and decode steps are separate batches.
    Standard,
    /// SplitFuse / chunked prefill: one step carries every running decode plus prompt chunks
    /// under the `maxPrefillTokens` token budget.
    Mix,
}

impl FromStr for Template {
    type Err = LimitsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Standard" => Ok(Template::Standard),
            "Mix" => Ok(Template::Mix),
            other => Err(LimitsError::Template(other.to_string())),
        }
    }
}

/// `prefillPolicyType` / `decodePolicyType`. MindIE itself accepts only 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    /// 0: first come, first served. Waiting: by arrival, preempted sequences back at the front.
    /// Decode: the newest running sequence is the first preemption victim.
    Fcfs,
    /// 1 (this project's extension): request priority 1 (most urgent) ..= 5 (least). Waiting:
    /// by priority with aging (every `priority_aging` waited raises a request one level, so
    /// nothing starves), then arrival. Decode: the least urgent, then newest, sequence is the
    /// first preemption victim.
    Priority,
}

impl PolicyType {
    pub fn from_code(code: u32) -> Result<Self, LimitsError> {
        match code {
            0 => Ok(PolicyType::Fcfs),
            1 => Ok(PolicyType::Priority),
            other => Err(LimitsError::Policy(other)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("templateType must be \"Standard\" or \"Mix\", got {0:?}")]
    Template(String),
    #[error("policy type {0} is not supported (0 = FCFS, 1 = priority with aging)")]
    Policy(u32),
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall {
        name: &'static str,
        value: usize,
        min: usize,
    },
    #[error("maxPrefillBatchSize ({prefill}) must not exceed maxBatchSize ({batch})")]
    PrefillBatch { prefill: usize, batch: usize },
}

/// Everything the scheduler needs to know, already in its own units.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerLimits {
    pub template: Template,
    /// Tokens per KV block (`cacheBlockSize`).
    pub block_size: usize,
    /// KV blocks the backend holds (ids `0..num_blocks`).
    pub num_blocks: usize,
    /// `maxSeqLen`: prompt plus output tokens of one sequence.
    pub max_seq_len: usize,
    /// `maxBatchSize`: running sequences (holding KV) at most.
    pub max_batch_size: usize,
    /// `maxPrefillBatchSize`: sequences with prompt tokens in one step; 0 means `max_batch_size`.
    pub max_prefill_batch_size: usize,
    /// `maxPrefillTokens`: new tokens in one prefill step (Standard) or in one step (Mix,
    /// unless `mix_step_tokens` is set).
    pub max_prefill_tokens: usize,
    /// Mix only: tokens in one step, decodes included (`prefillChunkSize`, else
    /// `splitChunkTokens`); `None` uses `max_prefill_tokens`. Small steps let prompt chunks
    /// ride along with the decodes instead of stalling them.
    pub mix_step_tokens: Option<usize>,
    pub prefill_time_ms_per_req: u32,
    pub decode_time_ms_per_req: u32,
    pub support_select_batch: bool,
    pub prefill_policy_type: u32,
    pub decode_policy_type: u32,
    /// `maxIterTimes`: output tokens of one sequence at most.
    pub max_iter_times: usize,
    /// `maxPreemptCount`: preemptions by recompute allowed per sequence; 0 disables preemption
    /// (admission then reserves every sequence's worst-case KV growth).
    pub max_preempt_count: u32,
    /// `maxQueueDelayMicroseconds`: how long a non-full prefill batch may wait for company.
    pub max_queue_delay: Duration,
    /// `maxFirstTokenWaitTime`: a sequence without its first token that waited this long forces
    /// a prefill (and may preempt for room). Zero: off.
    pub max_first_token_wait: Duration,
    /// Automatic prefix caching of full blocks.
    pub enable_prefix_cache: bool,
    /// Priority policy only: waiting this long raises a request by one priority level.
    pub priority_aging: Duration,
}

impl Default for SchedulerLimits {
    /// MindIE's shipped defaults (`maxSeqLen` 2560, 128-token blocks); `num_blocks` is the
    /// backend's business and is set to a small placeholder here.
    fn default() -> Self {
        Self {
            template: Template::Standard,
            block_size: 128,
            num_blocks: 1024,
            max_seq_len: 2560,
            max_batch_size: 200,
            max_prefill_batch_size: 50,
            max_prefill_tokens: 8192,
            mix_step_tokens: None,
            prefill_time_ms_per_req: 150,
            decode_time_ms_per_req: 50,
            support_select_batch: false,
            prefill_policy_type: 0,
            decode_policy_type: 0,
            max_iter_times: 512,
            max_preempt_count: 0,
            max_queue_delay: Duration::from_micros(5000),
            max_first_token_wait: Duration::from_millis(2500),
            enable_prefix_cache: true,
            priority_aging: Duration::from_secs(2),
        }
    }
}

/// A validated configuration with the derived values resolved.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub raw: SchedulerLimits,
    pub prefill_policy: PolicyType,
    pub decode_policy: PolicyType,
    /// `max_prefill_batch_size` with 0 resolved to `max_batch_size`.
    pub max_prefill_seqs: usize,
    /// New tokens in one step: `max_prefill_tokens`, or for Mix `mix_step_tokens` if set.
    pub step_tokens: usize,
}

impl SchedulerLimits {
    /// Checks ranges the scheduler relies on (the config module reports MindIE's own ranges).
    pub(crate) fn validate(&self) -> Result<Resolved, LimitsError> {
        let at_least = |name: &'static str, value: usize, min: usize| {
            if value < min {
                Err(LimitsError::TooSmall { name, value, min })
            } else {
                Ok(())
            }
        };
        at_least("cacheBlockSize", self.block_size, 1)?;
        at_least("num_blocks", self.num_blocks, 1)?;
        at_least("maxSeqLen", self.max_seq_len, 2)?;
        at_least("maxBatchSize", self.max_batch_size, 1)?;
        at_least("maxPrefillTokens", self.max_prefill_tokens, 1)?;
        if let Some(n) = self.mix_step_tokens {
            at_least("prefillChunkSize", n, 1)?;
        }
        at_least("maxIterTimes", self.max_iter_times, 1)?;
        if self.max_prefill_batch_size > self.max_batch_size {
            return Err(LimitsError::PrefillBatch {
                prefill: self.max_prefill_batch_size,
                batch: self.max_batch_size,
            });
        }
        let max_prefill_seqs = if self.max_prefill_batch_size == 0 {
            self.max_batch_size
        } else {
            self.max_prefill_batch_size
        };
        Ok(Resolved {
            raw: self.clone(),
            prefill_policy: PolicyType::from_code(self.prefill_policy_type)?,
            decode_policy: PolicyType::from_code(self.decode_policy_type)?,
            max_prefill_seqs,
            step_tokens: match (self.template, self.mix_step_tokens) {
                (Template::Mix, Some(n)) => n,
                _ => self.max_prefill_tokens,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_prefill_batch_means_max_batch() {
        let cfg = SchedulerLimits {
            max_prefill_batch_size: 0,
            ..SchedulerLimits::default()
        };
        let r = cfg.validate().unwrap();
        assert_eq!(r.max_prefill_seqs, 200);
        assert_eq!(r.prefill_policy, PolicyType::Fcfs);
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = SchedulerLimits {
            prefill_policy_type: 3,
            ..SchedulerLimits::default()
        };
        assert_eq!(bad.validate().unwrap_err(), LimitsError::Policy(3));
        let bad = SchedulerLimits {
            block_size: 0,
            ..SchedulerLimits::default()
        };
        assert!(matches!(bad.validate(), Err(LimitsError::TooSmall { .. })));
        let bad = SchedulerLimits {
            max_prefill_batch_size: 201,
            ..SchedulerLimits::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(LimitsError::PrefillBatch { .. })
        ));
        assert!("Mixed".parse::<Template>().is_err());
        assert_eq!("Mix".parse::<Template>().unwrap(), Template::Mix);
    }
}
