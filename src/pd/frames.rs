//! The `/dresult` frame format (SPEC-PD §2.6): what a decode instance writes to the
//! Coordinator, and the parser the Coordinator applies to it.
//!
//! A frame is `reqId:<req-id>\0<keyword>:<payload>\0`; the heartbeat is just `ka:heartbeat\0`.
//! MindIE-Motor's parser splits a body chunk at NUL, takes the text before the first `:` as
//! the keyword, keeps `reqId` for the following piece *of the same chunk*, and ignores pieces
//! with an empty payload or without a NUL. So a frame must be written whole in one chunk
//! ([`super::dresult`] does), and two rules bind whoever builds frames:
//!
//! - **No NUL inside a payload.** [`encode`] *strips* NUL bytes from the request id and the
//!   payload instead of refusing the frame: JSON text (every `data:`/`lastData:`/`retry:`
//!   payload) cannot hold a raw NUL (serde_json writes `\u0000`), so only a plain-text
//!   `error:` message could carry one, and losing that byte is harmless, while refusing
//!   would turn a cosmetic problem into a request that never ends at the Coordinator.
//! - **No empty payload.** Motor ignores `lastData:` with nothing after the colon, so the
//!   request would never finish there; a last frame must carry the final chunk or body.
//!
//! Motor also skips a *run* of `:` after the keyword, so a payload that starts with `:` loses
//! its leading colons there; client-format chunks never start with one.

use axum::body::Bytes;

/// The request id of frames that are about the connection, not a request (`close:`).
pub const CONNECTION_REQ_ID: &str = "0xffffffffffffffff";

/// The exact heartbeat frame.
pub const HEARTBEAT: &[u8] = b"ka:heartbeat\0";

/// The payload of the `close:` frame sent to a reader that a newer `GET /dresult` replaces.
pub const REPLACED: &str = "new connection is to established, close the old one.";

/// What a frame says about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// One client-format chunk (stream: `data: {...}\n\n`).
    Data,
    /// The last chunk (stream) or the whole JSON body (non-stream); the request is done.
    LastData,
    /// Plain-text failure; the request is done.
    Error,
    /// A recompute body for the Coordinator to resend to a prefill instance.
    Retry,
    /// Heartbeat; carries no request.
    Ka,
    /// The connection is being closed (with [`CONNECTION_REQ_ID`]).
    Close,
}

impl FrameKind {
    /// The keyword on the wire, without the colon.
    pub fn keyword(self) -> &'static str {
        match self {
            FrameKind::Data => "data",
            FrameKind::LastData => "lastData",
            FrameKind::Error => "error",
            FrameKind::Retry => "retry",
            FrameKind::Ka => "ka",
            FrameKind::Close => "close",
        }
    }

    /// The kind of a wire keyword (case-sensitive, as Motor compares).
    pub fn from_keyword(keyword: &str) -> Option<Self> {
        Some(match keyword {
            "data" => FrameKind::Data,
            "lastData" => FrameKind::LastData,
            "error" => FrameKind::Error,
            "retry" => FrameKind::Retry,
            "ka" => FrameKind::Ka,
            "close" => FrameKind::Close,
            _ => return None,
        })
    }
}

/// One `/dresult` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The Coordinator's `req-id`; empty for heartbeats.
    pub req_id: String,
    pub kind: FrameKind,
    pub payload: String,
}

impl Frame {
    pub fn new(req_id: impl Into<String>, kind: FrameKind, payload: impl Into<String>) -> Self {
        Self {
            req_id: req_id.into(),
            kind,
            payload: payload.into(),
        }
    }

    pub fn data(req_id: impl Into<String>, payload: impl Into<String>) -> Self {
        Self::new(req_id, FrameKind::Data, payload)
    }

    pub fn last_data(req_id: impl Into<String>, payload: impl Into<String>) -> Self {
        Self::new(req_id, FrameKind::LastData, payload)
    }

    pub fn error(req_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(req_id, FrameKind::Error, message)
    }

    pub fn retry(req_id: impl Into<String>, body: impl Into<String>) -> Self {
        Self::new(req_id, FrameKind::Retry, body)
    }

    /// `ka:heartbeat`.
    pub fn heartbeat() -> Self {
        Self::new("", FrameKind::Ka, "heartbeat")
    }

    /// `close:<reason>` for the connection ([`CONNECTION_REQ_ID`]).
    pub fn close(reason: impl Into<String>) -> Self {
        Self::new(CONNECTION_REQ_ID, FrameKind::Close, reason)
    }
}

fn push_without_nul(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().filter(|&b| b != 0));
}

/// The bytes of one frame, to be written as one body chunk. NUL bytes in the request id or
/// payload are dropped (see the module docs); a [`FrameKind::Ka`] frame is always exactly
/// [`HEARTBEAT`].
pub fn encode(frame: &Frame) -> Bytes {
    if frame.kind == FrameKind::Ka {
        return Bytes::from_static(HEARTBEAT);
    }
    let keyword = frame.kind.keyword();
    let mut out = Vec::with_capacity(8 + frame.req_id.len() + keyword.len() + frame.payload.len());
    out.extend_from_slice(b"reqId:");
    push_without_nul(&mut out, &frame.req_id);
    out.push(0);
    out.extend_from_slice(keyword.as_bytes());
    out.push(b':');
    push_without_nul(&mut out, &frame.payload);
    out.push(0);
    Bytes::from(out)
}

/// Parses the frames in `buf` as the Coordinator reads them: pieces end at NUL, the keyword
/// is the text before the first `:`, `reqId:` pieces name the request of the next piece.
/// Pieces without a `:`, with an empty payload or an unknown keyword are skipped. Returns the
/// frames and how many bytes were consumed; the rest (a piece without its NUL yet, or a
/// `reqId:` piece whose frame has not arrived) must be passed again with more bytes. Bytes
/// that are not UTF-8 are replaced (U+FFFD).
pub fn parse(buf: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut consumed = 0;
    let mut req_id: Option<String> = None;
    let mut pos = 0;
    while let Some(len) = buf[pos..].iter().position(|&b| b == 0) {
        let piece = String::from_utf8_lossy(&buf[pos..pos + len]);
        pos += len + 1;
        let Some((keyword, payload)) = piece.split_once(':') else {
            consumed = pos;
            continue;
        };
        if payload.is_empty() {
            consumed = pos;
            continue;
        }
        if keyword == "reqId" {
            // Consumed only together with the frame it names.
            req_id = Some(payload.to_string());
            continue;
        }
        if let Some(kind) = FrameKind::from_keyword(keyword) {
            frames.push(Frame::new(req_id.take().unwrap_or_default(), kind, payload));
        }
        req_id = None;
        consumed = pos;
    }
    (frames, consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_frames() {
        assert_eq!(
            &encode(&Frame::data("12ab", "data: {\"x\":1}\n\n"))[..],
            b"reqId:12ab\0data:data: {\"x\":1}\n\n\0"
        );
        assert_eq!(
            &encode(&Frame::last_data("7", "{}"))[..],
            b"reqId:7\0lastData:{}\0"
        );
        assert_eq!(
            &encode(&Frame::error("7", "Pull kv failed reversibly."))[..],
            b"reqId:7\0error:Pull kv failed reversibly.\0"
        );
        assert_eq!(
            &encode(&Frame::retry("7", "{}"))[..],
            b"reqId:7\0retry:{}\0"
        );
        assert_eq!(&encode(&Frame::heartbeat())[..], b"ka:heartbeat\0");
        // A Ka frame is the heartbeat whatever it carries.
        assert_eq!(&encode(&Frame::new("9", FrameKind::Ka, "x"))[..], HEARTBEAT);
        assert_eq!(
            &encode(&Frame::close(REPLACED))[..],
            &b"reqId:0xffffffffffffffff\0close:new connection is to established, close the old one.\0"[..]
        );
    }

    #[test]
    fn nul_in_payload_is_stripped() {
        let bytes = encode(&Frame::error("a\0b", "bad\0 input"));
        assert_eq!(&bytes[..], b"reqId:ab\0error:bad input\0");
        let (frames, used) = parse(&bytes);
        assert_eq!(used, bytes.len());
        assert_eq!(frames, vec![Frame::error("ab", "bad input")]);
    }

    #[test]
    fn round_trip() {
        let sent = vec![
            Frame::data("1", "data: {\"a\":\"b:c\"}\n\n"),
            Frame::heartbeat(),
            Frame::last_data("1", "data: [DONE]\n\n"),
            Frame::retry("2", "{\"prompt\":\"3,1,2,3,9\"}"),
            Frame::error("3", "Pull kv failed irreversibly."),
            Frame::close(REPLACED),
        ];
        let wire: Vec<u8> = sent.iter().flat_map(|f| encode(f).to_vec()).collect();
        let (got, used) = parse(&wire);
        assert_eq!(used, wire.len());
        assert_eq!(got, sent);
    }

    #[test]
    fn split_chunks_are_kept_for_the_next_call() {
        let wire: Vec<u8> = [Frame::data("1", "hello"), Frame::last_data("1", "bye")]
            .iter()
            .flat_map(|f| encode(f).to_vec())
            .collect();
        // Every split point: what is parsed first plus what the rest yields is the whole.
        for cut in 0..=wire.len() {
            let mut buf = wire[..cut].to_vec();
            let (mut frames, used) = parse(&buf);
            buf.drain(..used);
            buf.extend_from_slice(&wire[cut..]);
            let (rest, used2) = parse(&buf);
            assert_eq!(used2, buf.len(), "cut {cut}");
            frames.extend(rest);
            assert_eq!(
                frames,
                vec![Frame::data("1", "hello"), Frame::last_data("1", "bye")],
                "cut {cut}"
            );
        }
        // A reqId piece alone is not consumed; a piece without NUL neither.
        assert_eq!(parse(b"reqId:1\0"), (vec![], 0));
        assert_eq!(parse(b"reqId:1\0data:he"), (vec![], 0));
        assert_eq!(parse(b"ka:heartbeat"), (vec![], 0));
    }

    #[test]
    fn ignores_what_motor_ignores() {
        // Empty payload, no colon, unknown keyword: skipped (and consumed).
        let (frames, used) = parse(b"reqId:1\0lastData:\0junk\0reqId:2\0what:x\0\0ka:heartbeat\0");
        assert_eq!(frames, vec![Frame::heartbeat()]);
        assert_eq!(used, 52);
        // The keyword is the text before the *first* colon.
        let (frames, _) = parse(b"reqId:5\0data:data: {\"k\":\"v\"}\n\n\0");
        assert_eq!(frames[0].payload, "data: {\"k\":\"v\"}\n\n");
        assert_eq!(frames[0].req_id, "5");
    }

    #[test]
    fn keywords() {
        for k in [
            FrameKind::Data,
            FrameKind::LastData,
            FrameKind::Error,
            FrameKind::Retry,
            FrameKind::Ka,
            FrameKind::Close,
        ] {
            assert_eq!(FrameKind::from_keyword(k.keyword()), Some(k));
        }
        assert_eq!(FrameKind::from_keyword("Data"), None);
    }
}
