//! The crate's error types: [`BackendError`] for server-side faults and [`CsrError`] for a
//! certificate signing request that the client must fix.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A fault of the backend itself (files, database, certificate authority, network).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {path}: {source}; check that the directory exists and is writable by this user")]
    Io {
        /// What was being done ("read", "write", "create directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A secret file (CA key, admin key) other users could read or change, or a path that is
    /// not a plain file of ours; the message says how to fix it.
    #[error(transparent)]
    UnsafeFile(acorn_files::FileError),
    /// A CA file on disk is not what it should be.
    #[error("the certificate authority file {path} is unusable: {detail}; fix or delete the CA directory to make a new CA (every device certificate must then be issued again)")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// rcgen refused to build or sign a certificate, key or CRL.
    #[error("could not {what}: {source}")]
    Certificate {
        /// What was being made ("sign the device certificate", ...).
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A key pair could not be generated.
    #[error("could not generate a {key_type} key pair: {detail}")]
    KeyGeneration {
        /// The key type ("P-256", "RSA-2048").
        key_type: &'static str,
        /// Why.
        detail: String,
    },
    /// The SQLite registry failed.
    #[error("device registry (SQLite) failed to {what}: {source}")]
    Database {
        /// The operation ("open the registry", "insert the device", ...).
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL registry failed.
    #[error("device registry (PostgreSQL at {target}) failed to {what}: {detail}; check that PostgreSQL runs and accepts this service's connections, and that the database URL (ACORN_DATABASE_URL) names the right host, user and database")]
    Postgres {
        /// The operation ("reserve the token", ...).
        what: &'static str,
        /// The database, without its password (`postgres://user@host:port/db`).
        target: String,
        /// PostgreSQL's message and SQLSTATE, or why no connection could be had.
        detail: String,
    },
    /// The registry's schema is newer than this binary knows.
    #[error("the device registry's schema is version {found}, newer than this acorn knows (up to {known}): run the acorn release that migrated it, or restore the database from the backup taken before that upgrade")]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this binary has migrations for.
        known: i64,
    },
    /// A dependency (the registry, the signer) did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port or use port 0 for any free port")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate was asked for a name its CA must never sign (a device CA asked for a
    /// name outside the device-id alphabet, such as a service identity).
    #[error("the {role:?} CA does not issue certificates for the name {name:?}")]
    NameNotAllowed {
        /// The refused common name.
        name: String,
        /// The CA's role.
        role: crate::ca::CaRole,
    },
    /// The configuration is not usable.
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// A background task died (a bug, or the runtime is shutting down).
    #[error("a backend worker task failed: {0}")]
    Task(String),
}

/// Why a certificate signing request (CSR) was refused. Every variant is the client's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST` block, or its DER does not parse as PKCS#10.
    #[error("the csr is not a PEM PKCS#10 certificate request ({0}); send the text from '-----BEGIN CERTIFICATE REQUEST-----' to '-----END CERTIFICATE REQUEST-----'")]
    Malformed(String),
    /// The request's self-signature does not verify with its own public key.
    #[error("the csr's signature does not verify with the public key inside it; sign the request with the device's private key")]
    BadSignature,
    /// The request asks for an extension this CA does not handle.
    #[error("the csr requests an extension this CA does not support; send a request with no extensions, only subject CN = the device id")]
    UnsupportedExtension,
    /// The key or signature algorithm is not one AWS IoT Core accepts.
    #[error("the csr uses an unsupported key or signature algorithm ({0}); use ECDSA P-256 (recommended), P-384 or RSA 2048+")]
    UnsupportedAlgorithm(String),
    /// The key's size or curve is not one AWS IoT Core accepts (RSA below 2048 bits,
    /// curves other than P-256 and P-384).
    #[error("the csr's key is {0}, which is not accepted; use ECDSA P-256 (recommended), P-384 or RSA with 2048 to 4096 bits")]
    UnsupportedKey(String),
    /// The subject has no common name.
    #[error("the csr's subject has no common name (CN); set CN to the device id")]
    MissingCommonName,
    /// The subject common name is not the device id being registered.
    #[error("the csr's subject CN is '{found}' but the deviceId is '{expected}'; make the CSR with CN={expected}")]
    CommonNameMismatch {
        /// The device id in the request body.
        expected: String,
        /// The CN found in the CSR (truncated if long).
        found: String,
    },
}
