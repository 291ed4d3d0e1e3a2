//! Fuzzes what instances read from each other: the DMI headers a prefill instance takes from
//! the Coordinator (`tests/fuzz/dmi/`: one `name: value` per line), the `/dresult` frames the
//! Coordinator parses (`tests/fuzz/dresult/`), and the gRPC messages of the PD link
//! (`DecodeParameters` → the hand-off check, `KvHello` → the layout check, `KvChunkMsg`
//! streams → the reassembler) and of the multi-node link (`ExecuteRequest` → the stage input
//! check): arbitrary and mutated bytes are prost-decoded, and what decodes goes through our
//! conversions. The gRPC seeds are valid messages built here and encoded.
//!
//! Invariant: `Ok` or a typed error, never a panic. `MINDIE_FUZZ_CASES` scales the count.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod fuzz;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use fuzz::Input;
use mindie::cluster::kv::ChunkAssembler;
use mindie::cluster::proto::{kv, pd};
use mindie::multinode::proto::model_execute_data as med;
use mindie::multinode::wire;
use mindie::pd::{frames, handoff_msg, headers};
use proptest::strategy::Strategy;
use prost::Message;

/// [`fuzz::run`] with this harness's regressions file.
fn run<S: Strategy<Value = Input>>(
    name: &str,
    seeds: Vec<Vec<u8>>,
    weight: f64,
    strategy: impl Fn(usize) -> S,
    check: impl Fn(&[u8]),
) {
    fuzz::run(name, file!(), seeds, weight, strategy, check);
}

#[test]
fn dmi_headers() {
    run("dmi", fuzz::seeds("dmi"), 2.0, fuzz::byte_input, |bytes| {
        // Only what hyper lets through reaches the parser: valid names and values.
        let mut map = HeaderMap::new();
        for line in bytes.split(|b| *b == b'\n') {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                map.append(n, v);
            }
        }
        if let Ok(Some(h)) = headers::parse(&map) {
            let _ = h.d_target.wire();
        }
    });
}

#[test]
fn dresult_frames() {
    run(
        "dresult",
        fuzz::seeds("dresult"),
        2.0,
        fuzz::byte_input,
        |bytes| {
            let (frames, used) = frames::parse(bytes);
            assert!(used <= bytes.len(), "consumed {used} of {}", bytes.len());
            // What we write, the Coordinator reads back (NUL stripped from the payload).
            for f in &frames {
                let again = frames::encode(f);
                let _ = frames::parse(&again);
            }
        },
    );
}

fn grpc_seeds() -> Vec<Vec<u8>> {
    let params = pd::DecodeParameters {
        req_id: "1a2b".into(),
        ..Default::default()
    };
    let hello = kv::KvHello {
        model_name: "m".into(),
        num_layers: 2,
        num_kv_heads: 2,
        head_dim: 4,
        dtype: "float32".into(),
        block_size: 4,
        tp_size: 1,
        ..Default::default()
    };
    let chunk = kv::KvChunkMsg {
        seq: 0,
        offset: 0,
        data: vec![0u8; 64].into(),
        header: Some(kv::KvChunkHeader {
            total_bytes: 64,
            bytes_per_block: 32,
            kv_tokens: 8,
            block_size: 4,
            ..Default::default()
        }),
    };
    let exec = med::ExecuteRequest {
        execute_type: med::ExecuteType::ModelInfer as i32,
        ..Default::default()
    };
    vec![
        params.encode_to_vec(),
        hello.encode_to_vec(),
        chunk.encode_to_vec(),
        exec.encode_to_vec(),
    ]
}

#[test]
fn grpc_messages() {
    run("grpc", grpc_seeds(), 4.0, fuzz::byte_input, |bytes| {
        if let Ok(p) = pd::DecodeParameters::decode(bytes) {
            let _ = handoff_msg::incoming(&p);
        }
        if let Ok(h) = kv::KvHello::decode(bytes) {
            let _ = mindie::cluster::kv::KvLayout::from_hello(&h);
        }
        if let Ok(m) = kv::KvChunkMsg::decode(bytes) {
            let mut a = ChunkAssembler::default();
            if a.push(m.clone()).is_ok() {
                let _ = a.push(kv::KvChunkMsg { header: None, ..m });
                let _ = a.finish(0);
            }
        }
        if let Ok(r) = med::ExecuteRequest::decode(bytes) {
            for hidden in [1, 2, 8] {
                let _ = wire::read_infer(&r, hidden);
            }
        }
        let _ = med::SlaveToMasterMsg::decode(bytes);
        let _ = med::MasterToSlaveMsg::decode(bytes);
        let _ = wire::bytes_f32(bytes, bytes.len() / 4);
    });
}
