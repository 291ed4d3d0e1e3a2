//! The ordering rules, as pure functions: which waiting sequence goes first
//! (`prefillPolicyType`), which running sequence is preempted first (`decodePolicyType`), and
//! MindIE's `supportSelectBatch` choice between a prefill and a decode step.
//!
//! **Select batch**, made precise. State: `acc`, the decode time wasted (ms) by consecutive
//! decode steps chosen while a ready prefill batch waited; starts at 0. When a prefill batch is
//! ready and `n` sequences are decoding (`n ≥ 1`):
//! - `prefill_wait = prefillTimeMsPerReq × n` (what the decodes would wait for a prefill);
//! - if `prefill_wait > acc`: run a decode step, then `acc += decodeTimeMsPerReq ×
//!   (maxBatchSize − n)` (the batch slots that decode step left empty);
//! - else: run the prefill step; `acc = 0` (also whenever a prefill step runs for any reason).
//!
//! So with the defaults (150/50, maxBatchSize 200) and 10 decoding sequences, the first decision
//! defers the prefill (1500 > 0), `acc` becomes 9500, and the next one runs it (1500 ≤ 9500).
//! A `decodeTimeMsPerReq` of 0 defers prefills while anything decodes; the first-token wait
//! (`maxFirstTokenWaitTime`) still forces them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::limits::PolicyType;
use super::sequence::{SeqId, Sequence};

/// Priority after aging: one level more urgent per full `aging` waited (no aging when zero).
pub fn effective_priority(priority: u8, waited: Duration, aging: Duration) -> i64 {
    let levels = if aging.is_zero() {
        0
    } else {
        i64::try_from(waited.as_nanos() / aging.as_nanos()).unwrap_or(i64::MAX)
    };
    i64::from(priority).saturating_sub(levels)
}

/// Waiting sequences in the order admission should try them.
/// FCFS: queue order (arrivals at the back, preempted sequences at the front).
/// Priority: by aged priority, then arrival, then queue order.
pub(crate) fn waiting_order(
    policy: PolicyType,
    aging: Duration,
    now: Instant,
    waiting: &VecDeque<SeqId>,
    seqs: &HashMap<SeqId, Sequence>,
) -> Vec<SeqId> {
    match policy {
        PolicyType::Fcfs => waiting.iter().copied().collect(),
        PolicyType::Priority => {
            let mut keyed: Vec<_> = waiting
                .iter()
                .enumerate()
                .filter_map(|(pos, id)| {
                    let s = seqs.get(id)?;
                    let waited = now.saturating_duration_since(s.arrival);
                    Some((
                        (
                            effective_priority(s.priority, waited, aging),
                            s.arrival,
                            pos,
                        ),
                        *id,
                    ))
                })
                .collect();
            keyed.sort_by_key(|&(key, _)| key);
            keyed.into_iter().map(|(_, id)| id).collect()
        }
    }
}

/// The running sequence to preempt first among `candidates`.
/// FCFS: the newest arrival. Priority: the least urgent, then the newest.
pub(crate) fn pick_victim<'a>(
    policy: PolicyType,
    candidates: impl Iterator<Item = &'a Sequence>,
) -> Option<SeqId> {
    match policy {
        PolicyType::Fcfs => candidates.max_by_key(|s| (s.arrival, s.id)).map(|s| s.id),
        PolicyType::Priority => candidates
            .max_by_key(|s| (s.priority, s.arrival, s.id))
            .map(|s| s.id),
    }
}

/// `supportSelectBatch` state (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SelectBatch {
    pub acc_decode_waste_ms: u64,
}

impl SelectBatch {
    /// Whether the ready prefill batch should run now, with `decoding` sequences decoding.
    pub fn prefill_now(&self, decoding: usize, prefill_ms_per_req: u32) -> bool {
        let prefill_wait = u64::from(prefill_ms_per_req).saturating_mul(decoding as u64);
        prefill_wait <= self.acc_decode_waste_ms
    }

    /// A decode step was chosen over the ready prefill batch.
    pub fn decode_chosen(&mut self, decoding: usize, max_batch: usize, decode_ms_per_req: u32) {
        let idle_slots = max_batch.saturating_sub(decoding) as u64;
        let waste = u64::from(decode_ms_per_req).saturating_mul(idle_slots);
        self.acc_decode_waste_ms = self.acc_decode_waste_ms.saturating_add(waste);
    }

    /// A prefill step ran.
    pub fn prefill_ran(&mut self) {
        self.acc_decode_waste_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::sequence::SeqRequest;
    use super::*;

    fn seq(id: SeqId, priority: u8, arrival: Instant) -> Sequence {
        let req = SeqRequest {
            id,
            prompt: vec![1],
            max_new_tokens: 1,
            priority,
            arrival,
        };
        Sequence::new(req, 1, Vec::new())
    }

    #[test]
    fn aging_raises_priority_one_level_per_step() {
        let a = Duration::from_secs(2);
        assert_eq!(effective_priority(5, Duration::from_millis(1999), a), 5);
        assert_eq!(effective_priority(5, Duration::from_secs(8), a), 1);
        assert_eq!(effective_priority(5, Duration::from_secs(100), a), -45);
        assert_eq!(
            effective_priority(3, Duration::from_secs(100), Duration::ZERO),
            3
        );
    }

    #[test]
    fn priority_order_lets_old_low_priority_requests_overtake() {
        let t0 = Instant::now();
        let mut seqs = HashMap::new();
        seqs.insert(1, seq(1, 5, t0));
        seqs.insert(2, seq(2, 1, t0 + Duration::from_secs(9)));
        seqs.insert(3, seq(3, 3, t0 + Duration::from_secs(9)));
        let waiting: VecDeque<SeqId> = [1, 2, 3].into();
        let now = t0 + Duration::from_secs(9);
        let aging = Duration::from_secs(2);
        // 1 waited 9 s: 5 - 4 = 1, ties with 2 and wins on arrival.
        assert_eq!(
            waiting_order(PolicyType::Priority, aging, now, &waiting, &seqs),
            vec![1, 2, 3]
        );
        let early = t0 + Duration::from_secs(1);
        assert_eq!(
            waiting_order(PolicyType::Priority, aging, early, &waiting, &seqs),
            vec![2, 3, 1]
        );
        assert_eq!(
            waiting_order(PolicyType::Fcfs, aging, early, &waiting, &seqs),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn victims_newest_or_least_urgent() {
        let t0 = Instant::now();
        let s = [
            seq(1, 5, t0),
            seq(2, 1, t0 + Duration::from_secs(1)),
            seq(3, 3, t0 + Duration::from_secs(2)),
        ];
        assert_eq!(pick_victim(PolicyType::Fcfs, s.iter()), Some(3));
        assert_eq!(pick_victim(PolicyType::Priority, s.iter()), Some(1));
        assert_eq!(pick_victim(PolicyType::Fcfs, s[..0].iter()), None);
    }

    #[test]
    fn select_batch_follows_mindie_rule() {
        let mut sb = SelectBatch::default();
        assert!(!sb.prefill_now(10, 150), "1500 > 0: decode first");
        sb.decode_chosen(10, 200, 50);
        assert_eq!(sb.acc_decode_waste_ms, 9500);
        assert!(sb.prefill_now(10, 150), "1500 <= 9500: prefill");
        sb.prefill_ran();
        assert_eq!(sb.acc_decode_waste_ms, 0);
        // A nearly full batch wastes little per decode: prefill waits several steps.
        let mut steps = 0;
        while !sb.prefill_now(190, 150) {
            sb.decode_chosen(190, 200, 50);
            steps += 1;
        }
        assert_eq!(
            steps, 57,
            "190*150 = 28500 needs 57 decodes of 500 ms waste"
        );
        assert!(
            SelectBatch::default().prefill_now(5, 0),
            "zero prefill cost: always prefill"
        );
    }
}
