"""The ACLs of a region's Kafka: who may read and write which topic, group and transaction.

Principals are certificate CNs (msgctl.infra.security). Every region's Kafka
gets the same ACLs, since a gateway sends to the ingress of the region that
homes a conversation and a sequencer's reconciler to any region's ingress:

- msgctl-sequencer: reads `msg.ingress`, `msg.typing` and the mirrored
  `<region>.msg.events` / `<region>.msg.typing`; writes `msg.events` and
  `msg.seq-state` (transactional ids `msgctl-sequencer-*`) and `msg.ingress`
  (re-sends after a failover); creates the event topics; groups
  `msgctl-sequencer-*` and `msgctl-router-*`.
- msgctl-gateway: writes `msg.ingress` and `msg.typing`, nothing else.
- msgctl-presence: writes `presence.events`, reads the mirrored
  `<region>.presence.events`; groups `msgctl-presence-*`.
- msgctl-push: reads `msg.events`; groups `msgctl-push-*`.

The broker, msgctl's own identity and MirrorMaker 2 are super users
(`security.kafka_super_users`). Made by the readiness probe (`ensure`), as msgctl.
"""

from __future__ import annotations

from typing import Any

from msgctl.infra import security

INGRESS, EVENTS, SEQ_STATE = "msg.ingress", "msg.events", "msg.seq-state"
TYPING, PRESENCE = "msg.typing", "presence.events"
TOPICS = (INGRESS, EVENTS, SEQ_STATE, TYPING, PRESENCE)


def rules(regions: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(principal, resource type, pattern, name, operation) of every ACL."""
    seq, gw = security.principal("sequencer"), security.principal("gateway")
    presence, push = security.principal("presence"), security.principal("push")
    out: list[tuple[str, str, str, str, str]] = []

    def allow(who: str, kind: str, names: list[str], ops: tuple[str, ...],
              pattern: str = "LITERAL") -> None:
        out.extend((who, kind, pattern, name, op) for name in names for op in ops)

    mirrored = [f"{r}.{t}" for r in regions for t in (EVENTS, TYPING)]
    allow(seq, "TOPIC", list(TOPICS), ("CREATE", "DESCRIBE"))
    allow(seq, "TOPIC", [INGRESS, EVENTS, SEQ_STATE, TYPING, *mirrored], ("READ",))
    allow(seq, "TOPIC", [INGRESS, EVENTS, SEQ_STATE], ("WRITE",))
    allow(seq, "TOPIC", mirrored, ("DESCRIBE",))
    allow(seq, "GROUP", ["msgctl-sequencer-", "msgctl-router-"], ("READ", "DESCRIBE"),
          "PREFIXED")
    allow(seq, "TRANSACTIONAL_ID", ["msgctl-sequencer-"], ("WRITE", "DESCRIBE"), "PREFIXED")
    allow(gw, "TOPIC", [INGRESS, TYPING], ("WRITE", "DESCRIBE"))
    copies = [f"{r}.{PRESENCE}" for r in regions]
    allow(presence, "TOPIC", [PRESENCE], ("WRITE", "DESCRIBE"))
    allow(presence, "TOPIC", copies, ("READ", "DESCRIBE"))
    allow(presence, "GROUP", ["msgctl-presence-"], ("READ", "DESCRIBE"), "PREFIXED")
    allow(push, "TOPIC", [EVENTS], ("READ", "DESCRIBE"))
    allow(push, "GROUP", ["msgctl-push-"], ("READ", "DESCRIBE"), "PREFIXED")
    return out


def ensure(admin: Any, regions: list[str], timeout: float) -> int:
    """Create the ACLs missing on the Kafka `admin` talks to (as a super user); returns how
    many were created. Creating an existing ACL changes nothing."""
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    have = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY), request_timeout=timeout).result(timeout)
    existing = {(b.principal, b.restype.name, b.resource_pattern_type.name, b.name,
                 b.operation.name) for b in have}
    missing = [AclBinding(ResourceType[kind], name, ResourcePatternType[pattern],
                          f"User:{who}", "*", AclOperation[op], AclPermissionType.ALLOW)
               for who, kind, pattern, name, op in rules(regions)
               if (f"User:{who}", kind, pattern, name, op) not in existing]
    if missing:
        for fut in admin.create_acls(missing, request_timeout=timeout).values():
            fut.result(timeout)
    return len(missing)
