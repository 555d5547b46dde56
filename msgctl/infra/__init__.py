"""Engine provisioning: the catalog, the jar cache, config writers, probes and engine programs.

Kafka and Cassandra come from Maven Central jars fetched once into a cache
outside any deployment; Redis is the OS's ``redis-server``. A topology either
lets msgctl run an engine under the supervisor or points at one that already
runs elsewhere (``external:``).
"""
