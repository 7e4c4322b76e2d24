-- acorn registry, version 1: devices, single-use registration tokens (stored as SHA-256,
-- with a reservation held by one registration in flight and an optional binding), and the
-- CRL number.
CREATE TABLE IF NOT EXISTS devices (
    device_id          TEXT PRIMARY KEY NOT NULL,
    serial_number      TEXT NOT NULL,
    mac_address        TEXT NOT NULL,
    firmware_version   TEXT NOT NULL,
    certificate_pem    TEXT NOT NULL,
    certificate_id     TEXT NOT NULL UNIQUE,
    certificate_serial TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    revoked_at         INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER,
    used_by         TEXT,
    reservation     TEXT,
    reserved_until  INTEGER,
    bound_device_id TEXT,
    bound_serial    TEXT,
    bound_mac       TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('crl_number', 0);
