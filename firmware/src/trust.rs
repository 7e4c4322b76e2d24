//! The roots the broker's certificate must chain to: Amazon Root CA 1 and 3, pinned.
//!
//! A development build (`--features dev-ca`, with `ACORN_DEV_CA` naming a PEM file at build
//! time, e.g. `acorn dev up`'s `ca.pem`) trusts that CA **instead**, so a board can be tried
//! against the local dev stack (`acorn dev up --lan-address`). It says so at every boot; such
//! a build never connects to AWS IoT Core and is not for the field.

use acorn_embedded::TrustAnchors;

/// The broker's trust anchors for this build.
#[cfg(not(feature = "dev-ca"))]
pub fn anchors() -> TrustAnchors {
    TrustAnchors::amazon()
}

/// The broker's trust anchors for this build: the development CA built in.
#[cfg(feature = "dev-ca")]
pub fn anchors() -> TrustAnchors {
    /// The PEM file `ACORN_DEV_CA` named at build time (build.rs checked that it holds a
    /// certificate and copied it here).
    const DEV_CA_PEM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dev-ca.pem"));
    match TrustAnchors::from_pem(DEV_CA_PEM) {
        Ok(anchors) => {
            log::warn!("DEVELOPMENT BUILD: the broker must chain to the CA built in from ACORN_DEV_CA (not Amazon's roots); never ship this build");
            anchors
        }
        // build.rs parsed it as PEM; a CA our verifier cannot read trusts nothing.
        Err(e) => {
            log::error!("the development CA built in is unusable ({e}); trusting Amazon's roots");
            TrustAnchors::amazon()
        }
    }
}
