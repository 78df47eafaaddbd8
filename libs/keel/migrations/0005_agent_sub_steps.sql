-- Agent steps: their sub-steps (`call`: turn-N for a model turn, turn-N.call-I for a tool call) kept
-- apart in the projections. attempts gains `call` in its key ('' for a plain step: a key column cannot
-- be null), so the attempts of turn 1, turn 2 and each tool call no longer overwrite each other; events
-- and costs carry `call` (null for a plain step); steps carries the agent step's agent and its turns.
--
-- The DDL function is replaced whole (the tables as 0002 made them, the new columns last), and every
-- projection schema already there is altered to the same shape: ADD COLUMN appends, so a rebuilt schema
-- and an altered one have the same columns in the same order.
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
            agent_id        text,
            turns           int,
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
            call          text NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, step, call, attempt)
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
            body            jsonb NOT NULL,
            call            text
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
            ts        timestamptz NOT NULL,
            call      text
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


-- Every existing projection schema (the live `keel`, a left-over shadow): one with a projector_offsets
-- and an attempts table that has no `call` yet. Rows projected earlier by an older projector keep
-- their sub-steps merged; `keel rebuild` projects them again from the topic.
DO $do$
DECLARE
    target text;
BEGIN
    FOR target IN
        SELECT a.table_schema FROM information_schema.tables a
        JOIN information_schema.tables o
          ON o.table_schema = a.table_schema AND o.table_name = 'projector_offsets'
        WHERE a.table_name = 'attempts' AND NOT EXISTS (
            SELECT 1 FROM information_schema.columns c
            WHERE c.table_schema = a.table_schema AND c.table_name = 'attempts' AND c.column_name = 'call')
    LOOP
        EXECUTE format($ddl$
            ALTER TABLE %1$I.steps ADD COLUMN agent_id text, ADD COLUMN turns int;
            ALTER TABLE %1$I.attempts ADD COLUMN call text NOT NULL DEFAULT '',
                DROP CONSTRAINT attempts_pkey, ADD PRIMARY KEY (run_id, step, call, attempt);
            ALTER TABLE %1$I.events ADD COLUMN call text;
            UPDATE %1$I.events SET call = body->>'call' WHERE body->>'call' IS NOT NULL;
            ALTER TABLE %1$I.costs ADD COLUMN call text;
        $ddl$, target);
    END LOOP;
END
$do$;
