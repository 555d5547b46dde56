"""Redis for the cluster family: the session directory and the delivery channels.

Directory: one hash per user, ``sessions:{user}`` with ``{device}|{session}``
-> ``{gateway}|{unix seconds}``, rewritten by its gateway every SESSION_TTL/3.
A field older than SESSION_TTL belongs to a gateway that died (the key's own
expiry is refreshed by the user's other devices), so readers ignore it. Push
asks it whether a device is online. The router asks the gateways' own hashes,
``route:{region}:{gateway}`` with a field per user who has a session there: one
HMGET per gateway finds a round's users, where a HVALS per user cost the
router's process 2.3 ms of CPU for 200 users (benchmarks/directory_lookup.py).
Such a hash is the gateway's alone: it replaces it at start and after a write
failed, keeps its expiry at SESSION_TTL, and drops it on a clean stop, so a dead
gateway's hash is gone within SESSION_TTL.
Channels: ``gw:{region}:{gateway}`` carries events to one gateway,
``presence.in`` carries session/heartbeat/watch reports to the presence
runtime, ``presence.resync`` asks every gateway to report again (after the
presence runtime or Redis restarted), ``push.tokens`` names a user whose push
tokens a gateway just changed (published in every region: the push runtime
that keeps them is the conversation's home's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from runtime.adapters.cluster import envelopes as env

log = logging.getLogger("msgctl.directory")

SESSION_TTL = 30  # seconds; gateways refresh every SESSION_TTL / 3
PRESENCE_IN = "presence.in"
PRESENCE_RESYNC = "presence.resync"
PUSH_TOKENS = "push.tokens"


def gateway_channel(region: str, gateway: str) -> str:
    return f"gw:{region}:{gateway}"


def route_key(region: str, gateway: str) -> str:
    """The hash of the users who have a session on `gateway` (field: user, value: 1)."""
    return f"route:{region}:{gateway}"


def connect(url: str, *, retries: int = 1, **auth: Any) -> aioredis.Redis:
    """A client; `retries=0` for subscriptions, whose loss the caller must see to resync.
    `auth`: the ACL user and TLS settings (runtime.adapters.cluster.engine_auth)."""
    return aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3,
                                   health_check_interval=10, retry_on_timeout=False,
                                   retry=Retry(NoBackoff(), retries), **auth)


def _entry(gateway: str) -> str:
    return f"{gateway}|{int(time.time())}"


def _live_gateway(value: bytes | str, now: float) -> str | None:
    """The gateway of a directory field, or None when it went stale (its gateway died)."""
    text = value.decode() if isinstance(value, bytes) else value
    gateway, _, stamp = text.rpartition("|")
    try:
        if now - int(stamp) > SESSION_TTL:
            return None
    except ValueError:
        return None
    return gateway or None


class RedisDirectory:
    """The SessionDirectory port on Redis. Writes are queued and applied in order.

    A gateway's directory writes its sessions (`gateway`: its id); the router's finds
    users among the region's `gateways`; push's only asks `device_online`.
    """

    def __init__(self, client: aioredis.Redis, gateway: str = "", *, region: str = "",
                 gateways: Sequence[str] = ()) -> None:
        self.redis = client
        self.gateway = gateway
        self.region = region
        self.gateways = tuple(gateways)
        self._local: dict[tuple[str, str, str], str] = {}  # this gateway's own sessions
        self._users: Counter[str] = Counter()  # user -> how many of them
        self._ops: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # ops queued and ops written, so `settle` can wait for a registration to land
        self._queued = 0
        self._written = 0
        self._progress = asyncio.Condition()
        # one write at a time: a refresh (also asked for by the gateway's link after
        # Redis came back) must not overtake a batch that removes a user, or that user
        # would stay in the route hash
        self._writing = asyncio.Lock()

    async def start(self) -> None:
        """Start writing; a gateway first replaces whatever its route hash held (a
        previous process of this gateway may have died with users in it)."""
        if self.gateway:
            await self._replace_routes()
        self._task = asyncio.create_task(self._run(), name="directory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # a clean stop removes this gateway's sessions at once instead of waiting for the TTL
        with contextlib.suppress(RedisError, OSError):
            pipe = self.redis.pipeline(transaction=False)
            for (user, device, session) in self._local:
                pipe.hdel(f"sessions:{user}", f"{device}|{session}")
            if self.gateway:
                pipe.delete(self._route_key)
            await pipe.execute()

    @property
    def _route_key(self) -> str:
        return route_key(self.region, self.gateway)

    def register(self, user: str, device: str, session: str, gateway: str) -> None:
        if (user, device, session) not in self._local:
            self._users[user] += 1
        self._local[(user, device, session)] = gateway
        self._ops.put_nowait(("set", user, device, session))
        self._queued += 1

    def unregister(self, user: str, device: str, session: str) -> None:
        if self._local.pop((user, device, session), None) is not None:
            self._users[user] -= 1
            if self._users[user] <= 0:
                del self._users[user]
        self._ops.put_nowait(("del", user, device, session))
        self._queued += 1

    async def settle(self, timeout: float) -> bool:
        """Wait until what was registered so far is in Redis (False after `timeout`).

        A session that is not in Redis yet is not routed to: live events for it
        (typing, say) would go nowhere.
        """
        target = self._queued

        async def written() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)

        try:
            await asyncio.wait_for(written(), timeout)
            return True
        except TimeoutError:
            return False

    async def _run(self) -> None:
        refresh_every = SESSION_TTL / 3
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + refresh_every
        replace = False
        while True:
            try:
                timeout = max(0.0, next_refresh - loop.time())
                with contextlib.suppress(TimeoutError):
                    op = await asyncio.wait_for(self._ops.get(), timeout)
                    batch = [op]
                    while not self._ops.empty() and len(batch) < 500:
                        batch.append(self._ops.get_nowait())
                    try:
                        await self._apply(batch)
                    finally:
                        # a failed batch is done too: its sets go with the next refresh,
                        # its deletes were queued again (and counted again)
                        async with self._progress:
                            self._written += len(batch)
                            self._progress.notify_all()
                if loop.time() >= next_refresh:
                    if replace and self.gateway:
                        await self._replace_routes()
                        replace = False
                    await self.refresh()
                    next_refresh = loop.time() + refresh_every
            except (RedisError, OSError) as exc:
                # Redis is away: keep the local truth, write it all again once it is back
                # (the route hash replaced whole, as at start: Redis may be back with an
                # older copy of it, holding users who left meanwhile)
                log.warning("session directory write failed (%s); re-registering on reconnect",
                            exc)
                await asyncio.sleep(1.0)
                next_refresh = loop.time()
                replace = True

    async def _apply(self, batch: list[tuple[str, str, str, str]]) -> None:
        async with self._writing:
            await self._apply_now(batch)

    async def _apply_now(self, batch: list[tuple[str, str, str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        routes = self._route_key
        added = False
        for kind, user, device, session in batch:
            key = f"sessions:{user}"
            # the route hash follows the local truth as it is now, not as it was when the
            # op was queued: after the batch it holds exactly the users with a session here
            if kind == "set":
                if self.gateway and user in self._users:
                    pipe.hset(routes, user, 1)
                    added = True
                gateway = self._local.get((user, device, session))
                if gateway is None:  # unregistered since: the del that follows wins anyway
                    continue
                pipe.hset(key, f"{device}|{session}", _entry(gateway))
                pipe.expire(key, SESSION_TTL)
            else:
                pipe.hdel(key, f"{device}|{session}")
                if self.gateway and user not in self._users:
                    pipe.hdel(routes, user)
        if added:
            pipe.expire(routes, SESSION_TTL)
        try:
            await pipe.execute()
        except (RedisError, OSError):
            # the deletes must not be lost (a stale field would read as online until it
            # ages out); the sets are rewritten by the next refresh anyway
            for op in batch:
                if op[0] == "del":
                    self._ops.put_nowait(op)
                    self._queued += 1
            raise

    async def refresh(self) -> None:
        """Write every local session again (periodically, and after Redis came back)."""
        async with self._writing:
            await self._refresh_now()

    async def _refresh_now(self) -> None:
        items = list(self._local.items())
        for i in range(0, len(items), 500):
            pipe = self.redis.pipeline(transaction=False)
            for (user, device, session), gateway in items[i:i + 500]:
                key = f"sessions:{user}"
                pipe.hset(key, f"{device}|{session}", _entry(gateway))
                pipe.expire(key, SESSION_TTL)
            await pipe.execute()
        if self.gateway:
            await self._write_routes(self.redis.pipeline(transaction=False))

    async def _replace_routes(self) -> None:
        """The route hash replaced by the users with a session here now, atomically."""
        async with self._writing:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(self._route_key)
            await self._write_routes(pipe)

    async def _write_routes(self, pipe: Any) -> None:
        users = list(self._users)
        for i in range(0, len(users), 500):
            pipe.hset(self._route_key, mapping=dict.fromkeys(users[i:i + 500], 1))
        pipe.expire(self._route_key, SESSION_TTL)
        await pipe.execute()

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        """Which of the region's gateways each of `users` has a session on: one HMGET per
        gateway (a gateway that died took its hash with it within SESSION_TTL)."""
        if not users or not self.gateways:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for gateway in self.gateways:
            pipe.hmget(route_key(self.region, gateway), users)
        out: dict[str, list[str]] = {}
        for gateway, found in zip(self.gateways, await pipe.execute(), strict=True):
            there = [u for u, hit in zip(users, found, strict=True) if hit is not None]
            if there:
                out[gateway] = there
        return out

    async def device_online(self, user: str, device: str) -> bool:
        fields = await self.redis.hgetall(f"sessions:{user}")
        prefix = f"{device}|"
        now = time.time()
        return any((k.decode() if isinstance(k, bytes) else k).startswith(prefix)
                   and _live_gateway(v, now) is not None for k, v in fields.items())


class RegionsOnline:
    """`device_online` across regions: this region's directory, then the others' Redis.

    Push runs where a conversation is homed, but the recipient's phone may be
    connected to any region. A region that cannot be asked counts as "not there":
    a notification too many beats a missed one.
    """

    def __init__(self, local: RedisDirectory, peers: dict[str, aioredis.Redis]) -> None:
        self.local = local
        self.peers = {name: RedisDirectory(client) for name, client in peers.items()}

    async def device_online(self, user: str, device: str) -> bool:
        if await self.local.device_online(user, device):
            return True
        for name, directory in self.peers.items():
            try:
                if await directory.device_online(user, device):
                    return True
            except (RedisError, OSError) as exc:
                log.warning("cannot ask region %s whether %s/%s is online: %s", name, user,
                            device, exc)
        return False

    async def gateways_of(self, users: list[str]) -> dict[str, list[str]]:
        return await self.local.gateways_of(users)


class AnnouncedTokens:
    """A gateway's state store whose push-token changes are announced on `PUSH_TOKENS` in
    this region's Redis and every peer's, after the store has them: the push runtimes
    that keep users' tokens read that user again. Everything else goes to the store.

    The announcements go out in the background: the device's request is answered once
    the store has the token, not after a region across a partition times out. One that
    cannot be published is logged: a push runtime reads the token again within its TTL.
    """

    def __init__(self, state: Any, clients: dict[str, aioredis.Redis]) -> None:
        self._state = state
        self._clients = clients
        self._sending: set[asyncio.Task[None]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    async def set_push_token(self, token: Any) -> None:
        await self._state.set_push_token(token)
        self._announce(token.user)

    async def remove_push_token(self, user: str, device: str, token: str | None = None) -> None:
        await self._state.remove_push_token(user, device, token)
        self._announce(user)

    def _announce(self, user: str) -> None:
        for region, client in self._clients.items():
            task = asyncio.create_task(self._publish(region, client, user))
            self._sending.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _publish(region: str, client: aioredis.Redis, user: str) -> None:
        try:
            await client.publish(PUSH_TOKENS, user.encode())
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cannot announce %s's push tokens in region %s: %s", user, region, exc)


Handler = Callable[[str, bytes], Awaitable[None] | None]


class Subscriber:
    """Listens on channels, reconnecting with backoff; `on_reconnect` runs after each return.

    The handler gets each message's raw bytes and decodes them with the envelope of its
    channel (`runtime.adapters.cluster.envelopes`): one decode per hop.
    """

    def __init__(self, client: aioredis.Redis, channels: list[str], handler: Handler,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        self.redis = client
        self.channels = channels
        self.handler = handler
        self.on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="subscriber")
        await asyncio.wait_for(self.connected.wait(), 30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                self.connected.set()
                if not first and self.on_reconnect is not None:
                    await self.on_reconnect()
                first = False
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    channel = msg["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    try:
                        data = msg["data"]
                        res = self.handler(channel, data.encode() if isinstance(data, str)
                                           else data)
                        if res is not None:
                            await res
                    except Exception:
                        log.exception("handling a message on %s failed", channel)
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("redis subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


async def publish(client: aioredis.Redis, channel: str,
                  payload: dict[str, Any] | bytes) -> None:
    """Publish an encoded record, or a JSON object encoded here."""
    await client.publish(channel, payload if isinstance(payload, bytes) else env.dumps(payload))
