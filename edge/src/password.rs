//! Room passwords: argon2id hashes (the `argon2` crate, OWASP's minimum parameters: 19 MiB, two
//! passes, one lane), made and checked here in the worker — never in the room's object, whose
//! single thread would stall for it — and stored by the room only as a PHC string.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use edgemeet_shared::room::PasswordCheck;
use serde::Deserialize;
use worker::Stub;

use crate::error::{EdgeError, EdgeResult};

/// Longest password accepted (characters).
pub const MAX_PASSWORD_CHARS: usize = 128;

fn argon2() -> Argon2<'static> {
    // OWASP (2023): argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A new salted hash of `password` (PHC string).
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Does `password` match the stored `hash`? (An unreadable hash matches nothing.)
pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

#[derive(Deserialize)]
struct Stored {
    hash: Option<String>,
}

/// What the joiner's password (if any) says, against the room's (asked from its object).
pub async fn check(stub: &Stub, room: &str, given: Option<String>) -> EdgeResult<PasswordCheck> {
    let Some(given) = given.filter(|p| !p.is_empty()) else {
        return Ok(PasswordCheck::NotGiven);
    };
    if given.chars().count() > MAX_PASSWORD_CHARS {
        return Err(EdgeError::BadRequest(format!(
            "A password is at most {MAX_PASSWORD_CHARS} characters."
        )));
    }
    let mut res = stub
        .fetch_with_str(&format!("https://room/password?room={room}"))
        .await?;
    let stored: Stored = res.json().await?;
    Ok(match stored.hash {
        Some(h) if verify(&given, &h) => PasswordCheck::Correct,
        Some(_) => PasswordCheck::Wrong,
        None => PasswordCheck::New(hash(&given).map_err(EdgeError::Config)?),
    })
}
