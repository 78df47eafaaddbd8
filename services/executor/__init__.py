"""Step executor: runs llm steps through the model router and dispatches tool steps to the adapters."""
