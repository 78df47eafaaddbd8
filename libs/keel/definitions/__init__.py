"""Definitions registered at runtime (workflows, tools): records, kinds, the topic, readers, views."""
