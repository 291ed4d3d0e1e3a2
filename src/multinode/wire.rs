//! One pipeline step on the wire: a packed [`StepBatch`] and its hidden states as MindIE's
//! `ExecuteRequest{MODEL_INFER, ExecuteModelRequest}` with this project's `StageStep`
//! extension, and the reply's hidden states. Each sequence is one `SequenceGroupMetadata`:
//! `request_id` = its index in the step, `block_tables[0]` = its block ids as little-endian
//! int64, `token_chunk_size` = its new tokens, `split_start_pos[0]..split_end_pos[0]` = their
//! positions. The sequences' tokens lie back to back in the packed step, in order. Token ids
//! do not travel (a slave starts from hidden states). Everything read from the wire is
//! checked here before a backend sees it.

use super::proto::mindie_rs::pipeline::v1 as pl;
use super::proto::model_execute_data as med;
use crate::backend::{BlockId, SeqSlice, StepBatch};
use prost::bytes::Bytes;

/// Largest packed step a slave accepts (tokens), far above any `maxPrefillTokens`.
pub const MAX_STEP_TOKENS: usize = 1 << 22;

/// A malformed step message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipeline step message: {0}")]
pub struct WireError(pub String);

fn bad<T>(m: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(m.into()))
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Bytes {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(out)
}

/// Little-endian bytes as exactly `want` f32 values.
pub fn bytes_f32(b: &[u8], want: usize) -> Result<Vec<f32>, WireError> {
    if b.len() != want.saturating_mul(4) {
        return bad(format!(
            "{} bytes of hidden states where {want} f32 values ({} bytes) were expected",
            b.len(),
            want.saturating_mul(4)
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn forward_type(batch: &StepBatch) -> med::ForwardType {
    let prompt = batch
        .seqs
        .iter()
        .filter(|s| s.token_range.len() > 1)
        .count();
    match prompt {
        0 => med::ForwardType::Decode,
        n if n == batch.seqs.len() => med::ForwardType::Prefill,
        _ => med::ForwardType::Mixed,
    }
}

/// The MODEL_INFER command for one slave stage.
pub fn infer_request(
    batch: &StepBatch,
    step: u64,
    epoch: u64,
    hidden: &[f32],
) -> Result<med::ExecuteRequest, WireError> {
    let mut next = 0;
    let mut metas = Vec::with_capacity(batch.seqs.len());
    for (i, s) in batch.seqs.iter().enumerate() {
        if s.token_range.start != next {
            return bad(format!(
                "sequence {i}'s tokens start at {} where {next} was expected (tokens must lie back to back)",
                s.token_range.start
            ));
        }
        next = s.token_range.end;
        let mut table = Vec::with_capacity(s.block_table.len() * 8);
        for &b in &s.block_table {
            table.extend_from_slice(&i64::from(b).to_le_bytes());
        }
        let n = s.token_range.len();
        metas.push(med::SequenceGroupMetadata {
            request_id: i.to_string(),
            is_prompt: n > 1,
            block_tables: vec![table],
            token_chunk_size: Some(n as i32),
            split_start_pos: vec![(s.context_len - n) as i32],
            split_end_pos: vec![s.context_len as i32],
            ..Default::default()
        });
    }
    if next != batch.tokens.len() {
        return bad(format!(
            "the sequences hold {next} of the step's {} tokens",
            batch.tokens.len()
        ));
    }
    Ok(med::ExecuteRequest {
        execute_type: med::ExecuteType::ModelInfer as i32,
        request: Some(med::execute_request::Request::ExecuteModelRequest(
            med::ExecuteModelRequest {
                seq_group_metadata_list: metas,
                forward_type: forward_type(batch) as i32,
            },
        )),
        mindie_rs_stage_step: Some(pl::StageStep {
            step,
            epoch,
            tokens: batch.tokens.len() as u32,
            hidden: f32_bytes(hidden),
        }),
        ..Default::default()
    })
}

/// A slave's view of a MODEL_INFER command.
#[derive(Debug, Clone, PartialEq)]
pub struct StageInput {
    /// The step (token ids are 0: they do not travel).
    pub batch: StepBatch,
    pub step: u64,
    pub epoch: u64,
    /// `tokens × hidden_size` values.
    pub hidden: Vec<f32>,
}

/// Reads and checks a MODEL_INFER command for a model of `hidden_size`.
pub fn read_infer(req: &med::ExecuteRequest, hidden_size: usize) -> Result<StageInput, WireError> {
    let Some(med::execute_request::Request::ExecuteModelRequest(model)) = &req.request else {
        return bad("MODEL_INFER without an execute_model_request");
    };
    let Some(st) = &req.mindie_rs_stage_step else {
        return bad("MODEL_INFER without the mindie_rs_stage_step extension (field 1001)");
    };
    let tokens = st.tokens as usize;
    if tokens > MAX_STEP_TOKENS {
        return bad(format!("{tokens} tokens: at most {MAX_STEP_TOKENS}"));
    }
    let mut batch = StepBatch {
        tokens: vec![0; tokens],
        positions: Vec::with_capacity(tokens),
        seqs: Vec::with_capacity(model.seq_group_metadata_list.len()),
    };
    for (i, m) in model.seq_group_metadata_list.iter().enumerate() {
        let (Some(&start), Some(&end)) = (m.split_start_pos.first(), m.split_end_pos.first())
        else {
            return bad(format!("sequence {i}: no split_start_pos / split_end_pos"));
        };
        let n = m.token_chunk_size.unwrap_or(0);
        if start < 0 || n <= 0 || end.checked_sub(start) != Some(n) {
            return bad(format!(
                "sequence {i}: positions {start}..{end} do not hold its {n} new token(s)"
            ));
        }
        let first = batch.positions.len();
        if first + n as usize > tokens {
            return bad(format!(
                "sequence {i}: its tokens run past the step's {tokens}"
            ));
        }
        batch.positions.extend(start as u32..end as u32);
        let table = m.block_tables.first().map(|t| t.as_slice()).unwrap_or(&[]);
        if table.len() % 8 != 0 {
            return bad(format!(
                "sequence {i}: block table of {} bytes is not a whole number of int64",
                table.len()
            ));
        }
        let block_table = table
            .chunks_exact(8)
            .map(|c| {
                let v = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                BlockId::try_from(v).map_err(|_| WireError(format!("sequence {i}: block id {v}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        batch.seqs.push(SeqSlice {
            token_range: first..first + n as usize,
            context_len: end as usize,
            block_table,
            want_logits: false,
        });
    }
    if batch.positions.len() != tokens {
        return bad(format!(
            "the sequences hold {} of the step's {tokens} tokens",
            batch.positions.len()
        ));
    }
    let hidden = bytes_f32(&st.hidden, tokens.saturating_mul(hidden_size))?;
    Ok(StageInput {
        batch,
        step: st.step,
        epoch: st.epoch,
        hidden,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> StepBatch {
        StepBatch {
            tokens: vec![5, 6, 7, 9],
            positions: vec![0, 1, 2, 8],
            seqs: vec![
                SeqSlice {
                    token_range: 0..3,
                    context_len: 3,
                    block_table: vec![4],
                    want_logits: true,
                },
                SeqSlice {
                    token_range: 3..4,
                    context_len: 9,
                    block_table: vec![1, 70_000],
                    want_logits: true,
                },
            ],
        }
    }

    #[test]
    fn a_step_round_trips_without_its_token_ids() {
        let hidden: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 1.0).collect();
        let req = infer_request(&batch(), 7, 2, &hidden).expect("encodes");
        let bytes = prost::Message::encode_to_vec(&req);
        let back: med::ExecuteRequest = prost::Message::decode(bytes.as_slice()).expect("decodes");
        let got = read_infer(&back, 2).expect("reads");
        let mut want = batch();
        want.tokens = vec![0; 4];
        for s in &mut want.seqs {
            s.want_logits = false;
        }
        assert_eq!(got.batch, want);
        assert_eq!((got.step, got.epoch), (7, 2));
        assert_eq!(got.hidden, hidden);
    }

    #[test]
    fn malformed_steps_are_refused() {
        let hidden = vec![0f32; 8];
        let good = infer_request(&batch(), 1, 1, &hidden).expect("encodes");
        assert!(read_infer(&good, 3).is_err(), "wrong hidden size");
        let mut no_ext = good.clone();
        no_ext.mindie_rs_stage_step = None;
        assert!(read_infer(&no_ext, 2).is_err());
        let mut too_many = good.clone();
        if let Some(s) = too_many.mindie_rs_stage_step.as_mut() {
            s.tokens = 5;
        }
        assert!(read_infer(&too_many, 2).is_err());
        let mut bad_pos = good.clone();
        if let Some(med::execute_request::Request::ExecuteModelRequest(m)) =
            bad_pos.request.as_mut()
        {
            m.seq_group_metadata_list[1].split_start_pos = vec![-1];
        }
        assert!(read_infer(&bad_pos, 2).is_err());
        let mut gap = batch();
        gap.seqs[1].token_range = 3..4;
        gap.seqs[0].token_range = 1..3;
        assert!(infer_request(&gap, 1, 1, &hidden).is_err());
    }
}
