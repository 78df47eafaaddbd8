"""The dashboard: a stream consumer of keel.run-events serving runs by status, spend and failure classes."""
