"""The notifier: webhooks and log lines for tenants when a case opens, an approval waits or a run ends."""
