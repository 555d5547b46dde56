"""Cluster backends: Cassandra, Kafka and Redis adapters implementing `runtime.ports`."""
