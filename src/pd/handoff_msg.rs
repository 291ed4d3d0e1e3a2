//! What the prefill instance sends its decode instance in `DecodeRequestChannel`: MindIE's
//! `DecodeParameters` fields filled as a MindIE prefill instance fills them (prompt ids, the
//! first token, `msgType`, the user-set sampling fields, block table, `pNodeAddr`, …), plus the
//! project's own extension (field 1000, [`RsHandoff`], JSON) with what a replay needs: the
//! client's request as it came, the reply identity, how many reply chunks P already sent,
//! and the first token's logprobs. A MindIE peer ignores the extension.

use super::context::ReplyIdentity;
use super::prefill::FirstToken;
use crate::cluster::proto::pd as wire;
use crate::engine::{GenRequest, NO_OUTPUT_LIMIT};

/// The project's extension of `DecodeParameters` (`mindieRsHandoff`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RsHandoff {
    /// Format version of this message (1).
    pub version: u32,
    /// The client request's path (and query) on the business plane.
    pub path: String,
    /// The client's body, as it came (UTF-8 JSON).
    pub body: String,
    pub content_type: Option<String>,
    pub identity: Option<ReplyIdentity>,
    /// The seed P chose for a request that named none.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Reply chunks the prefill instance already wrote (its first streamed chunks).
    pub sent_chunks: usize,
    pub first: FirstToken,
}

/// The current [`RsHandoff::version`].
pub const VERSION: u32 = 1;

/// Why a `DecodeParameters` cannot be served here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("reqId is empty")]
    NoReqId,
    #[error("msgType {0} is not one of 1..=10 except 7")]
    MsgType(u32),
    #[error(
        "the prefill instance sent no mindieRsHandoff (field 1000): this decode instance \
         continues requests from mindieservice_daemon (Rust) prefill instances only"
    )]
    NoExtension,
    #[error("mindieRsHandoff: {0}")]
    BadExtension(String),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// What the decode side takes from a `DecodeParameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub req_id: String,
    pub prompt: Vec<u32>,
    pub first: FirstToken,
    pub p_node_addr: String,
    pub p_instance_id: u32,
    pub src_blocks: Vec<i64>,
    pub is_stream: bool,
    pub rs: RsHandoff,
}

/// Parses and checks what `DecodeRequestChannel` brought.
pub fn incoming(p: &wire::DecodeParameters) -> Result<Incoming, ParamsError> {
    if p.req_id.is_empty() {
        return Err(ParamsError::NoReqId);
    }
    if !(1..=10).contains(&p.msg_type) || p.msg_type == 7 {
        return Err(ParamsError::MsgType(p.msg_type));
    }
    if p.mindie_rs_handoff.is_empty() {
        return Err(ParamsError::NoExtension);
    }
    let rs: RsHandoff = serde_json::from_slice(&p.mindie_rs_handoff)
        .map_err(|e| ParamsError::BadExtension(e.to_string()))?;
    if rs.version != VERSION {
        return Err(ParamsError::BadExtension(format!(
            "version {} (this instance reads {VERSION})",
            rs.version
        )));
    }
    let ids = |field: &'static str, v: &[i64]| -> Result<Vec<u32>, ParamsError> {
        v.iter()
            .map(|&t| {
                u32::try_from(t).map_err(|_| ParamsError::Field {
                    field,
                    reason: format!("token id {t} is out of range"),
                })
            })
            .collect()
    };
    let prompt = ids("tokens", &p.tokens)?;
    if prompt.is_empty() {
        return Err(ParamsError::Field {
            field: "tokens",
            reason: "empty prompt".into(),
        });
    }
    let first = ids("firstToken", &p.first_token)?;
    if first.len() != 1 || first[0] != rs.first.id {
        return Err(ParamsError::Field {
            field: "firstToken",
            reason: format!(
                "expected exactly the one token of mindieRsHandoff.first ({}), got {first:?}",
                rs.first.id
            ),
        });
    }
    if p.p_node_addr.is_empty() {
        return Err(ParamsError::Field {
            field: "pNodeAddr",
            reason: "empty".into(),
        });
    }
    Ok(Incoming {
        req_id: p.req_id.clone(),
        prompt,
        first: rs.first.clone(),
        p_node_addr: p.p_node_addr.clone(),
        p_instance_id: p.p_instance_id,
        src_blocks: p
            .block_table
            .first()
            .map(|b| b.block_id.clone())
            .unwrap_or_default(),
        is_stream: p.is_stream,
        rs,
    })
}

/// What the prefill side knows when it hands a request on.
pub struct Outgoing<'a> {
    pub req_id: &'a str,
    pub req: &'a GenRequest,
    pub msg_type: u32,
    pub is_stream: bool,
    pub blocks: &'a [u32],
    pub p_node_addr: String,
    pub p_instance_id: u32,
    pub model_name: &'a str,
    pub e2e_start_us: u64,
    pub rs: &'a RsHandoff,
}

/// `DecodeParameters` for a hand-off.
pub fn outgoing(o: &Outgoing<'_>) -> Result<wire::DecodeParameters, serde_json::Error> {
    let req = o.req;
    let s = &req.sampling;
    let sampling = wire::SamplingParams {
        temperature: Some(wire::Temperature {
            value: Some(s.temperature),
        }),
        top_k: Some(wire::TopK {
            value: Some(u32::try_from(s.top_k).unwrap_or(u32::MAX)),
        }),
        top_p: Some(wire::TopP {
            value: Some(s.top_p),
        }),
        typical_p: Some(wire::TypicalP {
            value: Some(s.typical_p),
        }),
        seed: Some(wire::Seed {
            value: Some(s.seed),
        }),
        repetition_penalty: Some(wire::RepetitionPenalty {
            value: Some(s.repetition_penalty),
        }),
        frequency_penalty: Some(wire::FrequencyPenalty {
            value: Some(s.frequency_penalty),
        }),
        presency_penalty: Some(wire::PresencyPenalty {
            value: Some(s.presence_penalty),
        }),
        stop_token_ids: (!req.stop_token_ids.is_empty()).then(|| wire::StopTokenIds {
            value: req.stop_token_ids.iter().map(|&t| i64::from(t)).collect(),
        }),
        ignore_eos: Some(wire::IgnoreEos {
            value: Some(req.ignore_eos),
        }),
        logprobs: Some(wire::Logprobs {
            value: Some(req.top_logprobs.is_some()),
        }),
        top_logprobs: req.top_logprobs.map(|n| wire::TopLogprobs {
            value: Some(n as u64),
        }),
        ..Default::default()
    };
    let max_new = if req.max_new_tokens == NO_OUTPUT_LIMIT {
        0
    } else {
        i32::try_from(req.max_new_tokens).unwrap_or(i32::MAX)
    };
    Ok(wire::DecodeParameters {
        req_id: o.req_id.to_string(),
        tokens: req.prompt.iter().map(|&t| i64::from(t)).collect(),
        first_token: vec![i64::from(o.rs.first.id)],
        msg_type: o.msg_type,
        sampling_params: Some(sampling),
        is_stream: o.is_stream,
        max_new_token: max_new,
        model_name: o.model_name.to_string(),
        block_table: vec![wire::BlockIds {
            block_id: o.blocks.iter().map(|&b| i64::from(b)).collect(),
        }],
        p_node_addr: o.p_node_addr.clone(),
        p_instance_id: o.p_instance_id,
        e2e_start_time: o.e2e_start_us,
        prefill_token_num: 1,
        pre_output_token_num: 0,
        mindie_rs_handoff: serde_json::to_vec(o.rs)?,
        ..Default::default()
    })
}
