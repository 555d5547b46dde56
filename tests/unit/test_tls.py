"""The deployment CA: certificates that real TLS handshakes accept, private files, reissue
on changed names, and mutual TLS refusing a client without a certificate."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest

from msgctl.tls import CaFiles, client_context, describe, init_ca, server_cert, server_context


@pytest.fixture
def files(tmp_path: Path) -> CaFiles:
    f = CaFiles(tmp_path / "tls")
    assert init_ca(f, "t") is True
    return f


def test_every_file_is_private(files: CaFiles) -> None:
    server_cert(files, "gw", ["127.0.0.1", "localhost"])
    assert stat.S_IMODE(files.dir.stat().st_mode) == 0o700
    for p in files.dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_init_keeps_an_existing_ca_unless_forced(files: CaFiles) -> None:
    before = describe(files)["sha256"]
    assert init_ca(files) is False and describe(files)["sha256"] == before
    cert, _ = server_cert(files, "gw", ["127.0.0.1"])
    assert init_ca(files, force=True) is True
    assert describe(files)["sha256"] != before
    assert not cert.exists()  # signed by the old CA: retired


def test_a_server_certificate_is_reused_until_its_names_change(files: CaFiles) -> None:
    cert, _ = server_cert(files, "gw", ["127.0.0.1", "localhost"])
    first = cert.read_bytes()
    assert server_cert(files, "gw", ["localhost", "127.0.0.1"])[0].read_bytes() == first
    assert server_cert(files, "gw", ["127.0.0.2"])[0].read_bytes() != first


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> bytes:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(2))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                       server_hostname=host)
        writer.write(b"ok")
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(2), 5)
        writer.close()
        return data
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_client_trusting_the_ca_connects_by_address_and_name(files: CaFiles) -> None:
    cert, key = server_cert(files, "gw", ["127.0.0.1", "localhost"])
    for host in ("127.0.0.1", "localhost"):
        assert await _handshake(server_context(cert, key), client_context(files.ca),
                                host) == b"ok"


async def test_a_client_that_does_not_trust_the_ca_is_refused(files: CaFiles,
                                                              tmp_path: Path) -> None:
    cert, key = server_cert(files, "gw", ["127.0.0.1"])
    other = CaFiles(tmp_path / "other")
    init_ca(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server_context(cert, key), client_context(other.ca), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate lacks
        await _handshake(server_context(cert, key), client_context(files.ca), "example.com")


async def test_mutual_tls_wants_a_client_certificate_from_the_ca(files: CaFiles) -> None:
    cert, key = server_cert(files, "agent", ["127.0.0.1"])
    mtls = server_context(cert, key, client_ca=files.ca)
    with_cert = client_context(files.ca, files.client_cert, files.client_key)
    assert await _handshake(mtls, with_cert, "127.0.0.1") == b"ok"
    with pytest.raises((ssl.SSLError, asyncio.IncompleteReadError, ConnectionError)):
        await _handshake(mtls, client_context(files.ca), "127.0.0.1")
