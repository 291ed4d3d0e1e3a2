//! Error replies. OpenAI routes (`/v1/...`) answer with OpenAI's error object so SDKs parse it;
//! every other route keeps MindIE's `{"error": msg, "error_type": type}` (SPEC §0.3).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which wire shape an error takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    MindIe,
    OpenAi,
}

impl ErrorStyle {
    /// OpenAI's shape for `/v1/...` inference routes, MindIE's elsewhere.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/chat/")
            || path.starts_with("/v1/completions")
            || path.starts_with("/v1/models")
        {
            Self::OpenAi
        } else {
            Self::MindIe
        }
    }
}

/// An error reply with its status, MindIE error type, message and optional offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub style: ErrorStyle,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            style: ErrorStyle::MindIe,
            retry_after: None,
        }
    }

    pub fn style(mut self, style: ErrorStyle) -> Self {
        self.style = style;
        self
    }

    pub fn param(mut self, field: impl Into<String>) -> Self {
        self.param = Some(field.into());
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// MindIE's `error_type` for a status (SPEC §1 errors).
    pub fn mindie_type(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "Bad Request",
            404 => "NotFoundError",
            413 => "Payload Too Large",
            422 => "Input Validation Error",
            424 => "Generation Error",
            500 => "Incomplete Generation",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }

    fn openai_type(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 | 413 | 422 => "invalid_request_error",
            404 => "not_found_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        match self.style {
            ErrorStyle::MindIe => json!({
                "error": self.message,
                "error_type": Self::mindie_type(self.status),
            }),
            ErrorStyle::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": Self::openai_type(self.status),
                    "param": self.param,
                    "code": self.status.as_u16(),
                }
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The fallback of every plane: 404 `Not Found: <path>`, in the error style of the path.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("Not Found: {}", uri.path()))
        .style(ErrorStyle::for_path(uri.path()))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e =
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad temperature").param("temperature");
        assert_eq!(
            e.body(),
            json!({"error": "bad temperature", "error_type": "Input Validation Error"})
        );
        let o = e.style(ErrorStyle::OpenAi).body();
        assert_eq!(o["error"]["param"], "temperature");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(
            ErrorStyle::for_path("/v1/chat/completions"),
            ErrorStyle::OpenAi
        );
        assert_eq!(ErrorStyle::for_path("/generate"), ErrorStyle::MindIe);
    }
}
