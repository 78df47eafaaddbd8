"""A small Confluent-compatible schema registry whose schemas are kept in a compacted Kafka topic."""
