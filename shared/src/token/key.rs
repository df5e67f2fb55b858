//! Signing and verifying room tokens (HS256, algorithm pinned by the key).

use std::collections::HashSet;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use thiserror::Error;

use super::{Claims, Grants, LEEWAY_SECS};
use crate::error::ErrorCode;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token uses an algorithm this server does not accept")]
    WrongAlgorithm,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for room '{token_room}', not '{room}'")]
    WrongRoom { token_room: String, room: String },
    #[error("token grants more than its role allows")]
    GrantEscalation,
    #[error("token was revoked")]
    Revoked,
    #[error("token key is unusable: {0}")]
    BadKey(String),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::WrongRoom { .. } | TokenError::GrantEscalation | TokenError::Revoked => {
                ErrorCode::Forbidden
            }
            TokenError::BadKey(_) => ErrorCode::Internal,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// A signing/verifying key; its type fixes the algorithm.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    alg: Algorithm,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({:?}, <secret>)", self.alg)
    }
}

impl TokenKey {
    /// HS256 with a shared secret of at least 32 bytes.
    pub fn hs256(secret: &[u8]) -> Result<TokenKey, TokenError> {
        if secret.len() < 32 {
            return Err(TokenError::BadKey(format!(
                "HS256 secret is {} bytes; use at least 32",
                secret.len()
            )));
        }
        Ok(TokenKey {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            alg: Algorithm::HS256,
        })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.encoding)
            .map_err(|e| TokenError::BadKey(e.to_string()))
    }

    /// Verifies a token for `room` at time `now_secs`. `revoked` says whether a `jti` was revoked.
    pub fn verify(
        &self,
        token: &str,
        room: &str,
        now_secs: u64,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg` names something jsonwebtoken has no variant for, e.g. "none".
            _ if token_alg_is_none(token) => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed(e.to_string()),
        })?;
        if header.alg != self.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(self.alg);
        // Time is checked below with the caller's clock; nothing here reads one.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::WrongAlgorithm
                }
                _ => TokenError::Malformed(e.to_string()),
            },
        )?;
        let claims = data.claims;
        if now_secs > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if now_secs.saturating_add(LEEWAY_SECS) < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if claims.room != room {
            return Err(TokenError::WrongRoom {
                token_room: claims.room,
                room: room.to_string(),
            });
        }
        if !claims.grants.is_subset_of(&Grants::max_for(claims.role)) {
            return Err(TokenError::GrantEscalation);
        }
        if revoked(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }
}

fn token_alg_is_none(token: &str) -> bool {
    use base64::Engine;
    token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|v| {
            v.get("alg")
                .and_then(|a| a.as_str())
                .map(|a| a.eq_ignore_ascii_case("none"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Role;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "p1".into(),
            name: "Ada".into(),
            room: "standup".into(),
            role: Role::Participant,
            grants: Grants::max_for(Role::Participant),
            sfu: None,
            exp: NOW + 600,
            nbf: NOW,
            iat: NOW,
            jti: "j1".into(),
            waiting: false,
            bid: None,
            door: 0,
            admitted: false,
        }
    }

    fn key() -> TokenKey {
        TokenKey::hs256(SECRET).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_good_token_verifies() {
        let t = key().sign(&claims()).unwrap();
        assert_eq!(
            key().verify(&t, "standup", NOW + 1, |_| false).unwrap(),
            claims()
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            TokenKey::hs256(b"short"),
            Err(TokenError::BadKey(_))
        ));
    }

    #[test]
    fn expiry_and_not_before_respect_the_leeway() {
        let t = key().sign(&claims()).unwrap();
        assert!(key()
            .verify(&t, "standup", NOW + 600 + LEEWAY_SECS, |_| false)
            .is_ok());
        assert_eq!(
            key().verify(&t, "standup", NOW + 601 + LEEWAY_SECS, |_| false),
            Err(TokenError::Expired)
        );
        assert!(key()
            .verify(&t, "standup", NOW - LEEWAY_SECS, |_| false)
            .is_ok());
        assert_eq!(
            key().verify(&t, "standup", NOW - LEEWAY_SECS - 1, |_| false),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_token_for_another_room_is_refused() {
        let t = key().sign(&claims()).unwrap();
        let e = key().verify(&t, "other", NOW, |_| false).unwrap_err();
        assert!(matches!(e, TokenError::WrongRoom { .. }));
        assert_eq!(e.code(), ErrorCode::Forbidden);
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let other = TokenKey::hs256(b"another-secret-another-secret-xx").unwrap();
        let t = other.sign(&claims()).unwrap();
        assert_eq!(
            key().verify(&t, "standup", NOW, |_| false),
            Err(TokenError::BadSignature)
        );
        // Tampered payload, original signature.
        let good = key().sign(&claims()).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c.role = Role::Host;
        c.grants = Grants::max_for(Role::Host);
        let forged_payload = b64(&serde_json::to_vec(&c).unwrap());
        parts[1] = &forged_payload;
        assert_eq!(
            key().verify(&parts.join("."), "standup", NOW, |_| false),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64(&serde_json::to_vec(&claims()).unwrap());
        for t in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_eq!(
                key().verify(&t, "standup", NOW, |_| false),
                Err(TokenError::WrongAlgorithm),
                "{t}"
            );
        }
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // A token claiming HS512, signed with the same secret: the key pins HS256.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            key().verify(&t, "standup", NOW, |_| false),
            Err(TokenError::WrongAlgorithm)
        );
    }

    #[test]
    fn grant_escalation_is_refused() {
        let mut c = claims();
        c.role = Role::Viewer;
        c.grants.publish = true;
        let t = key().sign(&c).unwrap();
        assert_eq!(
            key().verify(&t, "standup", NOW, |_| false),
            Err(TokenError::GrantEscalation)
        );
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let t = key().sign(&claims()).unwrap();
        assert_eq!(
            key().verify(&t, "standup", NOW, |j| j == "j1"),
            Err(TokenError::Revoked)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for t in ["", "a.b.c", "not a token", "....."] {
            assert!(
                matches!(
                    key().verify(t, "standup", NOW, |_| false),
                    Err(TokenError::Malformed(_))
                ),
                "{t}"
            );
        }
    }
}
