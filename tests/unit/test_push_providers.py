"""FCM and APNs providers against the local stand-ins that check requests as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.adapters.push import ApnsProvider, FcmProvider, PushError, build_provider
from runtime.config import PushConfig
from runtime.ports import PushToken
from tests.standins import INVALID, TOO_MANY, UNAVAILABLE, Outcome, Standins

PAYLOAD = {"collapse_key": "c1", "conv": "c1", "seq": 3, "from": "alice", "kind": "text",
           "ts": 1, "badge": 2, "body": "hello"}


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standins]:
    s = Standins.start(tmp_path_factory.mktemp("standins"))
    yield s
    s.stop()


def fcm(s: Standins) -> FcmProvider:
    return FcmProvider.from_file(s.service_account, base_url=s.fcm.base_url)


def apns(s: Standins) -> ApnsProvider:
    return ApnsProvider.from_file(s.apns_key, key_id=s.apns.key_id, team_id=s.apns.team_id,
                                  topic=s.apns.topic, host=s.apns.host)


async def test_fcm_oauth_then_send_as_documented(standins: Standins) -> None:
    p = fcm(standins)
    before = standins.fcm.token_requests
    for seq in (1, 2):
        answer = await p.send(PushToken("bob", "phone", "fcm", "fcm-ok"), PAYLOAD | {"seq": seq})
        assert answer["status"] == 200 and answer["name"].startswith("projects/msgctl-test/")
    assert standins.fcm.token_requests == before + 1  # the access token is cached
    got = standins.fcm.script.for_token("fcm-ok")
    m = got[-1].body["message"]
    assert m["android"]["collapse_key"] == "c1"
    assert m["android"]["notification"]["notification_count"] == 2
    assert m["notification"]["body"] == "hello" and m["data"]["seq"] == "2"
    assert standins.fcm.script.violations == []
    await p.aclose()


async def test_fcm_hide_body_and_errors(standins: Standins) -> None:
    p = fcm(standins)
    payload = {k: v for k, v in PAYLOAD.items() if k != "body"}
    await p.send(PushToken("bob", "phone", "fcm", "fcm-hidden"), payload)
    m = standins.fcm.script.for_token("fcm-hidden")[-1].body["message"]
    assert "body" not in m["notification"] and "body" not in m["data"]
    standins.fcm.script.then("fcm-err", INVALID, Outcome(UNAVAILABLE, 7), Outcome(TOO_MANY, 2))
    tok = PushToken("bob", "phone", "fcm", "fcm-err")
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.invalid_token and e.value.reason == "UNREGISTERED" and e.value.status == 404
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.retryable and e.value.retry_after == 7 and e.value.status == 503
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.retryable and e.value.retry_after == 2 and e.value.status == 429
    await p.aclose()


async def test_fcm_stand_in_refuses_a_foreign_key(standins: Standins, tmp_path: Path) -> None:
    from tests.standins.keys import rsa_pems, write_service_account

    other, _ = rsa_pems()
    sa = write_service_account(tmp_path / "sa.json", other, project=standins.fcm.project,
                               client_email=standins.fcm.client_email,
                               token_uri=standins.fcm.token_uri)
    p = FcmProvider.from_file(sa, base_url=standins.fcm.base_url)
    with pytest.raises(PushError) as e:
        await p.send(PushToken("bob", "phone", "fcm", "x"), PAYLOAD)
    assert e.value.status == 400 and not e.value.retryable
    standins.fcm.script.violations.clear()
    await p.aclose()


async def test_apns_over_http2_as_documented(standins: Standins) -> None:
    p = apns(standins)
    answer = await p.send(PushToken("bob", "phone", "apns", "aa11"), PAYLOAD)
    assert answer["status"] == 200 and answer["apns_id"]
    r = standins.apns.script.for_token("aa11")[-1]
    assert r.headers["apns-collapse-id"] == "c1" and r.headers["apns-push-type"] == "alert"
    assert r.body["aps"]["badge"] == 2 and r.body["aps"]["alert"]["body"] == "hello"
    assert r.body["seq"] == 3
    assert standins.apns.script.violations == []
    first = p.provider_token()
    assert p.provider_token() == first  # reused, not re-signed per request
    standins.apns.script.then("bb22", INVALID, Outcome(UNAVAILABLE, 3))
    tok = PushToken("bob", "phone", "apns", "bb22")
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.invalid_token and e.value.status == 410 and e.value.reason == "Unregistered"
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.retryable and e.value.retry_after == 3
    await p.aclose()


async def test_apns_stand_in_refuses_a_wrong_topic(standins: Standins) -> None:
    p = ApnsProvider.from_file(standins.apns_key, key_id=standins.apns.key_id,
                               team_id=standins.apns.team_id, topic="com.other",
                               host=standins.apns.host)
    with pytest.raises(PushError) as e:
        await p.send(PushToken("bob", "phone", "apns", "cc33"), PAYLOAD)
    assert e.value.status == 400 and e.value.reason == "BadTopic"
    standins.apns.script.violations.clear()
    await p.aclose()


def test_build_provider_routes_by_platform(standins: Standins, tmp_path: Path) -> None:
    cfg = PushConfig(fcm={"service_account": str(standins.service_account),
                          "base_url": standins.fcm.base_url})
    router = build_provider(cfg, tmp_path, "local")
    assert isinstance(router.provider_for("fcm"), FcmProvider)
    assert router.provider_for("apns") is router.fallback  # not configured: the log sink
    assert "log sink" in router.describe()


async def test_fcm_refreshes_a_revoked_access_token(standins: Standins) -> None:
    p = fcm(standins)
    tok = PushToken("bob", "phone", "fcm", "fcm-revoked")
    await p.send(tok, PAYLOAD)
    standins.fcm.access_tokens.clear()  # expired or revoked at Google's end
    with pytest.raises(PushError) as e:
        await p.send(tok, PAYLOAD)
    assert e.value.status == 401 and e.value.retryable
    assert (await p.send(tok, PAYLOAD))["status"] == 200  # a fresh token on the retry
    standins.fcm.script.violations.clear()
    await p.aclose()


def test_retry_after_as_seconds_or_http_date() -> None:
    import email.utils
    import time

    from runtime.adapters.push.errors import parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = parse_retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 <= later <= 31
