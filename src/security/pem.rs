//! A small PEM reader that keeps RFC 1421 headers (`Proc-Type`, `DEK-Info`), which the
//! traditional OpenSSL encrypted key format needs and general PEM readers drop or reject.
//! Owns base64 decoding of PEM bodies; never panics on malformed input.

/// One `-----BEGIN <label>-----` ... `-----END <label>-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, e.g. `RSA PRIVATE KEY`.
    pub label: String,
    /// `Name: value` header lines before the body, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub der: Vec<u8>,
}

impl PemBlock {
    /// The value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a PEM text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("PEM block `{0}` has no END line")]
    Unterminated(String),
    #[error("PEM block `{label}` has invalid base64 on line {line}")]
    BadBase64 { label: String, line: usize },
}

/// A block being read: label, headers, base64 body, line number of its BEGIN marker.
type Open = (String, Vec<(String, String)>, String, usize);

/// All PEM blocks in `text`, in order. Text outside blocks is ignored.
pub fn parse(text: &[u8]) -> Result<Vec<PemBlock>, PemError> {
    let text = String::from_utf8_lossy(text);
    let mut blocks = Vec::new();
    let mut current: Option<Open> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        match current.as_mut() {
            None => {
                if let Some(label) = marker(line, "BEGIN") {
                    current = Some((label.to_string(), Vec::new(), String::new(), idx + 1));
                }
            }
            Some((label, headers, body, first_line)) => {
                if let Some(end) = marker(line, "END") {
                    if end == label {
                        let der =
                            decode_base64(body.as_bytes()).ok_or_else(|| PemError::BadBase64 {
                                label: label.clone(),
                                line: *first_line,
                            })?;
                        blocks.push(PemBlock {
                            label: std::mem::take(label),
                            headers: std::mem::take(headers),
                            der,
                        });
                        current = None;
                    }
                    continue;
                }
                match line.split_once(':') {
                    Some((name, value)) if body.is_empty() => {
                        headers.push((name.trim().to_string(), value.trim().to_string()))
                    }
                    _ => body.push_str(line),
                }
            }
        }
    }
    match current {
        Some((label, ..)) => Err(PemError::Unterminated(label)),
        None => Ok(blocks),
    }
}

/// The label of a `-----BEGIN x-----` / `-----END x-----` line.
fn marker<'a>(line: &'a str, which: &str) -> Option<&'a str> {
    let rest = line.strip_prefix("-----")?.strip_prefix(which)?;
    let rest = rest.strip_prefix(' ')?;
    rest.strip_suffix("-----")
}

/// Standard base64 (RFC 4648, `=` padding optional, whitespace ignored); `None` if invalid.
pub fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 || bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrips_known_values() {
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert_eq!(decode_base64(b"Zg==").unwrap(), b"f");
        assert_eq!(decode_base64(b"Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64(b"Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64(b"Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode_base64(b"Zm9v\nYmFy").unwrap(), b"foobar");
        assert!(decode_base64(b"Z").is_none());
        assert!(decode_base64(b"Zm9v!").is_none());
        assert!(decode_base64(b"Zg==Zg").is_none());
    }

    #[test]
    fn headers_and_blocks() {
        let text = b"junk\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
            DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nZm9v\nYmFy\n\
            -----END RSA PRIVATE KEY-----\n-----BEGIN X-----\r\nZg==\r\n-----END X-----\r\n";
        let blocks = parse(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "RSA PRIVATE KEY");
        assert_eq!(blocks[0].header("proc-type"), Some("4,ENCRYPTED"));
        assert_eq!(
            blocks[0].header("DEK-Info"),
            Some("AES-256-CBC,00112233445566778899AABBCCDDEEFF")
        );
        assert_eq!(blocks[0].der, b"foobar");
        assert_eq!(blocks[1].der, b"f");
    }

    #[test]
    fn garbage_never_panics() {
        assert!(parse(b"-----BEGIN A-----\nZm9v").is_err());
        assert!(parse(b"-----BEGIN A-----\n%%%\n-----END A-----").is_err());
        assert!(parse(b"\xff\xfe\x00").unwrap().is_empty());
        assert!(parse(b"-----BEGIN -----\n-----END -----").is_ok());
    }
}
