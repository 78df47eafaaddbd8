-- Tenant isolation in the database and the audit trail (docs/tenancy.md sections 4 and 5).
--
-- 1. The role `keel_api`: the API connects as it (services/api/pool.py). It owns nothing, so row-level
--    security applies to it (owners and superusers bypass RLS); it may read the projections and write
--    its own idempotency record, nothing else (no tool credentials, no offsets, no migrations).
-- 2. Row-level security on every projection table a tenant's rows live in: a row is visible when its
--    tenant is the session's `keel.tenant` setting, or when that setting is `*` (an operator). With the
--    setting absent or empty, nothing is visible: a query that forgot to say whose rows it wants gets
--    none. `steps` and `attempts` carry no tenant: a row is visible when its run is.
--    Not FORCEd: the tables' owner is the projector (and the migrator), which writes every tenant's rows
--    by design; FORCE would only bind a non-superuser owner, and the API never queries as the owner.
-- 3. `audit`: an append-only projection of who did what (services/projector/audit.py). The API's role
--    may SELECT it; a trigger refuses UPDATE and DELETE to everyone, the owner included (a rebuild
--    replaces the whole schema instead).
--
-- The DDL function is replaced whole (the tables as 0007 made them, plus `audit`, then the policies
-- and grants), so a rebuild's fresh schema has them; every projection schema already there gets the
-- same. A new projection table with a tenant must be added to keel_secure_projection_tables.

DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_api') THEN
        -- LOGIN: the API connects as this role (no SET ROLE a query could RESET). Its password, where
        -- the server asks for one, comes from libpq's usual places (PGPASSWORD, ~/.pgpass).
        CREATE ROLE keel_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are cluster-wide: another database's migration created it meanwhile
END
$role$;

CREATE OR REPLACE FUNCTION keel_create_audit_table(target text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($ddl$
        -- Who did what, one row per fact or command, keyed by its event id or command id (a replayed
        -- message adds nothing). `source` is where it was read: topic:partition:offset.
        CREATE TABLE %1$I.audit (
            id        text PRIMARY KEY,
            at        timestamptz NOT NULL,
            tenant_id text,
            actor     text,
            action    text NOT NULL,
            run_id    text,
            step      text,
            detail    jsonb,
            source    text NOT NULL
        );
        CREATE INDEX audit_by_tenant ON %1$I.audit (tenant_id, at, id);
        CREATE INDEX audit_by_run ON %1$I.audit (run_id, at, id);
        CREATE INDEX audit_by_actor ON %1$I.audit (actor, at, id);
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON %1$I.audit
            FOR EACH ROW EXECUTE FUNCTION keel_audit_append_only();
    $ddl$, target);
END
$fn$;

CREATE OR REPLACE FUNCTION keel_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP;
END
$fn$;

CREATE OR REPLACE FUNCTION keel_secure_projection_tables(target text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    t text;
    mine CONSTANT text := $p$(current_setting('keel.tenant', true) = '*'
                             OR tenant_id = current_setting('keel.tenant', true))$p$;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO keel_api', target);
    FOREACH t IN ARRAY ARRAY['runs', 'events', 'costs', 'cases', 'audit'] LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', target, t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_rows ON %I.%I', target, t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I.%I FOR SELECT USING %s', target, t, mine);
        EXECUTE format('GRANT SELECT ON %I.%I TO keel_api', target, t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['steps', 'attempts'] LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', target, t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_rows ON %I.%I', target, t);
        -- The subquery reads runs under runs' own policy: a step is visible when its run is.
        EXECUTE format(
            'CREATE POLICY tenant_rows ON %1$I.%2$I FOR SELECT USING '
            '(EXISTS (SELECT 1 FROM %1$I.runs r WHERE r.run_id = %2$I.run_id))', target, t);
        EXECUTE format('GRANT SELECT ON %I.%I TO keel_api', target, t);
    END LOOP;
    -- projection_errors (raw bytes of any tenant) and projector_offsets: not the API's to read.
END
$fn$;

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
    PERFORM keel_create_audit_table(target);
    PERFORM keel_secure_projection_tables(target);
END
$fn$;

-- Every projection schema already there: the audit table, the policies and the grants.
DO $do$
DECLARE
    target text;
BEGIN
    FOR target IN
        SELECT o.table_schema FROM information_schema.tables o WHERE o.table_name = 'projector_offsets'
    LOOP
        IF to_regclass(format('%I.audit', target)) IS NULL THEN
            PERFORM keel_create_audit_table(target);
        END IF;
        PERFORM keel_secure_projection_tables(target);
    END LOOP;
END
$do$;

-- The API's idempotency record (0003): the API writes it, per tenant, under the same rule.
ALTER TABLE api_idempotency ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_rows ON api_idempotency;
CREATE POLICY tenant_rows ON api_idempotency
    USING (current_setting('keel.tenant', true) = '*' OR tenant_id = current_setting('keel.tenant', true))
    WITH CHECK (current_setting('keel.tenant', true) = '*' OR tenant_id = current_setting('keel.tenant', true));
GRANT SELECT, INSERT, UPDATE ON api_idempotency TO keel_api;

-- Nobody but the owner creates projection schemas or changes their security.
REVOKE EXECUTE ON FUNCTION keel_create_projection_tables(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION keel_create_audit_table(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION keel_secure_projection_tables(text) FROM PUBLIC;
