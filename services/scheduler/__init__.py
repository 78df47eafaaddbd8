"""Scheduler: the run state machine (DAG, retries by failure class, durable timers)."""
