-- Projections: disposable tables the projector builds from the topics (services/projector).
-- Their DDL lives in this one function so that the live schema `keel`, a rebuild (`keel_rebuild`) and
-- the tests' schemas are created identically. Changing the tables later is a new migration that
-- replaces the function and alters schema `keel` the same way.
CREATE OR REPLACE FUNCTION keel_create_projection_tables(target text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', target);
    EXECUTE format($ddl$
        CREATE TABLE %1$I.runs (
            run_id           text PRIMARY KEY,
            tenant_id        text NOT NULL,
            workflow         text NOT NULL,
            workflow_version int,
            task_id          text,
            status           text NOT NULL DEFAULT 'unknown',
            input_json       jsonb,
            output_json      jsonb,
            error            text,
            created_at       timestamptz NOT NULL,
            updated_at       timestamptz NOT NULL,
            ended_at         timestamptz,
            cost_usd         numeric NOT NULL DEFAULT 0
        );
        CREATE INDEX runs_by_tenant ON %1$I.runs (tenant_id, created_at DESC, run_id DESC);

        CREATE TABLE %1$I.steps (
            run_id          text NOT NULL,
            step            text NOT NULL,
            kind            text,
            status          text NOT NULL DEFAULT 'running',
            attempts        int NOT NULL DEFAULT 0,
            idempotency_key text,
            external_id     text,
            output_json     jsonb,
            cost_usd        numeric NOT NULL DEFAULT 0,
            started_at      timestamptz,
            committed_at    timestamptz,
            updated_at      timestamptz NOT NULL,
            PRIMARY KEY (run_id, step)
        );

        CREATE TABLE %1$I.attempts (
            run_id        text NOT NULL,
            step          text NOT NULL,
            attempt       int NOT NULL,
            status        text NOT NULL DEFAULT 'running',
            started_at    timestamptz,
            ended_at      timestamptz,
            failure_class text,
            error         text,
            PRIMARY KEY (run_id, step, attempt)
        );

        -- Every fact, whole (body), in log order per run.
        CREATE TABLE %1$I.events (
            event_id        text PRIMARY KEY,
            run_id          text NOT NULL,
            tenant_id       text NOT NULL,
            topic           text NOT NULL,
            "partition"     int NOT NULL,
            "offset"        bigint NOT NULL,
            ts              timestamptz NOT NULL,
            event           text NOT NULL,
            step            text,
            attempt         int NOT NULL,
            source          text,
            idempotency_key text,
            external_id     text,
            failure_class   text,
            error           text,
            cost_usd        numeric,
            body            jsonb NOT NULL
        );
        CREATE INDEX events_by_run ON %1$I.events (run_id, topic, "partition", "offset");

        -- One row per event that cost money: "cost per agent per task per tenant" is one query.
        CREATE TABLE %1$I.costs (
            event_id  text PRIMARY KEY,
            tenant_id text NOT NULL,
            workflow  text NOT NULL,
            run_id    text NOT NULL,
            step      text,
            agent_id  text,
            model     text,
            cost_usd  numeric NOT NULL,
            ts        timestamptz NOT NULL
        );
        CREATE INDEX costs_by_tenant ON %1$I.costs (tenant_id, ts);

        -- Messages that could not be projected, kept with their origin and bytes, then skipped.
        CREATE TABLE %1$I.projection_errors (
            topic       text NOT NULL,
            "partition" int NOT NULL,
            "offset"    bigint NOT NULL,
            error_class text NOT NULL,
            reason      text NOT NULL,
            key         text,
            value       bytea,
            PRIMARY KEY (topic, "partition", "offset")
        );

        -- The projector's positions, written in the same transaction as the rows they produced. They
        -- live beside the tables so that swapping a rebuilt schema in moves them too.
        CREATE TABLE %1$I.projector_offsets (
            topic       text NOT NULL,
            "partition" int NOT NULL,
            next_offset bigint NOT NULL,
            PRIMARY KEY (topic, "partition")
        );
    $ddl$, target);
END
$fn$;

SELECT keel_create_projection_tables('keel');
