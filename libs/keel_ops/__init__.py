"""Operator and local-stack tooling: the `keel` command, the local stack, its supervisor, code generation.

The top floor: it may import the runtime library (`keel`) and the services; nothing but tests imports it.
"""
