"""The cluster family's session directory on the deployment's real Redis, as the runtimes
log in to it: what the gateways write is what the router finds, and nothing more.

Each test uses gateway ids of its own, so the deployment's gateways are not disturbed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from runtime.adapters.cluster import engine_auth
from runtime.adapters.cluster.redis_bus import SESSION_TTL, RedisDirectory, connect, route_key
from runtime.config import NodeConfig
from tests import engines
from tests.conftest import Deployment

pytestmark = pytest.mark.e2e

REGION = "local"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client_as(dep: Deployment, program: str) -> aioredis.Redis:
    """A Redis client logged in as `program`'s runtime user (its ACL applies)."""
    cfg = NodeConfig.load(dep.home / "config" / f"{program}.json").engines
    return connect(cfg.redis_url, **engine_auth.redis_kwargs(cfg, cfg.redis_url))


@pytest.fixture
async def clients(cluster_deployment: Deployment) -> AsyncIterator[
        tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis]]:
    """(as a gateway, as the sequencer, as msgctl-admin)."""
    dep = cluster_deployment
    port = dep.port + 25
    gw, seq = client_as(dep, "gateway-1.local"), client_as(dep, "sequencer.local")
    admin = aioredis.Redis.from_url(engines.redis_url(dep.home, port),
                                    **engines.redis_kwargs(dep.home, port))
    yield gw, seq, admin
    for c in (gw, seq, admin):
        await c.aclose()


async def test_the_router_finds_each_user_on_the_gateways_that_hold_a_session(
        clients: tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis]) -> None:
    gw, seq, admin = clients
    a_id, b_id = uid("gw-a"), uid("gw-b")
    a = RedisDirectory(gw, a_id, region=REGION)
    b = RedisDirectory(gw, b_id, region=REGION)
    router = RedisDirectory(seq, region=REGION, gateways=[a_id, b_id])
    await a.start()
    await b.start()
    ann, bob, both, nobody = uid("ann"), uid("bob"), uid("both"), uid("nobody")
    try:
        a.register(ann, "phone", "s1", a_id)
        a.register(ann, "laptop", "s2", a_id)
        b.register(bob, "phone", "s3", b_id)
        a.register(both, "phone", "s4", a_id)
        b.register(both, "laptop", "s5", b_id)
        assert await a.settle(5) and await b.settle(5)
        found = await router.gateways_of([ann, bob, both, nobody])
        assert found == {a_id: [ann, both], b_id: [bob, both]}
        assert 0 < await admin.ttl(route_key(REGION, a_id)) <= SESSION_TTL

        # one of two sessions gone: still there; the last one gone: not any more
        a.unregister(ann, "phone", "s1")
        assert await a.settle(5)
        assert (await router.gateways_of([ann])) == {a_id: [ann]}
        a.unregister(ann, "laptop", "s2")
        b.unregister(both, "laptop", "s5")
        assert await a.settle(5) and await b.settle(5)
        assert await router.gateways_of([ann, both]) == {a_id: [both]}

        # gone and back again before anything was written: there
        b.unregister(bob, "phone", "s3")
        b.register(bob, "phone", "s6", b_id)
        assert await b.settle(5)
        assert await router.gateways_of([bob]) == {b_id: [bob]}
        # the session hash push asks is kept as before
        assert await router.device_online(bob, "phone")
        assert not await router.device_online(ann, "phone")
    finally:
        await a.stop()
        await b.stop()
    # a clean stop takes the gateway's route hash with it
    assert not await admin.exists(route_key(REGION, a_id), route_key(REGION, b_id))
    assert await router.gateways_of([both, bob]) == {}


async def test_a_restarted_gateway_forgets_the_users_of_the_process_before(
        clients: tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis]) -> None:
    """A gateway that died left its users in its route hash; the next process with its
    id replaces the hash before it takes a session, so nothing is routed there for them."""
    gw, seq, admin = clients
    g = uid("gw")
    stale, fresh = uid("stale"), uid("fresh")
    await admin.hset(route_key(REGION, g), stale, 1)
    again = RedisDirectory(gw, g, region=REGION)
    router = RedisDirectory(seq, region=REGION, gateways=[g])
    assert await router.gateways_of([stale]) == {g: [stale]}
    await again.start()
    try:
        assert await router.gateways_of([stale]) == {}
        again.register(fresh, "phone", "s1", g)
        assert await again.settle(5)
        assert await router.gateways_of([stale, fresh]) == {g: [fresh]}
    finally:
        await again.stop()


async def test_refresh_writes_the_route_hash_again_after_redis_lost_it(
        clients: tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis]) -> None:
    gw, seq, admin = clients
    g = uid("gw")
    user = uid("ann")
    directory = RedisDirectory(gw, g, region=REGION)
    router = RedisDirectory(seq, region=REGION, gateways=[g])
    await directory.start()
    try:
        directory.register(user, "phone", "s1", g)
        assert await directory.settle(5)
        await admin.delete(route_key(REGION, g))  # as a Redis that restarted empty
        assert await router.gateways_of([user]) == {}
        await directory.refresh()
        assert await router.gateways_of([user]) == {g: [user]}
        assert 0 < await admin.ttl(route_key(REGION, g)) <= SESSION_TTL
    finally:
        await directory.stop()
