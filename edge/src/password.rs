//! Room passwords: argon2id hashes (the `argon2` crate, OWASP's minimum parameters: 19 MiB, two
//! passes, one lane), made and checked here in the worker — never in the room's object, whose
//! single thread would stall for it — and stored by the room only as a PHC string.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use edgemeet_shared::room::{Admission, PasswordCheck, PreJoin};
use worker::{Stub, Url};

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

/// What the joiner's password (if any) says, against the room's. The room is asked first
/// (`/password`): a refusal that no password would change (ban, lock, too many wrong passwords)
/// comes back before any hashing, and a password given for a room that exists without one is
/// not hashed at all.
///
/// `scheduled`: a scheduled meeting's hash from D1 (`Some(None)`: it has none) — checked instead
/// of the room's, and never taken as a new room's.
pub async fn check(
    stub: &Stub,
    room: &str,
    identity: &str,
    addr: &str,
    given: Option<String>,
    scheduled: Option<Option<String>>,
) -> EdgeResult<PasswordCheck> {
    let given = given.filter(|p| !p.is_empty());
    if given
        .as_ref()
        .is_some_and(|g| g.chars().count() > MAX_PASSWORD_CHARS)
    {
        return Err(EdgeError::BadRequest(format!(
            "A password is at most {MAX_PASSWORD_CHARS} characters."
        )));
    }
    let url = Url::parse_with_params(
        "https://room/password",
        &[("room", room), ("identity", identity), ("addr", addr)],
    )
    .map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut res = stub.fetch_with_str(url.as_str()).await?;
    let pre: Option<PreJoin> = res.json().await?;
    let pre = pre.ok_or_else(|| EdgeError::Config("the room did not load".into()))?;
    if let Some(Admission::Refused {
        code,
        message,
        retry_after_ms,
    }) = pre.refused
    {
        return Err(EdgeError::Refused {
            code,
            message,
            retry_after_secs: retry_after_ms.map(|ms| ms.div_ceil(1000)),
        });
    }
    let Some(given) = given else {
        return Ok(PasswordCheck::NotGiven);
    };
    if let Some(known) = scheduled {
        return Ok(match known {
            Some(h) if verify(&given, &h) => PasswordCheck::Correct,
            Some(_) => PasswordCheck::Wrong,
            None => PasswordCheck::NotGiven,
        });
    }
    Ok(match pre.hash {
        Some(h) if verify(&given, &h) => PasswordCheck::Correct,
        Some(_) => PasswordCheck::Wrong,
        None if pre.fresh => PasswordCheck::New(hash(&given).map_err(EdgeError::Config)?),
        None => PasswordCheck::NotGiven,
    })
}
