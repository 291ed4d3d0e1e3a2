//! Driving one generation to its end for the single-sequence flavours (TGI, vLLM, native,
//! Triton): [`fold`] collects a non-streaming reply; [`stream`] runs a streaming one on its own
//! task, turning each piece into the flavour's frames and stopping (which cancels the request)
//! as soon as the client goes away.

use crate::http::generation::{GenError, Generation, Outcome, Piece, TokenPiece};
use crate::http::sse::SseSender;

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The text, stop strings applied.
    pub text: String,
    /// Every generated token.
    pub tokens: Vec<TokenPiece>,
    pub outcome: Outcome,
}

/// Runs `g` to its end.
pub async fn fold(mut g: Generation) -> Result<Folded, GenError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(piece) = g.next().await {
        match piece? {
            Piece::Token(t) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Piece::Text(t) => text.push_str(&t),
            Piece::End(outcome) => {
                return Ok(Folded {
                    text,
                    tokens,
                    outcome,
                })
            }
        }
    }
    Err(GenError::Cancelled)
}

/// What a streaming flavour sees: each piece, or the error that ended the stream.
pub enum Step<'a> {
    Piece(&'a Piece),
    Failed(GenError),
}

/// Streams `g` to `tx` on a new task. `frame` turns each step into the raw frames to send
/// (already framed: `data: ...\n\n`, NUL-terminated JSON, ...); after the last piece or an
/// error, `trailer` frames are sent (e.g. `data: [DONE]`).
pub fn stream<F>(mut g: Generation, tx: SseSender, mut frame: F, trailer: Vec<String>)
where
    F: FnMut(Step<'_>) -> Vec<String> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = g.next() => next,
            };
            let Some(item) = next else {
                break;
            };
            let (frames, last) = match item {
                Ok(p) => {
                    let last = matches!(p, Piece::End(_));
                    (frame(Step::Piece(&p)), last)
                }
                Err(e) => (frame(Step::Failed(e)), true),
            };
            for f in frames {
                if !tx.send_raw(f).await {
                    return;
                }
            }
            if last {
                break;
            }
        }
        for f in trailer {
            if !tx.send_raw(f).await {
                return;
            }
        }
    });
}
