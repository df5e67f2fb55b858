//! Accounts: the pure rules behind registering, signing in and sessions (sans-IO: the edge's
//! worker only moves rows between D1 and these functions).
//!
//! - **Who may sign in:** an email address and a password (argon2id, hashed by the edge; the hash
//!   never leaves D1, the password is never stored or logged).
//! - **Sessions:** a 256-bit random token in a `__Host-` cookie (HttpOnly, SameSite=Lax, Secure
//!   over HTTPS and on loopback, where browsers accept it over plain HTTP); D1 stores only the
//!   token's SHA-256, so a copy of the database signs nobody in. A new token at every sign-in and
//!   password change (rotation), 30 days of validity.
//! - **CSRF:** a state-changing request must come from edgemeet's own page: `Sec-Fetch-Site:
//!   same-origin` (or, from a browser that does not send it, an `Origin` equal to ours) and a JSON
//!   body (a cross-site form cannot send one without a CORS preflight, which the edge never grants).
//! - **Throttling:** wrong passwords count per account ([`LoginThrottle`]): after
//!   [`MAX_FAILED_LOGINS`] in [`LOGIN_WINDOW_MS`], the account refuses sign-ins until the window
//!   ends; per client address the edge's rate-limit binding counts every attempt.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ErrorCode;
use crate::Millis;

/// Shortest password accepted (characters; NIST SP 800-63B's minimum is 8).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (characters): hashing time must stay bounded.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// How long a session lasts without signing in again.
pub const SESSION_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// The session cookie (HTTPS, or loopback over plain HTTP where browsers accept `Secure`).
pub const SESSION_COOKIE: &str = "__Host-edgemeet-session";
/// The D1 Sessions API bookmark of the browser's last write (read-your-writes from a replica).
pub const BOOKMARK_COOKIE: &str = "edgemeet-d1";
/// How long the bookmark cookie lives (seconds): read-your-writes needs it for as long as a
/// replica may lag, not for the session's life, and a bad one (planted, or from before a restore)
/// must not stick.
pub const BOOKMARK_TTL_SECS: u64 = 600;
/// The same bookmark as a header (for programs that do not keep cookies).
pub const BOOKMARK_HEADER: &str = "x-edgemeet-d1-bookmark";
/// Wrong passwords allowed per account in [`LOGIN_WINDOW_MS`].
pub const MAX_FAILED_LOGINS: u32 = 10;
/// The window wrong passwords are counted in (and how long an account then refuses sign-ins).
pub const LOGIN_WINDOW_MS: Millis = 15 * 60 * 1000;

/// Why an account action was refused. Every variant is a wire error (code + words for people).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccountError {
    #[error("Enter an email address like name@example.com.")]
    BadEmail,
    #[error("An email address is at most {MAX_EMAIL_CHARS} characters.")]
    EmailTooLong,
    #[error("A password needs at least {MIN_PASSWORD_CHARS} characters.")]
    PasswordTooShort,
    #[error("A password is at most {MAX_PASSWORD_CHARS} characters.")]
    PasswordTooLong,
    #[error("Choose a password that is not your email address.")]
    PasswordIsEmail,
    #[error("{0}")]
    BadName(String),
    #[error("An account with this email address already exists. Sign in instead.")]
    EmailTaken,
    #[error("That email address and password do not match an account.")]
    WrongCredentials,
    #[error("That is not your current password.")]
    WrongPassword,
    #[error("You are not signed in (or your session ended). Sign in again.")]
    SignedOut,
    #[error("This request did not come from edgemeet's own page, so it was refused.")]
    CrossSite,
    #[error("This request needs a JSON body (Content-Type: application/json).")]
    NotJson,
    #[error("Accounts work only over HTTPS: open this site with https:// to sign in.")]
    NeedsHttps,
    #[error(
        "Too many wrong passwords for this account. Try again in {} minutes.",
        retry_after_ms.div_ceil(60_000)
    )]
    Locked { retry_after_ms: Millis },
}

impl AccountError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AccountError::BadEmail
            | AccountError::EmailTooLong
            | AccountError::PasswordTooShort
            | AccountError::PasswordTooLong
            | AccountError::PasswordIsEmail
            | AccountError::BadName(_)
            | AccountError::NotJson
            | AccountError::NeedsHttps => ErrorCode::BadRequest,
            AccountError::EmailTaken => ErrorCode::AccountExists,
            AccountError::WrongCredentials | AccountError::SignedOut => ErrorCode::Unauthorized,
            AccountError::WrongPassword => ErrorCode::WrongPassword,
            AccountError::CrossSite => ErrorCode::Forbidden,
            AccountError::Locked { .. } => ErrorCode::TooManyRequests,
        }
    }

    /// Seconds to wait before asking again, for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AccountError::Locked { retry_after_ms } => Some(retry_after_ms.div_ceil(1000)),
            _ => None,
        }
    }
}

/// The email address as stored and compared: trimmed, lower-case (so `Ann@X.org` and `ann@x.org`
/// are one account), one `@` with something before it and a dotted domain after it.
pub fn normalize_email(raw: &str) -> Result<String, AccountError> {
    let email = raw.trim().to_lowercase();
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(AccountError::EmailTooLong);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(AccountError::BadEmail);
    };
    let domain_ok = !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty()
        || !domain_ok
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(AccountError::BadEmail);
    }
    Ok(email)
}

/// A new password is long enough, not too long to hash, and not the email address.
pub fn check_new_password(password: &str, email: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooLong);
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        return Err(AccountError::PasswordIsEmail);
    }
    Ok(())
}

/// A password given to sign in: bounded before it is hashed (an over-long one matches nothing).
pub fn check_given_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(AccountError::WrongCredentials);
    }
    Ok(())
}

/// What the edge knows about a request, for [`check_same_origin`].
#[derive(Debug, Clone, Copy)]
pub struct RequestSite<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// `Sec-Fetch-Site`, if sent (every current browser sends it).
    pub fetch_site: Option<&'a str>,
    /// `Origin`, if sent.
    pub origin: Option<&'a str>,
    /// This deployment's own origin (`https://meet.example.org`).
    pub own_origin: &'a str,
    /// `Content-Type`, if sent.
    pub content_type: Option<&'a str>,
}

/// Refuses a state-changing request that a browser sent from another site (CSRF): reads (`GET`,
/// `HEAD`) pass; anything else needs `Sec-Fetch-Site: same-origin`, or without that header an
/// `Origin` equal to ours; and, if it has a body, a JSON one. A request with neither header is
/// not from a browser (which always sends one of them on a POST), so there is no session cookie a
/// forger could ride on.
pub fn check_same_origin(r: RequestSite<'_>) -> Result<(), AccountError> {
    if matches!(r.method, "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    match (r.fetch_site, r.origin) {
        (Some(site), _) if !site.eq_ignore_ascii_case("same-origin") => {
            return Err(AccountError::CrossSite)
        }
        (None, Some(origin)) if !origin.eq_ignore_ascii_case(r.own_origin) => {
            return Err(AccountError::CrossSite)
        }
        _ => {}
    }
    if let Some(ct) = r.content_type {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(AccountError::NotJson);
        }
    }
    Ok(())
}

/// Is `host` (from the request URL, without the port) a loopback name, where browsers accept
/// `Secure` cookies over plain HTTP?
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Accounts only where the session cookie cannot travel in the clear: HTTPS, or loopback (the
/// dev stack). A deployment reachable over plain HTTP refuses to sign anyone in there.
pub fn check_transport(scheme: &str, host: &str) -> Result<(), AccountError> {
    if scheme == "https" || is_loopback_host(host) {
        Ok(())
    } else {
        Err(AccountError::NeedsHttps)
    }
}

/// `Set-Cookie` for a session (`token` is `None` to clear it). Always `__Host-`: `Secure`, no
/// `Domain`, `Path=/` ([`check_transport`] keeps plain HTTP away).
pub fn session_cookie(token: Option<&str>) -> String {
    match token {
        Some(t) => format!(
            "{SESSION_COOKIE}={t}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax; Secure",
            SESSION_TTL_MS / 1000
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"),
    }
}

/// `Set-Cookie` for the D1 bookmark (readable only by the edge; [`BOOKMARK_TTL_SECS`]).
pub fn bookmark_cookie(bookmark: &str) -> String {
    format!(
        "{BOOKMARK_COOKIE}={bookmark}; Path=/api/; Max-Age={BOOKMARK_TTL_SECS}; HttpOnly; SameSite=Lax; Secure"
    )
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Does this look like one of our session tokens (64 hex digits)? Anything else is not looked up.
pub fn is_session_token(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Does this look like a D1 bookmark (what `getBookmark()` returns: printable, short)? Anything
/// else is ignored rather than passed to D1.
pub fn is_bookmark(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 256
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// Wrong passwords for one account: at most [`MAX_FAILED_LOGINS`] in a window of
/// [`LOGIN_WINDOW_MS`] that starts at the first of them; then sign-ins are refused until the
/// window ends. A right password clears it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    pub failures: u32,
    pub since: Option<Millis>,
}

impl LoginThrottle {
    /// May this account try a password now? (Checked before any hashing.)
    pub fn check(&self, now: Millis) -> Result<(), AccountError> {
        match self.since {
            Some(since) if self.failures >= MAX_FAILED_LOGINS => {
                let until = since.saturating_add(LOGIN_WINDOW_MS);
                if now < until {
                    Err(AccountError::Locked {
                        retry_after_ms: until - now,
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// A password is about to be checked at `now`: refused if the account is locked, else the
    /// state to store *before* hashing — the attempt counts as wrong until it proves right
    /// ([`LoginThrottle::succeeded`]), so guesses sent in parallel each count.
    pub fn attempt(&self, now: Millis) -> Result<LoginThrottle, AccountError> {
        self.check(now)?;
        Ok(self.failed(now))
    }

    /// A wrong password at `now`: the new state to store.
    pub fn failed(&self, now: Millis) -> LoginThrottle {
        match self.since {
            Some(since) if now < since.saturating_add(LOGIN_WINDOW_MS) => LoginThrottle {
                failures: self.failures.saturating_add(1),
                since: Some(since),
            },
            _ => LoginThrottle {
                failures: 1,
                since: Some(now),
            },
        }
    }

    /// A right password: the count starts again.
    pub fn succeeded(&self) -> LoginThrottle {
        LoginThrottle::default()
    }
}

/// What the page knows about the signed-in person (never the hash, never the session token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub created_at: Millis,
    /// What the meetings they schedule start from.
    #[serde(default)]
    pub meeting_defaults: crate::schedule::MeetingDefaults,
}

/// `POST /api/account/register`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// `POST /api/account/signin`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

/// `POST /api/account/password`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current: String,
    pub new: String,
}

/// `POST /api/account/delete`: the password again, so a borrowed unlocked laptop cannot do it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    pub password: String,
}

/// A new account's fields, checked: `(email, name)`, and the password is fit to hash.
pub fn check_registration(r: &RegisterRequest) -> Result<(String, String), AccountError> {
    let email = normalize_email(&r.email)?;
    let name = crate::protocol::normalize_display_name(&r.name).map_err(AccountError::BadName)?;
    check_new_password(&r.password, &email)?;
    Ok((email, name))
}

#[cfg(feature = "auth")]
/// What D1 stores for a session token: its SHA-256, hex (the token itself is only in the cookie).
pub fn session_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_one_account_whatever_the_case_and_bad_ones_are_refused_in_words() {
        assert_eq!(
            normalize_email("  Ann@Example.ORG ").unwrap(),
            "ann@example.org"
        );
        assert_eq!(
            normalize_email("o'brien+meet@x.co.uk").unwrap(),
            "o'brien+meet@x.co.uk"
        );
        for bad in [
            "",
            "ann",
            "@x.org",
            "ann@",
            "ann@localhost",
            "ann@.org",
            "ann@x.org.",
            "ann@x..org",
            "a b@x.org",
            "ann@x@y.org",
            "ann@x.org\n",
            "<ann@x.org>",
        ] {
            let e = normalize_email(bad);
            if bad == "ann@x.org\n" {
                assert!(e.is_ok(), "trailing whitespace is trimmed");
                continue;
            }
            assert_eq!(e, Err(AccountError::BadEmail), "{bad:?}");
        }
        let long = format!("{}@x.org", "a".repeat(250));
        assert_eq!(normalize_email(&long), Err(AccountError::EmailTooLong));
        assert_eq!(AccountError::BadEmail.code(), ErrorCode::BadRequest);
        assert!(AccountError::BadEmail
            .to_string()
            .contains("name@example.com"));
    }

    #[test]
    fn passwords_are_long_enough_bounded_and_not_the_email() {
        let e = "ann@x.org";
        assert_eq!(
            check_new_password("short", e),
            Err(AccountError::PasswordTooShort)
        );
        assert_eq!(
            check_new_password(&"x".repeat(129), e),
            Err(AccountError::PasswordTooLong)
        );
        assert_eq!(
            check_new_password("ANN@x.org", e),
            Err(AccountError::PasswordIsEmail)
        );
        assert!(check_new_password("correct horse battery", e).is_ok());
        // Characters, not bytes: eight accented letters are eight.
        assert!(check_new_password("éééééééé", e).is_ok());
        assert_eq!(
            check_given_password(&"x".repeat(10_000)),
            Err(AccountError::WrongCredentials)
        );
        let r = RegisterRequest {
            email: "Ann@X.org".into(),
            name: "  Ann  ".into(),
            password: "correct horse".into(),
        };
        assert_eq!(
            check_registration(&r).unwrap(),
            ("ann@x.org".into(), "Ann".into())
        );
        let r = RegisterRequest {
            name: " ".into(),
            ..r
        };
        assert!(matches!(
            check_registration(&r),
            Err(AccountError::BadName(_))
        ));
    }

    fn site<'a>(
        method: &'a str,
        fetch: Option<&'a str>,
        origin: Option<&'a str>,
    ) -> RequestSite<'a> {
        RequestSite {
            method,
            fetch_site: fetch,
            origin,
            own_origin: "https://meet.example.org",
            content_type: Some("application/json; charset=utf-8"),
        }
    }

    #[test]
    fn only_our_own_page_changes_anything() {
        let own = "https://meet.example.org";
        assert!(check_same_origin(site("GET", Some("cross-site"), None)).is_ok());
        assert!(check_same_origin(site("POST", Some("same-origin"), Some(own))).is_ok());
        assert!(check_same_origin(site("POST", None, Some(own))).is_ok());
        assert!(
            check_same_origin(site("POST", None, None)).is_ok(),
            "not a browser"
        );
        for (fetch, origin) in [
            (Some("cross-site"), Some("https://evil.example")),
            (Some("same-site"), Some("https://sub.example.org")),
            (Some("none"), None),
            (None, Some("https://evil.example")),
            (None, Some("null")),
            // A forged Origin cannot beat the browser's Sec-Fetch-Site.
            (Some("cross-site"), Some(own)),
        ] {
            assert_eq!(
                check_same_origin(site("POST", fetch, origin)),
                Err(AccountError::CrossSite),
                "{fetch:?} {origin:?}"
            );
        }
        // A form post (urlencoded, multipart, text/plain) is not JSON.
        for ct in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
        ] {
            let r = RequestSite {
                content_type: Some(ct),
                ..site("POST", Some("same-origin"), Some(own))
            };
            assert_eq!(check_same_origin(r), Err(AccountError::NotJson));
        }
        assert_eq!(AccountError::CrossSite.code(), ErrorCode::Forbidden);
    }

    #[test]
    fn session_cookies_are_host_only_httponly_and_secure_and_never_sent_in_the_clear() {
        let c = session_cookie(Some("ab"));
        assert!(c.starts_with("__Host-edgemeet-session=ab; Path=/;"), "{c}");
        for part in ["HttpOnly", "SameSite=Lax", "Secure", "Max-Age=2592000"] {
            assert!(c.contains(part), "{c} has {part}");
        }
        assert!(!c.contains("Domain"), "__Host- cookies have no Domain");
        let gone = session_cookie(None);
        assert!(
            gone.contains("Max-Age=0") && gone.contains("Secure"),
            "{gone}"
        );
        // Over HTTPS, or on loopback (browsers accept Secure there over plain HTTP); elsewhere
        // plain HTTP gets no account at all.
        assert!(check_transport("https", "meet.example.org").is_ok());
        for h in [
            "127.0.0.1",
            "127.3.2.1",
            "localhost",
            "[::1]",
            "app.localhost",
        ] {
            assert!(check_transport("http", h).is_ok(), "{h}");
        }
        for h in [
            "meet.example.org",
            "127.example.org",
            "127.0.0.1.nip.io",
            "10.0.0.1",
        ] {
            assert_eq!(
                check_transport("http", h),
                Err(AccountError::NeedsHttps),
                "{h}"
            );
        }
        let b = bookmark_cookie("x");
        assert!(b.contains("Max-Age=600") && b.contains("Path=/api/"), "{b}");
        assert_eq!(
            cookie("a=1; __Host-edgemeet-session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("x__Host-edgemeet-session=xyz", SESSION_COOKIE), None);
        assert!(is_session_token(&"ab".repeat(32)));
        assert!(!is_session_token("ab") && !is_session_token(&"zz".repeat(32)));
        assert!(
            is_bookmark("00000001-00000002-00004f6b-abc")
                && !is_bookmark("a b")
                && !is_bookmark("")
        );
    }

    #[test]
    fn wrong_passwords_lock_the_account_for_the_rest_of_the_window() {
        let mut t = LoginThrottle::default();
        let start = 1_000_000;
        for i in 0..MAX_FAILED_LOGINS {
            assert!(t.check(start + i as u64).is_ok(), "try {i}");
            t = t.failed(start + i as u64);
        }
        let e = t.check(start + 60_000).unwrap_err();
        assert_eq!(
            e,
            AccountError::Locked {
                retry_after_ms: LOGIN_WINDOW_MS - 60_000
            }
        );
        assert_eq!(e.code(), ErrorCode::TooManyRequests);
        assert_eq!(e.retry_after_secs(), Some(840));
        assert!(e.to_string().contains("14 minutes"), "{e}");
        // The window ends: allowed again, and the next wrong password starts a new window.
        assert!(t.check(start + LOGIN_WINDOW_MS).is_ok());
        let t2 = t.failed(start + LOGIN_WINDOW_MS);
        assert_eq!(t2.failures, 1);
        assert_eq!(t2.since, Some(start + LOGIN_WINDOW_MS));
        // A right password clears the count.
        assert_eq!(t.succeeded(), LoginThrottle::default());
        // An attempt counts before the hash is checked: ten guesses in parallel, each reserving
        // its attempt, leave the eleventh locked out.
        let mut t = LoginThrottle::default();
        for i in 0..MAX_FAILED_LOGINS {
            t = t.attempt(start + i as u64).expect("not locked yet");
        }
        assert!(matches!(
            t.attempt(start + 100),
            Err(AccountError::Locked { .. })
        ));
    }

    #[cfg(feature = "auth")]
    #[test]
    fn d1_keeps_only_a_hash_of_the_session_token() {
        let t = "ab".repeat(32);
        let k = session_key(&t);
        assert_eq!(k.len(), 64);
        assert_ne!(k, t);
        assert_eq!(k, session_key(&t));
    }

    #[test]
    fn requests_with_unknown_fields_are_refused() {
        assert!(serde_json::from_str::<SignInRequest>(
            r#"{"email":"a","password":"b","admin":true}"#
        )
        .is_err());
    }
}
