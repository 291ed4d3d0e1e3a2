//! Private keys from PEM: clear PKCS#8/PKCS#1/SEC1, encrypted PKCS#8, and traditional OpenSSL
//! `Proc-Type: 4,ENCRYPTED` keys, with the passphrase from a password file.
