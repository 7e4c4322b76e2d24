//! The Tokens page: mint a single-use registration token (optionally bound to a device id),
//! see it once with a copy button, and list the tokens still unused.

use acorn_backend::registry::UnusedToken;
use maud::{html, Markup};

use super::{csrf_field, page, time_s, Nav};
use crate::auth::Session;

/// A token just minted, shown once.
pub struct Minted {
    /// The token.
    pub token: String,
    /// Its expiry, Unix seconds.
    pub expires_at: i64,
    /// The device id it is bound to.
    pub device_id: Option<String>,
}

/// The page.
pub fn render(session: &Session, minted: Option<&Minted>, unused: &[UnusedToken]) -> Markup {
    let main = html! {
        h1 { "Registration tokens" }
        @if let Some(m) = minted {
            section.card.minted {
                h2 { "New token" }
                p { "Shown only now: the registry keeps its hash alone." }
                p { code #new-token { (m.token) } " " button type="button" data-copy="new-token" { "Copy" } }
                p.hint {
                    "Expires " (time_s(m.expires_at))
                    @if let Some(id) = &m.device_id { "; registers only device " code { (id) } }
                    ". Use it with " code { "acorn device register --token-file FILE" } "."
                }
            }
        }
        section.card {
            h2 { "Mint" }
            form #mint method="post" action="/tokens" {
                (csrf_field(session))
                label for="ttlMinutes" { "Valid for (minutes)" }
                input #ttlMinutes type="number" name="ttlMinutes" min="1" max="43200" value="60" required;
                label for="deviceId" { "Only for device id (optional)" }
                input #deviceId type="text" name="deviceId" maxlength="128" autocomplete="off";
                button type="submit" #mint-button { "Mint token" }
            }
        }
        section {
            h2 { "Unused tokens (" (unused.len()) ")" }
            table #unused {
                thead { tr { th { "Token (hash)" } th { "Minted" } th { "Expires" } th { "Bound to" } } }
                tbody {
                    @for t in unused {
                        tr {
                            td.mono { (t.hash.get(..12).unwrap_or(&t.hash)) "…" }
                            td { (time_s(t.created_at)) }
                            td { (time_s(t.expires_at)) }
                            td { (t.bound_device_id.as_deref().unwrap_or("any device")) }
                        }
                    }
                }
            }
        }
    };
    page("Tokens", Nav::Tokens, Some(session), None, main)
}
