//! Authentication of the control plane between edge and SFUs (plain HTTP in both directions).
//!
//! Each request carries `x-edgemeet-signature: t=<unix ms>,v1=<hex HMAC-SHA256>` over
//! `"{t}\n{METHOD}\n{path}\n{body}"` with a secret shared by the edge and its SFUs. Requests older or
//! newer than [`MAX_SKEW_MS`] are refused, which bounds replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::Millis;

pub const SIGNATURE_HEADER: &str = "x-edgemeet-signature";
/// How far a signed request's time may be from the verifier's clock.
pub const MAX_SKEW_MS: u64 = 30_000;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlAuthError {
    #[error("missing {SIGNATURE_HEADER} header")]
    Missing,
    #[error("{SIGNATURE_HEADER} header is malformed (want t=<ms>,v1=<hex>)")]
    Malformed,
    #[error("signed request is {0} ms away from this server's clock")]
    Stale(u64),
    #[error("signature does not verify")]
    BadSignature,
    #[error("control secret is shorter than 32 bytes")]
    WeakSecret,
}

fn mac(
    secret: &[u8],
    t: Millis,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HmacSha256, ControlAuthError> {
    if secret.len() < 32 {
        return Err(ControlAuthError::WeakSecret);
    }
    let mut m = HmacSha256::new_from_slice(secret).map_err(|_| ControlAuthError::WeakSecret)?;
    m.update(t.to_string().as_bytes());
    m.update(b"\n");
    m.update(method.to_ascii_uppercase().as_bytes());
    m.update(b"\n");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(body);
    Ok(m)
}

/// The header value for a request sent at `now`.
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    now: Millis,
) -> Result<String, ControlAuthError> {
    let tag = mac(secret, now, method, path, body)?
        .finalize()
        .into_bytes();
    Ok(format!("t={now},v1={}", hex::encode(tag)))
}

/// Checks a request's signature header at time `now`.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now: Millis,
) -> Result<(), ControlAuthError> {
    let header = header.ok_or(ControlAuthError::Missing)?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (t, v1) = t.zip(v1).ok_or(ControlAuthError::Malformed)?;
    let skew = now.abs_diff(t);
    if skew > MAX_SKEW_MS {
        return Err(ControlAuthError::Stale(skew));
    }
    mac(secret, t, method, path, body)?
        .verify_slice(&v1)
        .map_err(|_| ControlAuthError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"control-secret-control-secret-32";

    #[test]
    fn signed_requests_verify() {
        let h = sign(S, "post", "/api/sfu/heartbeat", b"{}", 1000).unwrap();
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(
            verify(
                S,
                Some(&h),
                "POST",
                "/api/sfu/heartbeat",
                b"{}",
                1000 + MAX_SKEW_MS
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_is_detected() {
        let h = sign(S, "POST", "/a", b"{\"load\":1}", 1000).unwrap();
        assert_eq!(
            verify(S, Some(&h), "POST", "/a", b"{\"load\":9}", 1000),
            Err(ControlAuthError::BadSignature)
        );
        assert_eq!(
            verify(S, Some(&h), "POST", "/b", b"{\"load\":1}", 1000),
            Err(ControlAuthError::BadSignature)
        );
        assert_eq!(
            verify(S, Some(&h), "GET", "/a", b"{\"load\":1}", 1000),
            Err(ControlAuthError::BadSignature)
        );
        let other = b"another-secret-another-secret-32";
        assert_eq!(
            verify(other, Some(&h), "POST", "/a", b"{\"load\":1}", 1000),
            Err(ControlAuthError::BadSignature)
        );
        // Moving the timestamp invalidates the MAC too.
        let moved = h.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(S, Some(&moved), "POST", "/a", b"{\"load\":1}", 1000),
            Err(ControlAuthError::BadSignature)
        );
    }

    #[test]
    fn stale_missing_and_malformed_headers_are_refused() {
        let h = sign(S, "POST", "/a", b"", 1000).unwrap();
        assert_eq!(
            verify(S, Some(&h), "POST", "/a", b"", 1000 + MAX_SKEW_MS + 1),
            Err(ControlAuthError::Stale(MAX_SKEW_MS + 1))
        );
        assert_eq!(
            verify(S, None, "POST", "/a", b"", 1000),
            Err(ControlAuthError::Missing)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert_eq!(
                verify(S, Some(bad), "POST", "/a", b"", 1000),
                Err(ControlAuthError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert_eq!(
            sign(b"short", "POST", "/", b"", 0),
            Err(ControlAuthError::WeakSecret)
        );
    }
}
