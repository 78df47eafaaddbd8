"""The HTTP API: submit runs, read their state and timelines from the projections, per tenant."""
