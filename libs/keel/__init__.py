"""Keel's runtime library: what services and user programs import at run time (contracts and serde, topics,
the transactional loop, settings, workflows, database). It never imports services/ or keel_ops/.
"""
