//! rustls server configurations per plane: TLS 1.2/1.3 only, mutual TLS against the configured
//! CAs, CRLs honoured, encrypted private keys, RSA keys under 3072 bits refused.
