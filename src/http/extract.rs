//! What every business handler starts with, done once: the [`Body`] extractor reads the body,
//! parses it as a JSON object ([`parse_object`], same limits and messages) and takes the
//! request's `stopInfer` keys; a bad body is rejected in the flavour's error style. Inside a
//! handler, [`Error`] is the flavour's [`ApiError`]: field errors ([`FieldError`]) and
//! generation errors ([`GenError`]) convert to it with `?`, in the flavour's style, so typed
//! request structs read their fields through [`crate::http::fields::Fields`] with one
//! conversion point instead of a `map_err` per field.
//!
//! The flavour is a marker type ([`OpenAi`], [`MindIe`]) with an associated const style (enum
//! const generics are unstable).

use crate::http::error::{ApiError, ErrorStyle};
use crate::http::fields::{parse_object, FieldError};
use crate::http::request_keys;
use crate::http::session::GenError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::marker::PhantomData;

/// A wire flavour's error style.
pub trait Flavour: Send + Sync + 'static {
    const STYLE: ErrorStyle;
}

/// OpenAI's `/v1/...` inference routes: OpenAI's error object.
pub struct OpenAi;

impl Flavour for OpenAi {
    const STYLE: ErrorStyle = ErrorStyle::OpenAi;
}

/// Every other route (TGI, vLLM legacy, MindIE-native, Triton, tokenizer): MindIE's shape.
pub struct MindIe;

impl Flavour for MindIe {
    const STYLE: ErrorStyle = ErrorStyle::MindIe;
}

/// An error reply of flavour `F`: what handlers of that flavour return. Field and generation
/// errors become it with `?` in `F`'s style; an [`ApiError`] built elsewhere keeps its own.
pub struct Error<F> {
    pub api: ApiError,
    flavour: PhantomData<F>,
}

impl<F> Error<F> {
    fn of(api: ApiError) -> Self {
        Self {
            api,
            flavour: PhantomData,
        }
    }
}

impl<F> std::fmt::Debug for Error<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.api.fmt(f)
    }
}

impl<F> From<ApiError> for Error<F> {
    fn from(api: ApiError) -> Self {
        Self::of(api)
    }
}

impl<F: Flavour> From<FieldError> for Error<F> {
    fn from(e: FieldError) -> Self {
        Self::of(e.into_api(F::STYLE))
    }
}

impl<F: Flavour> From<GenError> for Error<F> {
    fn from(e: GenError) -> Self {
        Self::of(e.into_api(F::STYLE))
    }
}

impl<F: Flavour> From<crate::tokenizer::TokenizerError> for Error<F> {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        GenError::from(e).into()
    }
}

impl<F> IntoResponse for Error<F> {
    fn into_response(self) -> Response {
        self.api.into_response()
    }
}

/// What a handler of flavour `F` returns.
pub type Reply<F> = Result<Response, Error<F>>;

/// Why [`Body`] refused a request, in the flavour's error style: the body could not be read
/// (axum's status, e.g. 413 or 400, with its reason as the message) or was not a JSON object
/// (422).
#[derive(Debug)]
pub struct Rejection(pub ApiError);

impl Rejection {
    fn read<F: Flavour>(e: BytesRejection) -> Self {
        Rejection(
            ApiError::new(
                e.status(),
                format!("failed to read the request body: {}", e.body_text()),
            )
            .style(F::STYLE),
        )
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// A request body parsed as a JSON object, with the names the request can be cancelled by
/// (`stopInfer`, see [`request_keys`]).
pub struct Body<F> {
    pub map: Map<String, Value>,
    pub keys: Vec<String>,
    flavour: PhantomData<F>,
}

impl<S: Send + Sync, F: Flavour> FromRequest<S> for Body<F> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let keys = request_keys(&parts);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(Rejection::read::<F>)?;
        let map = parse_object(&bytes).map_err(|e| Rejection(e.into_api(F::STYLE)))?;
        Ok(Self {
            map,
            keys,
            flavour: PhantomData,
        })
    }
}
