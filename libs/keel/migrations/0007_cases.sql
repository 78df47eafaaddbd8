-- Cases: the quarantine cases and approvals of docs/quarantine.md as a projection table, so that
-- `GET /v1/quarantine`, `GET /v1/approvals` and `keel quarantine list` are one query. A case opens with
-- `quarantined` or `approval_requested` and closes with `quarantine_resolved`; the projector merges its
-- columns so that a replayed fact never changes a decided case back (services/projector/tables.py).
--
-- The DDL function is replaced whole (the tables as 0006 made them, plus `cases`), and every projection
-- schema already there gets the same table. Cases opened before this migration appear after
-- `keel projections rebuild`, which projects them again from the topic.
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

        -- Cases (docs/quarantine.md): a quarantined step or a waiting approval, opened by `quarantined` /
        -- `approval_requested`, closed once by `quarantine_resolved`. A decided case never reopens.
        CREATE TABLE %1$I.cases (
            case_id             text PRIMARY KEY,
            tenant_id           text NOT NULL,
            run_id              text NOT NULL,
            workflow            text,
            step                text,
            call                text,
            attempt             int,
            kind                text NOT NULL,
            status              text NOT NULL DEFAULT 'open',
            reason              text,
            failure_class       text,
            idempotency_key     text,
            input_ref           text,
            input_json          jsonb,
            output_ref          text,
            output_json         jsonb,
            error               text,
            opened_by           text,
            opened_at           timestamptz,
            deadline            timestamptz,
            decision            text,
            decided_by          text,
            decided_at          timestamptz,
            decision_reason     text,
            decision_command_id text,
            decision_key        text,
            decision_json       jsonb
        );
        CREATE INDEX cases_by_status ON %1$I.cases (status, opened_at, case_id);
        CREATE INDEX cases_by_tenant ON %1$I.cases (tenant_id, status, opened_at);
        CREATE INDEX cases_by_run ON %1$I.cases (run_id);

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
        SELECT o.table_schema FROM information_schema.tables o
        WHERE o.table_name = 'projector_offsets' AND NOT EXISTS (
            SELECT 1 FROM information_schema.tables c
            WHERE c.table_schema = o.table_schema AND c.table_name = 'cases')
    LOOP
        EXECUTE format($ddl$
            CREATE TABLE %1$I.cases (
                case_id             text PRIMARY KEY,
                tenant_id           text NOT NULL,
                run_id              text NOT NULL,
                workflow            text,
                step                text,
                call                text,
                attempt             int,
                kind                text NOT NULL,
                status              text NOT NULL DEFAULT 'open',
                reason              text,
                failure_class       text,
                idempotency_key     text,
                input_ref           text,
                input_json          jsonb,
                output_ref          text,
                output_json         jsonb,
                error               text,
                opened_by           text,
                opened_at           timestamptz,
                deadline            timestamptz,
                decision            text,
                decided_by          text,
                decided_at          timestamptz,
                decision_reason     text,
                decision_command_id text,
                decision_key        text,
                decision_json       jsonb
            );
            CREATE INDEX cases_by_status ON %1$I.cases (status, opened_at, case_id);
            CREATE INDEX cases_by_tenant ON %1$I.cases (tenant_id, status, opened_at);
            CREATE INDEX cases_by_run ON %1$I.cases (run_id);
        $ddl$, target);
    END LOOP;
END
$do$;
