-- Cost as one query: the costs projection carries each fact's cost in integer micro-dollars
-- (`cost_micros`, the fact's own field: sums are exact, never binary floats), its task, and its UTC day,
-- so `GET /v1/costs` and `keel costs` group by tenant, agent, task, workflow, step, model or day in one
-- SQL query.
--
-- The new columns may be null: a projector of the previous release, still running during an upgrade,
-- writes rows without them; queries read a missing cost_micros as cost_usd rounded up.
--
-- The DDL function is replaced whole (the tables as 0005 made them, the new columns last), and every
-- projection schema already there is altered to the same shape. Rows projected by an older projector
-- get their micros from cost_usd (rounded up, as keel.pricing rounds), their task from their run and
-- their day from their time; `keel rebuild` projects them again from the topic, facts' own micros.
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
            call      text,
            task_id     text,
            cost_micros bigint,
            day         date
        );
        CREATE INDEX costs_by_tenant ON %1$I.costs (tenant_id, ts);
        CREATE INDEX costs_by_tenant_day ON %1$I.costs (tenant_id, day);

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


DO $do$
DECLARE
    target text;
BEGIN
    FOR target IN
        SELECT a.table_schema FROM information_schema.tables a
        JOIN information_schema.tables o
          ON o.table_schema = a.table_schema AND o.table_name = 'projector_offsets'
        WHERE a.table_name = 'costs' AND NOT EXISTS (
            SELECT 1 FROM information_schema.columns c
            WHERE c.table_schema = a.table_schema AND c.table_name = 'costs'
              AND c.column_name = 'cost_micros')
    LOOP
        EXECUTE format($ddl$
            ALTER TABLE %1$I.costs ADD COLUMN task_id text, ADD COLUMN cost_micros bigint,
                ADD COLUMN day date;
            UPDATE %1$I.costs c SET cost_micros = ceil(c.cost_usd * 1000000)::bigint,
                day = (c.ts AT TIME ZONE 'UTC')::date,
                task_id = (SELECT r.task_id FROM %1$I.runs r WHERE r.run_id = c.run_id);
            CREATE INDEX costs_by_tenant_day ON %1$I.costs (tenant_id, day);
        $ddl$, target);
    END LOOP;
END
$do$;
