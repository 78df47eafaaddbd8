"""Keel's shared library: settings, contracts and serde, topics, the transactional bus, database."""
