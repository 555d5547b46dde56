"""Prometheus metrics of a runtime process (served at `/metrics`)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()

# a collection of a few thousand young objects takes a fraction of a millisecond; of the
# 100,000 the runtimes let gather (runtime.node), tens of milliseconds; a full one, more
_GC_PAUSE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1, 2.5)
# fine between 10 and 250 ms, where the cluster path's stages fall
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15,
            0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("msgctl_connections", "Open WebSocket sessions", registry=r)
        self.frames_in = Counter("msgctl_frames_received", "Client frames by type", ["t"],
                                 registry=r)
        self.frames_out = Counter("msgctl_frames_sent", "Server frames by type", ["t"],
                                  registry=r)
        self.errors = Counter("msgctl_errors", "Error frames by code", ["code"], registry=r)
        self.closes = Counter("msgctl_closes", "Connections closed by the server", ["reason"],
                              registry=r)
        self.messages = Counter("msgctl_messages", "Messages sequenced and made durable",
                                registry=r)
        self.deliveries = Counter("msgctl_deliveries", "msg frames queued to devices",
                                  registry=r)
        self.send_seconds = Histogram("msgctl_send_seconds", "send -> sent at the gateway",
                                      buckets=_LATENCY, registry=r)
        self.append_seconds = Histogram("msgctl_append_seconds", "Durable append of one batch",
                                        buckets=_LATENCY, registry=r)
        self.txn_seconds = Histogram("msgctl_txn_seconds",
                                     "Kafka transaction of one sequencer batch (produce, "
                                     "offsets, commit)", buckets=_LATENCY, registry=r)
        self.ingress_lag_seconds = Histogram(
            "msgctl_ingress_lag_seconds",
            "Send at the gateway -> its batch planned by the sequencer", buckets=_LATENCY,
            registry=r)
        self.route_lag_seconds = Histogram(
            "msgctl_route_lag_seconds", "Send at the gateway -> message read by the router",
            buckets=_LATENCY, registry=r)
        self.publish_lag_seconds = Histogram(
            "msgctl_publish_lag_seconds",
            "Send at the gateway of a published batch's oldest message -> the batch "
            "published to the gateways by the router",
            buckets=_LATENCY, registry=r)
        self.gateway_lag_seconds = Histogram(
            "msgctl_gateway_lag_seconds",
            "Send at the gateway of the oldest message in a routed batch -> the batch read "
            "by a gateway it was published to", buckets=_LATENCY, registry=r)
        self.store_seconds = Histogram("msgctl_store_seconds",
                                       "Store writer: one batch into the message store",
                                       buckets=_LATENCY, registry=r)
        # what the store writer's batches cost Cassandra: partitions written (each its own
        # mutation and commit log entry) and the requests that carried them
        self.store_writes = Counter(
            "msgctl_store_writes",
            "Store writer: partitions written, by kind (messages: a conversation bucket's "
            "messages; cids: a sender's cid index rows; heads_beside: heads in the messages' "
            "own mutation; heads_apart: conv_heads rows written after them)", ["what"],
            registry=r)
        self.store_requests = Counter("msgctl_store_requests",
                                      "Store writer: Cassandra requests of its batches",
                                      registry=r)
        self.push = Counter("msgctl_push", "Push notifications by outcome", ["outcome"],
                            registry=r)
        self.push_queue = Gauge("msgctl_push_queue", "Push notifications waiting", registry=r)
        self.routed = Counter("msgctl_routed_events", "Events handed to gateways by the router",
                              registry=r)
        self.presence_online = Gauge("msgctl_presence_online", "Users online", registry=r)
        self.heap_trims = Counter("msgctl_heap_trims",
                                  "Trims of the process's malloc heap (every 30 s while at "
                                  "least 8 MiB of it is free)",
                                  registry=r)
        self.heap_released = Counter("msgctl_heap_released_bytes",
                                     "Resident bytes the heap trims gave back to the OS",
                                     registry=r)
        self.gc_pause_seconds = Histogram(
            "msgctl_gc_pause_seconds",
            "Collections of Python's cyclic collector in this process (each stops every "
            "thread that runs Python code), by generation", ["generation"],
            buckets=_GC_PAUSE, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics()


@functools.cache
def labelled(metric: Any, value: str) -> Any:
    """A metric's child for one label value, resolved once (`labels()` locks and looks up)."""
    return metric.labels(value)
