-- Per-tenant credentials of tools (keel.credstore.postgres), sealed with AES-256-GCM: the value is never
-- stored in clear. The row's tenant_id and name are the cipher's associated data, so a ciphertext moved
-- to another row does not decrypt. key_id names the configured key (KEEL_CREDENTIAL_KEYS) that sealed
-- it; `keel credentials rotate` reseals every row under the current key. tenant_id '*' is the explicit
-- shared row, read by a tenant that has no row of its own for the name.
CREATE TABLE tool_credentials (
    tenant_id  text        NOT NULL CHECK (tenant_id <> ''),
    name       text        NOT NULL CHECK (name <> ''),
    key_id     text        NOT NULL,
    nonce      bytea       NOT NULL CHECK (length(nonce) = 12),
    ciphertext bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
-- Rotation looks for the rows not yet under the current key.
CREATE INDEX tool_credentials_by_key ON tool_credentials (key_id);
