-- acorn registry, version 4: certificate history. A device's current certificate stays in
-- `devices`; every other certificate it has had or been issued lives here: one issued by
-- CreateCertificateFromCsr (`pending` until RegisterThing presents its ownership token, then
-- `registered` until the device first reports it in use, when it becomes the current one),
-- a former current one (`superseded`, revoked), or one issued and never used (`abandoned`,
-- revoked). Rows with `revoked_at` go into the CRL.
CREATE TABLE certificates (
    certificate_id       TEXT PRIMARY KEY NOT NULL,
    device_id            TEXT NOT NULL,
    certificate_serial   TEXT NOT NULL UNIQUE,
    certificate_pem      TEXT NOT NULL,
    certificate_arn      TEXT,
    state                TEXT NOT NULL
        CHECK (state IN ('pending', 'registered', 'superseded', 'abandoned')),
    ownership_token_hash TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    revoked_at           BIGINT
);
CREATE INDEX certificates_device ON certificates (device_id);
