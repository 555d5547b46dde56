"""The cluster family's runtimes: the Kafka sequencer, the store writer and router, the
presence hub and link, the event feed for push, and the gateway's link to them.

They are composed one per process by `runtime.cluster_node` and reach the engines
only through `runtime.adapters.cluster` (Kafka, Cassandra, Redis).
"""
