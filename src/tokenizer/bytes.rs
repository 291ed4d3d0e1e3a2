//! Raw bytes of a single token (the logprobs `bytes` field), which a lossy UTF-8 decode of the
//! token cannot give back: a byte-level BPE token holding one byte of a multi-byte character
//! decodes to U+FFFD, but its bytes are the byte itself.
//!
//! Two vocabularies spell bytes in token strings:
//! - byte-level BPE (GPT-2, LLaMA-3, Qwen): every byte is written as one printable character
//!   (the GPT-2 byte↔unicode table: printable Latin-1 bytes stand for themselves, the other 68
//!   bytes map to U+0100.. in byte order);
//! - SentencePiece byte fallback: a token `<0xAB>` stands for the byte 0xAB.

use std::sync::OnceLock;

use tokenizers::DecoderWrapper;

/// How the tokenizer's decoder turns token strings into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteDecoding {
    /// A `ByteLevel` decoder: map each character through the byte-level table.
    ByteLevel,
    /// A `ByteFallback` decoder: `<0xAB>` tokens are single bytes.
    ByteFallback,
    /// Anything else: the token's decoded text is all there is.
    Text,
}

impl ByteDecoding {
    /// Looks at the decoder (or the decoders of a `Sequence`).
    pub(crate) fn detect(decoder: Option<&DecoderWrapper>) -> ByteDecoding {
        fn find(d: &DecoderWrapper) -> Option<ByteDecoding> {
            match d {
                DecoderWrapper::ByteLevel(_) => Some(ByteDecoding::ByteLevel),
                DecoderWrapper::ByteFallback(_) => Some(ByteDecoding::ByteFallback),
                DecoderWrapper::Sequence(seq) => seq.get_decoders().iter().find_map(find),
                _ => None,
            }
        }
        decoder.and_then(find).unwrap_or(ByteDecoding::Text)
    }

    /// The bytes of the raw token string `token`, or `None` when this decoding does not say
    /// (the caller then uses the decoded text).
    pub(crate) fn raw_bytes(self, token: &str) -> Option<Vec<u8>> {
        match self {
            ByteDecoding::ByteLevel => {
                // Like the decoder: a token with a character outside the table (an added token
                // such as "<think> ") stands for its own UTF-8.
                let mapped: Option<Vec<u8>> = token.chars().map(byte_of_char).collect();
                Some(mapped.unwrap_or_else(|| token.as_bytes().to_vec()))
            }
            ByteDecoding::ByteFallback => parse_byte_token(token).map(|b| vec![b]),
            ByteDecoding::Text => None,
        }
    }
}

/// True for the bytes the byte-level table writes as themselves.
fn is_direct(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Byte-level table, inverse direction: index `c - 0x100` for the shifted characters.
fn shifted_bytes() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=255u8).filter(|b| !is_direct(*b)).collect())
}

/// The byte that byte-level character `c` stands for.
fn byte_of_char(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if let Ok(b) = u8::try_from(cp) {
        return is_direct(b).then_some(b);
    }
    let idx = usize::try_from(cp.checked_sub(0x100)?).ok()?;
    shifted_bytes().get(idx).copied()
}

/// `<0xAB>` → 0xAB.
fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_round_trips_all_bytes() {
        // The forward table, written out from its definition, must invert.
        let mut n = 0u32;
        for b in 0..=255u8 {
            let c = if is_direct(b) {
                char::from(b)
            } else {
                let c = char::from_u32(0x100 + n).unwrap();
                n += 1;
                c
            };
            assert_eq!(byte_of_char(c), Some(b), "byte {b:#x}");
        }
        assert_eq!(n, 68);
        assert_eq!(byte_of_char('Ġ'), Some(b' '));
        assert_eq!(byte_of_char('Ċ'), Some(b'\n'));
        assert_eq!(byte_of_char(' '), None);
        assert_eq!(byte_of_char('你'), None);
    }

    #[test]
    fn raw_bytes_by_kind() {
        assert_eq!(
            ByteDecoding::ByteLevel.raw_bytes("Ġhi"),
            Some(b" hi".to_vec())
        );
        assert_eq!(ByteDecoding::ByteLevel.raw_bytes("É"), Some(vec![0xC9]));
        assert_eq!(
            ByteDecoding::ByteLevel.raw_bytes("a b"),
            Some(b"a b".to_vec())
        );
        assert_eq!(
            ByteDecoding::ByteFallback.raw_bytes("<0xE4>"),
            Some(vec![0xE4])
        );
        assert_eq!(ByteDecoding::ByteFallback.raw_bytes("▁hi"), None);
        assert_eq!(ByteDecoding::ByteFallback.raw_bytes("<0xZZ>"), None);
        assert_eq!(ByteDecoding::Text.raw_bytes("x"), None);
    }
}
