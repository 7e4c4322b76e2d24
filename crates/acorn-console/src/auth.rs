//! Sessions and their CSRF tokens, and one-time sign-in links. Everything is server-side and
//! in memory: a session id is 256 random bits in an HttpOnly, SameSite=Strict cookie, each
//! session has its own CSRF token, and both end at sign-out, at expiry, or when the service
//! stops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// How long a session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once (the oldest goes first).
const MAX_SESSIONS: usize = 256;
/// Most one-time links waiting at once.
const MAX_LINKS: usize = 16;
/// The session cookie's name over plain HTTP; with TLS it is `__Host-` prefixed, which the
/// browser accepts only with `Secure; Path=/` and no `Domain`.
const COOKIE: &str = "acorn_console";

/// A signed-in session, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session's CSRF token (a hidden field of every form).
    pub csrf: String,
}

struct Stored {
    csrf: String,
    expires: Instant,
}

/// The sessions and the one-time links.
pub struct Sessions {
    /// How long a session lasts from sign-in.
    lifetime: Duration,
    /// Session id → session.
    sessions: Mutex<HashMap<String, Stored>>,
    /// SHA-256 of a one-time token → its expiry.
    links: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Default for Sessions {
    /// Sessions of [`SESSION_LIFETIME`].
    fn default() -> Self {
        Self {
            lifetime: SESSION_LIFETIME,
            sessions: Mutex::default(),
            links: Mutex::default(),
        }
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether two strings are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie).
    pub fn create(&self) -> String {
        let now = Instant::now();
        let id = random_hex();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Stored {
                csrf: random_hex(),
                expires: now + self.lifetime,
            },
        );
        id
    }

    /// The session the request's cookie names, if it exists and has not expired.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = session_cookie(headers)?;
        let mut sessions = lock(&self.sessions);
        let stored = sessions.get(id)?;
        if stored.expires <= Instant::now() {
            sessions.remove(id);
            return None;
        }
        Some(Session {
            csrf: stored.csrf.clone(),
        })
    }

    /// Ends the request's session (sign-out).
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            lock(&self.sessions).remove(id);
        }
    }

    /// Makes a one-time sign-in token valid for `lifetime`; the caller puts it in a link.
    pub fn one_time_token(&self, lifetime: Duration) -> String {
        let token = random_hex();
        let now = Instant::now();
        let mut links = lock(&self.links);
        links.retain(|_, expires| *expires > now);
        if links.len() >= MAX_LINKS {
            if let Some(oldest) = links.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) {
                links.remove(&oldest);
            }
        }
        links.insert(Sha256::digest(token.as_bytes()).into(), now + lifetime);
        token
    }

    /// Uses up a one-time token: `true` once, if it was made here and has not expired.
    pub fn redeem(&self, token: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        lock(&self.links)
            .remove(&key)
            .is_some_and(|expires| expires > Instant::now())
    }
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE || name.strip_prefix("__Host-") == Some(COOKIE))
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that stores session `id` (`None`: clears it).
pub fn set_cookie(id: Option<&str>, tls: bool) -> String {
    let (name, secure) = if tls {
        (format!("__Host-{COOKIE}"), "; Secure")
    } else {
        (COOKIE.to_owned(), "")
    };
    match id {
        Some(id) => format!(
            "{name}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            SESSION_LIFETIME.as_secs()
        ),
        None => format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"),
    }
}

/// Whether a state-changing request comes from the console's own pages, as far as the
/// browser says: `Sec-Fetch-Site` (sent by current browsers) must be `same-origin` or `none`;
/// without it, an `Origin` must name this host. (Under `Referrer-Policy: no-referrer` a
/// browser's form posts carry `Origin: null`, so that alone proves nothing.) The session's
/// CSRF token is checked besides, whatever these say.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (text("origin"), text("host")) {
        (None | Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn sessions_and_links() {
        let s = Sessions::default();
        let id = s.create();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("other=1; acorn_console={id}"));
        let session = s.get(&headers).expect("session");
        assert_eq!(session.csrf.len(), 64);
        assert!(s.get(&with_cookie("acorn_console=nope")).is_none());
        s.end(&headers);
        assert!(s.get(&headers).is_none());

        let token = s.one_time_token(Duration::from_secs(60));
        assert!(!s.redeem("wrong"));
        assert!(s.redeem(&token));
        assert!(!s.redeem(&token), "single use");
        let expired = s.one_time_token(Duration::ZERO);
        assert!(!s.redeem(&expired), "expired");

        let short = Sessions {
            lifetime: Duration::ZERO,
            ..Sessions::default()
        };
        let id = short.create();
        assert!(
            short
                .get(&with_cookie(&format!("acorn_console={id}")))
                .is_none(),
            "expired"
        );
    }

    #[test]
    fn cookies_and_origins() {
        let c = set_cookie(Some("abc"), true);
        assert!(c.starts_with("__Host-acorn_console=abc; HttpOnly; SameSite=Strict; Path=/"));
        assert!(c.ends_with("; Secure"));
        assert!(!set_cookie(Some("abc"), false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert("origin", HeaderValue::from_static("null"));
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }
}
