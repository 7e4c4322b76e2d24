//! acorn-console: the fleet's web console, served by the registration service at `/`.
//!
//! Sign-in with the admin key (or a one-time link) starts a server-side session; the pages
//! (Fleet, Device, Live, Tokens) are rendered on the server with maud, and two small scripts
//! embedded in the binary (`assets/`) add live updates over Server-Sent Events, pausing and
//! copying. The live state comes from the broker through the service identity
//! `service:console` ([`link`]); the registry and every admin action go through the backend's
//! in-process [`acorn_backend::Admin`] calls.
//!
//! ```no_run
//! # async fn run() -> Result<(), acorn_backend::BackendError> {
//! let console = acorn_console::Console::new();
//! let mut config = acorn_backend::BackendConfig::new("/tmp/acorn-dev");
//! config.console = Some(console.mount());
//! let backend = acorn_backend::Backend::start(config).await?;
//! println!("{}", console.sign_in_link(&backend.base_url(), std::time::Duration::from_secs(600)));
//! # Ok(()) }
//! ```
//!
//! The security model is in `docs/console.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod cert;
pub mod fleet;
pub mod link;
pub mod pages;
mod routes;
mod security;

use std::sync::Arc;
use std::time::Duration;

use acorn_backend::{Admin, ConsoleMount};

/// The console: its sessions, what it knows of the fleet, and its broker link. Make one,
/// hand [`Console::mount`] to the backend's configuration, keep it to mint sign-in links.
#[derive(Clone, Default)]
pub struct Console {
    sessions: Arc<auth::Sessions>,
    fleet: Arc<fleet::Fleet>,
    link: Arc<link::Link>,
}

impl core::fmt::Debug for Console {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) admin: Admin,
    pub(crate) sessions: Arc<auth::Sessions>,
    pub(crate) fleet: Arc<fleet::Fleet>,
    pub(crate) link: Arc<link::Link>,
}

impl Console {
    /// A console with no session and nothing heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the backend calls at start: the console's routes, and its broker link started in
    /// the background (it reconnects until the backend stops).
    pub fn mount(&self) -> ConsoleMount {
        let console = self.clone();
        Arc::new(move |admin: Admin| {
            tokio::spawn(link::run(
                admin.clone(),
                Arc::clone(&console.fleet),
                Arc::clone(&console.link),
            ));
            routes::router(Arc::new(Shared {
                admin,
                sessions: Arc::clone(&console.sessions),
                fleet: Arc::clone(&console.fleet),
                link: Arc::clone(&console.link),
            }))
        })
    }

    /// A sign-in link for `base_url` (the backend's), good for one sign-in within
    /// `lifetime`. It carries a one-time token of its own, never the admin key.
    pub fn sign_in_link(&self, base_url: &str, lifetime: Duration) -> String {
        let token = self.sessions.one_time_token(lifetime);
        format!(
            "{}/login/once?token={token}",
            base_url.trim_end_matches('/')
        )
    }
}
