//! Which business requests are inference requests under PD, and their MindIE `msgType`
//! (SPEC-PD §2.3): the P checks apply to these routes only; every other route (health,
//! models, tokenizer, `stopInfer`) is served as in standard mode.

use axum::http::Method;

/// An inference route and the `msgType` MindIE sends for it in `DecodeParameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/generate` (TGI's `inputs` or vLLM's `prompt`, told apart by the body).
    Generate,
    /// `/generate_stream`.
    GenerateStream,
    /// `/` (TGI's general route).
    TgiRoot,
    /// `/infer`, `/infer_token` (MindIE native).
    Native,
    /// `/v2/models/{m}/generate` and `/generate_stream`.
    TritonGenerate,
    /// `/v2/models/{m}/infer`.
    TritonInfer,
}

impl RouteKind {
    /// The inference route `method path` is, if any.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        Some(match path {
            "/v1/chat/completions" => Self::Chat,
            "/v1/completions" => Self::Completions,
            "/generate" => Self::Generate,
            "/generate_stream" => Self::GenerateStream,
            "/" => Self::TgiRoot,
            "/infer" | "/infer_token" => Self::Native,
            _ => {
                let rest = path.strip_prefix("/v2/models/")?;
                let (_model, action) = rest.split_once('/')?;
                match action {
                    "generate" | "generate_stream" => Self::TritonGenerate,
                    "infer" => Self::TritonInfer,
                    _ => return None,
                }
            }
        })
    }

    /// MindIE's `msgType`: 1 TGI, 2 GENERAL_TGI, 3 VLLM, 4 OPENAI, 5 VLLM_OPENAI,
    /// 6 VLLM_OPENAI_COMP, 8 INFER, 9 TRITON, 10 TRITON_TOKEN. `vllm_openai` is
    /// `openAiSupport == "vllm"`; `body` tells TGI's `/generate` from vLLM's.
    pub fn msg_type(self, vllm_openai: bool, body: &serde_json::Value) -> u32 {
        match self {
            Self::Chat if vllm_openai => 5,
            Self::Chat => 4,
            Self::Completions => 6,
            Self::Generate if body.get("prompt").is_some() && body.get("inputs").is_none() => 3,
            Self::Generate | Self::GenerateStream => 1,
            Self::TgiRoot => 2,
            Self::Native => 8,
            Self::TritonGenerate => 9,
            Self::TritonInfer => 10,
        }
    }
}

/// Whether a request body asks for several choices (`n` or `best_of` above 1), which PD
/// serves whole on the prefill instance (one hand-off carries one sequence).
pub fn wants_several_choices(body: &serde_json::Value) -> bool {
    let above_one =
        |v: Option<&serde_json::Value>| v.and_then(|v| v.as_u64()).is_some_and(|n| n > 1);
    above_one(body.get("n"))
        || above_one(body.get("best_of"))
        || above_one(body.pointer("/parameters/n"))
        || above_one(body.pointer("/parameters/best_of"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inference_routes_and_their_msg_types() {
        let post = Method::POST;
        let k = |p: &str| RouteKind::of(&post, p);
        assert_eq!(k("/v1/chat/completions"), Some(RouteKind::Chat));
        assert_eq!(
            k("/v2/models/m/generate_stream"),
            Some(RouteKind::TritonGenerate)
        );
        assert_eq!(k("/v2/models/m/infer"), Some(RouteKind::TritonInfer));
        assert_eq!(k("/v2/models/m/stopInfer"), None);
        assert_eq!(k("/v1/models"), None);
        assert_eq!(RouteKind::of(&Method::GET, "/generate"), None);
        let tgi = json!({"inputs": "x"});
        let vllm = json!({"prompt": "x"});
        assert_eq!(RouteKind::Generate.msg_type(true, &tgi), 1);
        assert_eq!(RouteKind::Generate.msg_type(true, &vllm), 3);
        assert_eq!(RouteKind::Chat.msg_type(true, &tgi), 5);
        assert_eq!(RouteKind::Chat.msg_type(false, &tgi), 4);
        assert_eq!(RouteKind::Completions.msg_type(true, &tgi), 6);
        assert_eq!(RouteKind::TgiRoot.msg_type(true, &tgi), 2);
        assert_eq!(RouteKind::Native.msg_type(true, &tgi), 8);
        assert_eq!(RouteKind::TritonInfer.msg_type(true, &tgi), 10);
    }

    #[test]
    fn several_choices() {
        assert!(wants_several_choices(&json!({"n": 2})));
        assert!(wants_several_choices(
            &json!({"parameters": {"best_of": 3}})
        ));
        assert!(!wants_several_choices(&json!({"n": 1})));
        assert!(!wants_several_choices(&json!({"prompt": "x"})));
    }
}
