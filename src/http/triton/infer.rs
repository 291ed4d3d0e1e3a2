//! `POST /v2/models/{m}/infer`: token ids in a UINT32 tensor (`inputs: [{name: "input0",
//! shape, datatype: "UINT32", data}]`, `outputs: [{name}]`, `parameters`) → the generated ids
//! as `outputs: [{name, shape: [1, n], datatype: "UINT32", data}]`.

use super::{request_id, ServedModel, Triton};
use crate::http::extract::{Body, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::gen_parameters::Parameters;
use crate::http::session::{drive, Serving};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

/// The single input tensor's token ids.
fn input_ids(map: &Map<String, Value>, vocab: usize) -> Result<Vec<u32>, FieldError> {
    let inputs = match map.get("inputs") {
        Some(Value::Array(a)) if a.len() == 1 => a,
        Some(Value::Array(a)) => {
            return Err(FieldError::new(
                "inputs",
                format!("must hold exactly one tensor, got {}", a.len()),
            ))
        }
        _ => {
            return Err(FieldError::new(
                "inputs",
                "is required: a list with one tensor",
            ))
        }
    };
    let Some(t) = inputs[0].as_object() else {
        return Err(FieldError::new("inputs[0]", "must be an object"));
    };
    let f = Fields::with_prefix(t, "inputs[0].");
    f.required_str("name", "is required")?;
    match f.str("datatype")? {
        Some("UINT32") => {}
        other => {
            return Err(FieldError::new(
                "inputs[0].datatype",
                format!("{other:?} is not supported: only \"UINT32\" token ids"),
            ))
        }
    }
    let shape = f
        .int_list("shape", 1, i64::from(i32::MAX))?
        .ok_or_else(|| FieldError::new("inputs[0].shape", "is required"))?;
    let data = f
        .int_list("data", 0, vocab as i64 - 1)?
        .ok_or_else(|| FieldError::new("inputs[0].data", "is required"))?;
    let ok_shape = match shape.as_slice() {
        [n] => *n as usize == data.len(),
        [1, n] => *n as usize == data.len(),
        _ => false,
    };
    if !ok_shape {
        return Err(FieldError::new(
            "inputs[0].shape",
            format!(
                "{shape:?} does not match {} data items: use [n] or [1, n]",
                data.len()
            ),
        ));
    }
    Ok(data.into_iter().map(|i| i as u32).collect())
}

/// The requested output tensor's name (one output per input).
fn output_name(map: &Map<String, Value>) -> Result<String, FieldError> {
    match map.get("outputs") {
        Some(Value::Array(a)) if a.len() == 1 => Ok(a[0]
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| FieldError::new("outputs[0].name", "is required"))?
            .to_string()),
        _ => Err(FieldError::new(
            "outputs",
            "is required: a list with one {\"name\": ...} (as many as inputs)",
        )),
    }
}

/// A checked infer request: the client's id, the input tensor's ids, the output tensor's
/// name and the `parameters`.
pub struct TritonInfer {
    pub id: Option<String>,
    pub ids: Vec<u32>,
    pub output: String,
    pub params: Parameters,
}

impl TritonInfer {
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, FieldError> {
        let id = request_id(&Fields::new(body))?;
        let vocab = inf.vocab();
        Ok(Self {
            id,
            ids: input_ids(body, vocab)?,
            output: output_name(body)?,
            params: Parameters::read(body, inf)?,
        })
    }
}

pub async fn infer(
    State(t): State<Triton>,
    ServedModel(m): ServedModel,
    body: Body<MindIe>,
) -> Reply<MindIe> {
    let inf = &t.inf;
    let TritonInfer {
        id,
        ids,
        output,
        params,
    } = TritonInfer::read(&body.map, inf)?;
    let ids = inf.fit_prompt(params.truncate_prompt(ids), "inputs[0].data")?;
    let mut keys = body.keys;
    keys.extend(id.clone());
    let g = inf.start(params.gen_request(ids), params.gen_options(keys))?;
    let folded = drive::fold(g).await?;
    let data: Vec<u32> = folded.tokens.iter().map(|t| t.id).collect();
    Ok(Json(json!({
        "id": id.unwrap_or_default(),
        "model_name": m,
        "model_version": null,
        "outputs": [{
            "name": output,
            "shape": [1, data.len()],
            "datatype": "UINT32",
            "data": data,
        }],
    }))
    .into_response())
}
