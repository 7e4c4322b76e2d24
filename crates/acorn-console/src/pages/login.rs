//! The sign-in page: the admin key in a password field.

use maud::{html, Markup};

use super::{page, Nav};

/// The sign-in form, with a message after a failed attempt.
pub fn render(failed: Option<&str>) -> Markup {
    page(
        "Sign in",
        Nav::None,
        None,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(message) = failed {
                p.error role="alert" { (message) }
            }
            form.card method="post" action="/login" {
                label for="key" { "Admin key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                button type="submit" id="sign-in" { "Sign in" }
            }
            p.hint {
                "The admin key is in the backend's data directory (" code { "admin.key" } ", "
                "mode 0600) or in its configuration. " code { "acorn demo" } " prints a one-time link instead."
            }
        },
    )
}
