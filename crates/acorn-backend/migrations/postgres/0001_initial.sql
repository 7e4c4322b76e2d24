-- acorn registry, version 1: devices, single-use registration tokens (stored as SHA-256,
-- with a reservation held by one registration in flight and an optional binding), and the
-- CRL number. Times are Unix seconds.
CREATE TABLE devices (
    device_id          TEXT PRIMARY KEY NOT NULL,
    serial_number      TEXT NOT NULL,
    mac_address        TEXT NOT NULL,
    firmware_version   TEXT NOT NULL,
    certificate_pem    TEXT NOT NULL,
    certificate_id     TEXT NOT NULL UNIQUE,
    certificate_serial TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    revoked_at         BIGINT
);
CREATE TABLE tokens (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT,
    used_by         TEXT,
    reservation     TEXT,
    reserved_until  BIGINT,
    bound_device_id TEXT,
    bound_serial    TEXT,
    bound_mac       TEXT
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('crl_number', 0);
