//! Time-limited TURN credentials in coturn's REST-API form (`use-auth-secret`): the username is
//! `<expiry unix seconds>:<who>`, the password base64(HMAC-SHA1(shared secret, username)). The
//! edge hands them out; coturn checks them with the same secret; nothing is stored anywhere.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

/// Longest life of a credential (the bound; browsers keep an allocation alive with it).
pub const MAX_TTL_SECS: u64 = 3600;

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Credentials for `who`, valid from `now_secs` for `ttl_secs` (at most [`MAX_TTL_SECS`]).
pub fn credentials(
    secret: &[u8],
    urls: Vec<String>,
    who: &str,
    now_secs: u64,
    ttl_secs: u64,
) -> IceServer {
    let username = format!("{}:{who}", now_secs + ttl_secs.min(MAX_TTL_SECS));
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    IceServer {
        urls,
        username: Some(username),
        credential: Some(credential),
    }
}

/// `TURN_URLS` as configured: comma-separated `turn:`/`turns:` URLs; anything else is dropped.
pub fn parse_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_coturns_rest_api_scheme() {
        // Expected value computed independently (Python: hmac.new(secret, user, sha1), base64).
        let s = credentials(
            b"north-secret",
            vec!["turn:127.0.0.1:3478".into()],
            "alice",
            1_700_000_000,
            3600,
        );
        assert_eq!(s.username.as_deref(), Some("1700003600:alice"));
        assert_eq!(
            s.credential.as_deref(),
            Some("Ji4axghh2/aljHmsPgH9mtDGVLw=")
        );
    }

    #[test]
    fn lifetime_is_capped_at_an_hour() {
        let s = credentials(b"k", vec![], "bob", 100, 86_400);
        assert_eq!(s.username.as_deref(), Some("3700:bob"));
    }

    #[test]
    fn only_turn_urls_are_kept() {
        assert_eq!(
            parse_urls("turn:a:3478?transport=udp, turn:a:3478?transport=tcp,stun:x,http://evil"),
            vec![
                "turn:a:3478?transport=udp".to_string(),
                "turn:a:3478?transport=tcp".to_string()
            ]
        );
        assert!(parse_urls("").is_empty());
    }
}
