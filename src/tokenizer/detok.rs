//! Incremental detokenization: [`Detokenizer`] turns generated token ids into text deltas for
//! streaming, such that the deltas concatenated equal the full decode.
//!
//! Technique (the prefix/read offsets of TGI and vLLM): keep a small window of ids. Its first
//! part (up to the read offset) was already turned into text; decode the window with and without
//! the new ids and emit the difference. Decoding from a window start, not from the first token,
//! keeps the cost per token constant, and comparing two decodes of the same start cancels
//! decoder effects on the first token (SentencePiece dropping a leading space).
//!
//! A window whose text ends in U+FFFD may end inside a multi-byte UTF-8 character split over
//! several byte tokens: it is held back until the next token completes the character or proves
//! it invalid; [`Detokenizer::finish`] flushes it. With a plain `ByteLevel` decoder (a lossy
//! UTF-8 decode) only the last character is held, as nothing before it can change; other
//! decoders (SentencePiece `ByteFallback` turns a whole invalid byte run into U+FFFDs) hold the
//! whole pending text. If more than [`MAX_PENDING`] tokens pile up without a clean end (garbage
//! output), the window is flushed anyway, so the cost per token stays bounded; only in that
//! pathological case may the stream differ from the full decode.

use super::Tokenizer;

/// Most tokens kept waiting for a complete character before the window is forced out.
pub const MAX_PENDING: usize = 24;

/// How many prompt tokens [`Detokenizer::with_prompt`] uses as leading context.
const PROMPT_CONTEXT: usize = 5;

const REPLACEMENT: char = '\u{FFFD}';

/// Streaming decoder of one sequence.
#[derive(Debug, Clone)]
pub struct Detokenizer {
    tok: Tokenizer,
    skip_special_tokens: bool,
    /// `window[..read]` is context whose text is already out; `window[read..]` is pending.
    window: Vec<u32>,
    read: usize,
    /// Byte length of the text of `window[..read]`.
    prefix_len: usize,
    /// Bytes of the pending text already emitted (everything before a held-back character).
    emitted: usize,
}

impl Detokenizer {
    /// A detokenizer for generated ids decoded on their own.
    pub fn new(tok: Tokenizer, skip_special_tokens: bool) -> Detokenizer {
        Detokenizer {
            tok,
            skip_special_tokens,
            window: Vec::new(),
            read: 0,
            prefix_len: 0,
            emitted: 0,
        }
    }

    /// A detokenizer whose first window starts with the last few prompt ids, so the first
    /// generated token is decoded in context (a SentencePiece leading space is kept, as in the
    /// text of prompt + completion). The prompt's own text is not emitted.
    pub fn with_prompt(
        tok: Tokenizer,
        skip_special_tokens: bool,
        prompt_ids: &[u32],
    ) -> Detokenizer {
        let mut d = Detokenizer::new(tok, skip_special_tokens);
        let tail = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT)..];
        let text = d.decode(tail);
        // A prompt ending inside a character gives no clean starting point: start bare.
        if !text.ends_with(REPLACEMENT) {
            d.window = tail.to_vec();
            d.read = tail.len();
            d.prefix_len = text.len();
        }
        d
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Decoding known ids does not fail for the decoders in use; if it ever does, the text
        // is held back rather than guessed, and `finish` retries.
        self.tok
            .decode(ids, self.skip_special_tokens)
            .unwrap_or_default()
    }

    /// Adds one generated id; returns the text that became final with it (often empty while a
    /// character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.window.push(id);
        let text = self.decode(&self.window);
        let start = self.prefix_len + self.emitted;
        if text.ends_with(REPLACEMENT) {
            if self.window.len() - self.read > MAX_PENDING {
                let out = slice_from(&text, start);
                self.advance();
                return out;
            }
            if !self.tok.lossy_utf8_decoder() {
                return String::new();
            }
            // Everything before the last character is final.
            let end = text.len() - REPLACEMENT.len_utf8();
            match text.get(start..end) {
                Some(s) if !s.is_empty() => {
                    self.emitted += s.len();
                    s.to_string()
                }
                _ => String::new(),
            }
        } else if text.len() > start {
            let out = slice_from(&text, start);
            self.advance();
            out
        } else {
            // Nothing new (a skipped special token): keep the window so the next token is
            // still decoded in the same context.
            if self.window.len() - self.read > MAX_PENDING {
                self.advance();
            }
            String::new()
        }
    }

    /// Text still held back (an incomplete character at the end); call when generation ends.
    /// The detokenizer is empty afterwards.
    pub fn finish(&mut self) -> String {
        let text = self.decode(&self.window);
        let out = slice_from(&text, self.prefix_len + self.emitted);
        self.window.clear();
        self.read = 0;
        self.prefix_len = 0;
        self.emitted = 0;
        out
    }

    /// Ids currently decoded per push (context + pending).
    #[cfg(test)]
    pub(crate) fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Makes the pending ids the new context.
    fn advance(&mut self) {
        self.window.drain(..self.read);
        self.read = self.window.len();
        self.prefix_len = self.decode(&self.window).len();
        self.emitted = 0;
    }
}

/// `text[start..]`, or empty when `start` is past the end or not on a character boundary.
fn slice_from(text: &str, start: usize) -> String {
    text.get(start..).unwrap_or_default().to_string()
}
