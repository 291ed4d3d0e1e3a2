//! The model-free backend behind `modelInstanceType: "StandardMock"`: deterministic tokens at a
//! configurable pace, for testing the serving path and measuring it without a model.
//!
//! Its "KV cache" holds the token ids written to each block slot, and the next token of a
//! sequence is a hash of its whole context read back through its block table. So the output
//! depends only on the context (the same prompt gives the same tokens, alone or batched), and a
//! scheduler that hands out wrong blocks (a bad prefix-cache hit, a lost block after
//! preemption) changes the output, as it would with a real model. Ids that are special tokens
//! or EOS are never produced, so every request runs to its length limit.
//!
//! Test support: with [`MockOptions::reply`] set (env `MIES_MOCK_REPLY_FILE`), every request
//! is answered with those tokens and then EOS, so the routes that read a reply's text (tool
//! calls) can be driven end to end. The next token is the reply's token after the longest
//! start of the reply that the context ends with.
//!
//! Test support: with [`MockOptions::stall_file`] set (env `MIES_MOCK_STALL_FILE`, see
//! below), every step blocks while that file exists, checking every few
//! milliseconds. That is a stuck step as the health checks must see one; removing the file
//! lets the step finish.

use super::{Backend, BackendError, BackendInfo, BlockId, DType, KvChunk, StepBatch, StepOutput};
use std::path::PathBuf;
use std::time::Duration;

/// Env var: milliseconds the mock sleeps per step (default 0).
pub const MOCK_STEP_TIME_ENV: &str = "MIES_MOCK_STEP_TIME_MS";
/// Env var: microseconds the mock sleeps per token in a step (default 0).
pub const MOCK_TOKEN_TIME_ENV: &str = "MIES_MOCK_TOKEN_TIME_US";
/// Env var (test support): the mock answers every request with this file's text (tokenized),
/// then EOS.
pub const MOCK_REPLY_FILE_ENV: &str = "MIES_MOCK_REPLY_FILE";
/// Env var (test support): while the file it names exists, every mock step blocks: a stuck
/// engine step for the health checks to detect (SPEC §0.12).
pub const MOCK_STALL_FILE_ENV: &str = "MIES_MOCK_STALL_FILE";

/// How often a stalled step checks whether its stall file is gone.
const STALL_POLL: Duration = Duration::from_millis(20);

/// Bytes the mock pretends one token of KV takes (sizes the block pool from a memory budget
/// like a ~0.5B-parameter model would).
pub const BYTES_PER_TOKEN: usize = 12 * 1024;

/// How the mock runs.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub vocab_size: usize,
    /// Ids never produced (special tokens, EOS).
    pub avoid: Vec<u32>,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Sleep per step.
    pub step_time: Duration,
    /// Extra sleep per token in the step (prefill costs more than decode).
    pub token_time: Duration,
    pub max_position: usize,
    /// Test support: steps block while this file exists.
    pub stall_file: Option<PathBuf>,
    /// Test support: the answer to every request, then the EOS id.
    pub reply: Option<(Vec<u32>, u32)>,
}

/// See the module docs.
pub struct MockBackend {
    info: BackendInfo,
    /// Ids it may produce.
    candidates: Vec<u32>,
    /// `num_blocks × block_size` token slots.
    slots: Vec<u32>,
    step_time: Duration,
    token_time: Duration,
    stall_file: Option<PathBuf>,
    reply: Option<(Vec<u32>, u32)>,
}

/// The chosen token's logit (all others 0): sampling at any sane temperature still picks it.
const LOGIT_HIGH: f32 = 1000.0;

impl MockBackend {
    pub fn new(o: MockOptions) -> Result<Self, BackendError> {
        let candidates: Vec<u32> = (0..o.vocab_size as u32)
            .filter(|id| !o.avoid.contains(id))
            .collect();
        if candidates.is_empty() || o.block_size == 0 || o.num_blocks == 0 {
            return Err(BackendError::Config(
                "mock backend: needs a vocabulary with ordinary tokens, a block size and blocks"
                    .into(),
            ));
        }
        let slots = vec![0; o.num_blocks * o.block_size];
        Ok(Self {
            info: BackendInfo {
                architecture: "StandardMock".into(),
                dtype: DType::F32,
                device: "mock (no model)".into(),
                vocab_size: o.vocab_size,
                block_size: o.block_size,
                num_blocks: o.num_blocks,
                bytes_per_block: o.block_size * 4,
                max_position: o.max_position,
                // Only a scripted reply ends on EOS; otherwise none is ever produced.
                eos_token_ids: o.reply.iter().map(|(_, eos)| *eos).collect(),
                num_layers: 1,
                held_layers: 0..1,
                weight_bytes: 0,
                num_kv_heads: 1,
                head_dim: 1,
                kv_layout: "mock-token-ids".into(),
            },
            candidates,
            slots,
            step_time: o.step_time,
            token_time: o.token_time,
            stall_file: o.stall_file,
            reply: o.reply,
        })
    }

    fn slot(&self, table: &[BlockId], pos: usize) -> Result<usize, BackendError> {
        let bs = self.info.block_size;
        let block = *table.get(pos / bs).ok_or_else(|| {
            BackendError::InvalidBatch(format!("position {pos} is beyond the block table"))
        })? as usize;
        if block >= self.info.num_blocks {
            return Err(BackendError::InvalidBatch(format!(
                "block {block} out of range"
            )));
        }
        Ok(block * bs + pos % bs)
    }

    /// The next token after `context_len` tokens of a sequence.
    fn next_token(&self, table: &[BlockId], context_len: usize) -> Result<u32, BackendError> {
        if let Some((reply, eos)) = &self.reply {
            let mut tail = Vec::with_capacity(reply.len().min(context_len));
            for pos in context_len.saturating_sub(reply.len())..context_len {
                tail.push(self.slots[self.slot(table, pos)?]);
            }
            let done = (0..=reply.len().min(tail.len()))
                .rev()
                .find(|&j| tail.ends_with(&reply[..j]))
                .unwrap_or(0);
            return Ok(reply.get(done).copied().unwrap_or(*eos));
        }
        // FNV-1a over the context, then a final mix.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for pos in 0..context_len {
            let t = self.slots[self.slot(table, pos)?];
            h = (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        Ok(self.candidates[(h % self.candidates.len() as u64) as usize])
    }
}

impl Backend for MockBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, BackendError> {
        if let Some(f) = &self.stall_file {
            while f.exists() {
                std::thread::sleep(STALL_POLL);
            }
        }
        let pace = self.step_time + self.token_time * batch.tokens.len() as u32;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
        let vocab = self.info.vocab_size;
        let mut out = StepOutput {
            vocab_size: vocab,
            ..StepOutput::default()
        };
        for (i, s) in batch.seqs.iter().enumerate() {
            let n = s.token_range.len();
            if s.context_len < n {
                return Err(BackendError::InvalidBatch(format!(
                    "sequence {i}: context {} shorter than its {n} new tokens",
                    s.context_len
                )));
            }
            let tokens = batch.tokens.get(s.token_range.clone()).ok_or_else(|| {
                BackendError::InvalidBatch(format!("sequence {i}: token range out of bounds"))
            })?;
            let first = s.context_len - n;
            for (k, &t) in tokens.iter().enumerate() {
                let slot = self.slot(&s.block_table, first + k)?;
                self.slots[slot] = t;
            }
            if s.want_logits {
                let next = self.next_token(&s.block_table, s.context_len)?;
                let row = out.logits.len();
                out.logits.resize(row + vocab, 0.0);
                out.logits[row + next as usize] = LOGIT_HIGH;
                out.seq_indices.push(i);
            }
        }
        Ok(out)
    }

    fn export_blocks(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        let bs = self.info.block_size;
        let mut data = Vec::with_capacity(ids.len() * bs * 4);
        for &id in ids {
            let b = id as usize;
            if b >= self.info.num_blocks {
                return Err(BackendError::KvCache(format!("block {b} out of range")));
            }
            for t in &self.slots[b * bs..(b + 1) * bs] {
                data.extend_from_slice(&t.to_le_bytes());
            }
        }
        Ok(KvChunk {
            layout: "mock-token-ids".into(),
            bytes_per_block: bs * 4,
            data,
        })
    }

    fn import_blocks(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError> {
        let bs = self.info.block_size;
        if kv.layout != "mock-token-ids"
            || kv.bytes_per_block != bs * 4
            || kv.data.len() != ids.len() * bs * 4
        {
            return Err(BackendError::KvCache(format!(
                "incompatible KV chunk (layout {:?}, {} bytes per block)",
                kv.layout, kv.bytes_per_block
            )));
        }
        for (j, &id) in ids.iter().enumerate() {
            let b = id as usize;
            if b >= self.info.num_blocks {
                return Err(BackendError::KvCache(format!("block {b} out of range")));
            }
            for k in 0..bs {
                let at = (j * bs + k) * 4;
                let mut word = [0u8; 4];
                word.copy_from_slice(&kv.data[at..at + 4]);
                self.slots[b * bs + k] = u32::from_le_bytes(word);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SeqSlice;

    fn mock() -> MockBackend {
        MockBackend::new(mock_options()).unwrap()
    }

    fn mock_options() -> MockOptions {
        MockOptions {
            vocab_size: 50,
            avoid: vec![0, 1],
            block_size: 4,
            num_blocks: 8,
            step_time: Duration::ZERO,
            token_time: Duration::ZERO,
            max_position: 1024,
            stall_file: None,
            reply: None,
        }
    }

    #[test]
    fn scripted_reply_then_eos() {
        let mut m = MockBackend::new(MockOptions {
            reply: Some((vec![7, 7, 9], 1)),
            ..mock_options()
        })
        .unwrap();
        let mut ctx = vec![5, 6, 8];
        let mut got = Vec::new();
        for _ in 0..4 {
            let t = prefill(&mut m, &ctx, vec![0, 1, 2]);
            got.push(t);
            ctx.push(t);
        }
        assert_eq!(got, vec![7, 7, 9, 1]);
    }

    fn prefill(m: &mut MockBackend, tokens: &[u32], table: Vec<BlockId>) -> u32 {
        let batch = StepBatch {
            tokens: tokens.to_vec(),
            positions: (0..tokens.len() as u32).collect(),
            seqs: vec![SeqSlice {
                token_range: 0..tokens.len(),
                context_len: tokens.len(),
                block_table: table,
                want_logits: true,
            }],
        };
        let out = m.step(&batch).unwrap();
        let row = out.row(0);
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap()
    }

    #[test]
    fn output_depends_on_context_not_on_blocks() {
        let mut m = mock();
        let a = prefill(&mut m, &[5, 6, 7, 8, 9], vec![0, 1]);
        let b = prefill(&mut m, &[5, 6, 7, 8, 9], vec![6, 3]);
        let c = prefill(&mut m, &[5, 6, 7, 8, 10], vec![4, 5]);
        assert_eq!(a, b);
        assert!(a > 1 && c > 1);
        let chunk = m.export_blocks(&[0, 1]).unwrap();
        m.import_blocks(&[2, 7], &chunk).unwrap();
        assert_eq!(m.next_token(&[2, 7], 5).unwrap(), a);
    }

    #[test]
    fn bad_batches_are_errors() {
        let mut m = mock();
        let batch = StepBatch {
            tokens: vec![1, 2, 3, 4, 5],
            positions: vec![0, 1, 2, 3, 4],
            seqs: vec![SeqSlice {
                token_range: 0..5,
                context_len: 5,
                block_table: vec![0],
                want_logits: true,
            }],
        };
        assert!(m.step(&batch).is_err());
    }
}
