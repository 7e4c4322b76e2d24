//! acorn-backend: registration service, device registry, local CA and dev stack (work in progress).
#![forbid(unsafe_code)]

pub mod broker;
