-- The API's idempotency record: what each client-chosen identity of a run request (an Idempotency-Key,
-- or a run id the client named) was first used for, per tenant, and the run it names. The API writes it
-- in the same transaction as its decision to publish, so the answer for a key is decided when the
-- request arrives, never read from a projection that trails the topic. It is not a projection: nothing
-- rebuilds it from the topics, and a projection rebuild keeps it.
CREATE TABLE api_idempotency (
    tenant_id        text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('idempotency_key', 'run_id')),
    client_key       text        NOT NULL,
    -- Keel's run id (on the topics): derived from the tenant and the client's key or run id.
    run_id           text        NOT NULL,
    -- sha256 of the canonical request (workflow, requested version, input, task id, client run id).
    fingerprint      text        NOT NULL,
    workflow         text        NOT NULL,
    -- The version the first request resolved to: a retry publishes the same one.
    workflow_version int         NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set once the broker acknowledged the run request; while NULL, a retry of the same body publishes.
    published_at     timestamptz,
    PRIMARY KEY (tenant_id, kind, client_key)
);
CREATE INDEX api_idempotency_by_run ON api_idempotency (tenant_id, run_id);
