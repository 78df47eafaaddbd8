"""`make bench`: Keel's throughput and latencies beside the raw Kafka floor and two peers, in one run."""
