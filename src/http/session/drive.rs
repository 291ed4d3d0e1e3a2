//! Driving generations to their end, for every flavour: [`fold`] collects a non-streaming
//! reply of one generation; [`merged`] interleaves the pieces of several (OpenAI's `n`
//! choices); [`stream`] is the one streaming driver: on its own task it turns each piece into
//! the flavour's frames ([`Frames`]) and stops, which cancels the requests, as soon as the
//! client goes away or a generation fails.

use super::{GenError, Generation, Outcome, Piece, TokenPiece};
use crate::http::sse::SseSender;
use futures_util::stream::{self, BoxStream, StreamExt};

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

/// A piece (or the error that ended a generation) and the slot of its generation.
pub type Item = (usize, Result<Piece, GenError>);

/// The pieces of every generation in `gens` as they come, tagged with the generation's index
/// in `gens`. Each generation's part ends after its last piece or error; dropping the stream
/// drops every generation, which cancels their engine requests.
pub fn merged(gens: Vec<Generation>) -> BoxStream<'static, Item> {
    let streams = gens.into_iter().enumerate().map(|(slot, g)| {
        stream::unfold(Some(g), move |g| async move {
            let mut g = g?;
            let item = g.next().await?;
            let done = matches!(item, Ok(Piece::End(_)) | Err(_));
            Some(((slot, item), (!done).then_some(g)))
        })
        .boxed()
    });
    stream::select_all(streams).boxed()
}

/// What a streaming flavour sees: a piece, or the error that ended the stream.
pub enum Step<'a> {
    Piece(&'a Piece),
    Failed(GenError),
}

/// How a flavour frames its stream. Frames are sent as they are (already framed: `data:
/// ...\n\n`, NUL-terminated JSON, ...).
pub trait Frames: Send + 'static {
    /// Frames before the first piece (OpenAI's opening chunks).
    fn opening(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// The frames of one step of the generation in `slot`. Nothing is sent after the frames
    /// of a [`Step::Failed`].
    fn step(&mut self, slot: usize, step: Step<'_>) -> Vec<String>;

    /// Frames after every generation ended (OpenAI's usage chunk and `data: [DONE]`).
    fn closing(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// [`Frames`] of a single-generation flavour: a closure over each step, nothing before or
/// after.
pub struct PerStep<F>(pub F);

impl<F> Frames for PerStep<F>
where
    F: FnMut(Step<'_>) -> Vec<String> + Send + 'static,
{
    fn step(&mut self, _slot: usize, step: Step<'_>) -> Vec<String> {
        (self.0)(step)
    }
}

/// Streams `gens` to `tx` on a new task, framed by `frames` (see [`Frames`]).
pub fn stream(gens: Vec<Generation>, tx: SseSender, mut frames: impl Frames) {
    let mut items = merged(gens);
    tokio::spawn(async move {
        if !send(&tx, frames.opening()).await {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = items.next() => next,
            };
            let Some((slot, item)) = next else {
                break;
            };
            let (out, failed) = match item {
                Ok(p) => (frames.step(slot, Step::Piece(&p)), false),
                Err(e) => (frames.step(slot, Step::Failed(e)), true),
            };
            if !send(&tx, out).await || failed {
                return;
            }
        }
        send(&tx, frames.closing()).await;
    });
}

/// Sends `frames` in order; false when the client is gone.
async fn send(tx: &SseSender, frames: Vec<String>) -> bool {
    for f in frames {
        if !tx.send_raw(f).await {
            return false;
        }
    }
    true
}
