"""Commit ledger: the single committer of side effects; answers "already committed?"."""
