//! Binding a token to the request in hand: the workload presenting it (its client
//! certificate, RFC 8705) and the task it works on.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// `base64url(SHA-256(DER))` of the leaf certificate Envoy forwards as URL-encoded PEM
/// (`attributes.source.certificate`), the form of `cnf.x5t#S256`.
pub fn certificate_thumbprint(url_encoded_pem: &str) -> Option<String> {
    pem_thumbprint(&percent_decode(url_encoded_pem)?)
}

/// `base64url(SHA-256(DER))` of the first certificate in `pem`.
pub fn pem_thumbprint(pem: &str) -> Option<String> {
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(b64).ok()?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_the_der_inside_url_encoded_pem() {
        let der = b"not really a certificate, but DER is just bytes";
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(der)
        );
        let encoded: String = pem
            .bytes()
            .map(|b| match b {
                b'\n' => "%0A".to_owned(),
                b'+' => "%2B".to_owned(),
                b'/' => "%2F".to_owned(),
                b'=' => "%3D".to_owned(),
                b' ' => "%20".to_owned(),
                _ => (b as char).to_string(),
            })
            .collect();
        assert_eq!(
            certificate_thumbprint(&encoded),
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
        );
        assert_eq!(certificate_thumbprint(""), None);
        assert_eq!(certificate_thumbprint("%ZZ"), None);
    }
}
