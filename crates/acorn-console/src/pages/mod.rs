//! The console's HTML, server-rendered with maud (every interpolated value is escaped).
//! No inline script or style anywhere: the CSP allows only `/assets/*`.

pub mod device;
pub mod fleet;
pub mod live;
pub mod login;
pub mod tokens;

use maud::{html, Markup, DOCTYPE};

use crate::auth::Session;

/// Which page is open (for the navigation and for `console.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The fleet table.
    Fleet,
    /// One device.
    Device,
    /// The live stream.
    Live,
    /// Registration tokens.
    Tokens,
    /// Not signed in.
    None,
}

/// A whole page: head, navigation (when signed in), `main`. `live` is what `console.js`
/// updates on this page (`data-live`), if anything.
pub fn page(
    title: &str,
    nav: Nav,
    session: Option<&Session>,
    live: Option<&str>,
    main: Markup,
) -> Markup {
    let link = |to: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == to).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · acorn console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body data-live=[live] {
                header {
                    span.brand { "acorn console" }
                    @if let Some(session) = session {
                        nav {
                            (link(Nav::Fleet, "/", "Fleet"))
                            (link(Nav::Live, "/live", "Live"))
                            (link(Nav::Tokens, "/tokens", "Tokens"))
                        }
                        form.signout method="post" action="/logout" {
                            (csrf_field(session))
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A page saying what went wrong (no details of the server's internals).
pub fn error(title: &str, message: &str, session: Option<&Session>) -> Markup {
    page(
        title,
        Nav::None,
        session,
        None,
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href="/" { "Back to the fleet" } }
        },
    )
}

/// Unix milliseconds as `2026-11-28 16:42:07 UTC`.
pub fn time_ms(ms: i64) -> String {
    time_s(ms.div_euclid(1000))
}

/// Unix seconds as `2026-11-28 16:42:07 UTC`.
pub fn time_s(secs: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// A rotation state by its wire name (`started`, `committed`, `rolled-back`, …).
pub fn rotation_name(state: acorn_mqtt::RotationState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Now, Unix seconds.
pub fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
