"""The projector: builds the queryable Postgres tables (runs, steps, attempts, events, costs)."""
