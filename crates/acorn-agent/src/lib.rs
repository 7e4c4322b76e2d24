//! acorn-agent (work in progress).
#![forbid(unsafe_code)]
