"""TLS on the client edge: the gateway serves only wss:// and https://, with a certificate
from the deployment's CA, and msgctl's own clients trust it."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

from msgctl.tls import CaFiles, client_context, init_ca
from tests.conftest import TEST_CA, Deployment, msgctl
from tests.wsclient import Client

pytestmark = pytest.mark.e2e


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_plain_websocket_and_http_are_refused(embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    plain = dep.ws_url.replace("wss://", "ws://")
    with pytest.raises((InvalidMessage, ConnectionError, EOFError, OSError)):
        async with connect(plain, additional_headers={
                "Authorization": f"Bearer {dep.token(uid('plain'))}"}, open_timeout=10):
            pass
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(dep.http_url.replace("https://", "http://") + "/healthz",
                               timeout=10)
    # the gateway is fine after both
    c = await Client.open(dep.ws_url, dep.token(uid("after")))
    assert c.hello["t"] == "hello"
    await c.close()


async def test_a_client_that_does_not_trust_the_ca_is_refused(
        embedded_deployment: Deployment, tmp_path: Path) -> None:
    other = CaFiles(tmp_path / "other")
    init_ca(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(embedded_deployment.ws_url, ssl=client_context(other.ca),
                      additional_headers={"Authorization": f"Bearer "
                                          f"{embedded_deployment.token(uid('x'))}"})
    # trusting the deployment's CA explicitly (not through SSL_CERT_FILE) works
    async with connect(embedded_deployment.ws_url, ssl=client_context(TEST_CA / "ca.pem"),
                       additional_headers={"Authorization": f"Bearer "
                                           f"{embedded_deployment.token(uid('y'))}"}) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["t"] == "hello"


def test_the_deployment_records_its_ca_and_serves_https_media(
        embedded_deployment: Deployment) -> None:
    dep = embedded_deployment
    deployment = json.loads((dep.home / "deployment.json").read_text())
    assert deployment["tls"] == {"enabled": True, "ca": str(TEST_CA / "ca.pem")}
    region = deployment["regions"][0]
    assert region["ws_url"].startswith("wss://") and region["http_url"].startswith("https://")
    status = json.loads(msgctl("status", "--json", "--home", str(dep.home)).stdout)
    assert all(r["state"] == "RUNNING" for r in status["runtimes"])  # probes over https


def test_ca_show_prints_the_paths_a_script_needs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    missing = msgctl("ca", "show", "--home", str(home), check=False)
    assert missing.returncode == 1 and "no CA under" in missing.stderr
    made = json.loads(msgctl("ca", "init", "--home", str(home), "--json").stdout)
    # --home works before the verb as well as after it
    shown = json.loads(msgctl("--home", str(home), "ca", "show", "--json").stdout)
    assert {k: shown[k] for k in ("ca", "client_cert", "client_key")} == {
        "ca": str(home / "tls" / "ca.pem"), "client_cert": str(home / "tls" / "client.pem"),
        "client_key": str(home / "tls" / "client.key")}
    assert made["sha256"] == shown["sha256"]
    again = json.loads(msgctl("ca", "init", "--home", str(home), "--json").stdout)
    assert again["sha256"] == made["sha256"]  # kept
    forced = json.loads(msgctl("ca", "init", "--force", "--home", str(home), "--json").stdout)
    assert forced["sha256"] != made["sha256"]
    assert "--install-completion" in msgctl("--help").stdout  # shell completion is on
