//! HF parity at the engine level: the requests the reference cases of
//! `tests/fixtures/refs/*.json` stand for (greedy, top-5 logprobs), and the check of their
//! event streams (greedy tokens identical, finish reason, logprobs within 1e-4).
#![allow(dead_code)]

use mindie::engine::handle::Submission;
use mindie::engine::sampler::SamplingParams;
use mindie::engine::{Finish, GenRequest, TokenEvent};
use serde_json::Value;

/// One greedy request per case of `refs`, with the case.
pub fn ref_requests(refs: &Value) -> Vec<(Value, GenRequest)> {
    let mut out = Vec::new();
    for case in refs["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let req = GenRequest {
            prompt,
            max_new_tokens: refs["max_new_tokens"].as_u64().unwrap() as usize,
            sampling: SamplingParams::default(),
            stop_token_ids: Vec::new(),
            ignore_eos: refs["ignore_eos"].as_bool().unwrap_or(false),
            top_logprobs: Some(5),
            priority: 3,
            json: None,
        };
        out.push((case.clone(), req));
    }
    out
}

/// Reads every submission to its end and checks it against its case.
pub async fn check_streams(model: &str, subs: Vec<(Value, Submission)>) {
    for (case, mut sub) in subs {
        let name = case["name"].as_str().unwrap();
        let mut got = Vec::new();
        let mut finish = None;
        while let Some(ev) = sub.events.recv().await {
            match ev {
                TokenEvent::Token {
                    id, logprob, top, ..
                } => got.push((id, logprob, top)),
                TokenEvent::Finished {
                    finish: f,
                    generated_tokens,
                    ..
                } => {
                    assert_eq!(generated_tokens, got.len());
                    finish = Some(f);
                }
            }
        }
        let want: Vec<u64> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let ids: Vec<u64> = got.iter().map(|g| g.0 as u64).collect();
        assert_eq!(ids, want, "{model}/{name}: greedy tokens");
        let want_finish = if case["finish_reason"] == "stop" {
            Finish::Stop
        } else {
            Finish::Length
        };
        assert_eq!(finish, Some(want_finish), "{model}/{name}");
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let (_, lp, top) = &got[i];
            let lp = lp.expect("logprob");
            assert!(
                (lp as f64 - step["logprob"].as_f64().unwrap()).abs() < 1e-4,
                "{model}/{name} step {i}"
            );
            for (j, t) in step["top"].as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    top[j].0 as u64,
                    t["id"].as_u64().unwrap(),
                    "{model}/{name} step {i} top {j}"
                );
                assert!((top[j].1 as f64 - t["logprob"].as_f64().unwrap()).abs() < 1e-4);
            }
        }
    }
}
