"""Simulated outside world: email provider, CRM and model server as real HTTP apps with fault injection."""
