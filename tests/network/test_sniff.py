"""Sniffing the first client bytes: TLS SNI, HTTP Host, SSH banner, mining, unknown."""

from __future__ import annotations

import ssl

import pytest

from sandbox.network.sniff import sniff


def client_hello(server_name: str | None) -> bytes:
    """A real ClientHello from Python's ssl module (no network)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_tls_sni() -> None:
    hello = client_hello("Files.PythonHosted.org")
    s = sniff(hello)
    assert (s.protocol, s.name, s.need_more) == ("tls", "files.pythonhosted.org", False)


def test_tls_incremental() -> None:
    """A ClientHello split across reads asks for more until the record is complete."""
    hello = client_hello("good.test")
    for cut in (1, 3, 5, 40, len(hello) - 1):
        assert sniff(hello[:cut]).need_more
    assert sniff(hello).name == "good.test"


def test_tls_without_sni() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    s = sniff(outgoing.read())
    assert s.protocol == "tls" and s.name is None


def test_http_host() -> None:
    req = b"GET /simple/ HTTP/1.1\r\nUser-Agent: x\r\nhost: PyPI.org:8080\r\n\r\n"
    s = sniff(req)
    assert (s.protocol, s.name) == ("http", "PyPI.org")
    assert sniff(req[:20]).need_more
    assert sniff(b"G").need_more and sniff(b"POS").need_more


def test_http_connect_target() -> None:
    s = sniff(b"CONNECT evil.test:22 HTTP/1.1\r\n\r\n")
    assert (s.protocol, s.name) == ("http", "evil.test")


def test_ssh_banner() -> None:
    s = sniff(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    assert s.protocol == "ssh" and s.detail.startswith("SSH-2.0-OpenSSH") and not s.need_more
    assert sniff(b"SS").need_more
    assert sniff(b"SSH-2.0-Open").need_more


@pytest.mark.parametrize("payload", [
    b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5"]}\n',
    b'{"id":2,"method":"mining.authorize","params":["wallet.rig","x"]}\n',
    b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"4A..","pass":"x","agent":"XMRig/6.21"}}\n',
    b'{"jsonrpc":"2.0","method":"eth_submitLogin","params":["0xabc"],"id":1}\n',
    b'POST / HTTP/1.1\r\nHost: good.test\r\n\r\n{"method":"getblocktemplate","params":[]}',
])
def test_mining(payload: bytes) -> None:
    """Stratum/JSON-RPC mining is recognised whatever the framing (even inside HTTP)."""
    assert sniff(payload).protocol == "mining"


def test_json_rpc_waits_for_line() -> None:
    assert sniff(b'{"id":1,').need_more
    assert sniff(b'{"id":1,"method":"ping"}\n').protocol == "unknown"


def test_unknown() -> None:
    s = sniff(b"\x00\x01binary junk")
    assert s.protocol == "unknown" and not s.need_more
    assert sniff(b"").need_more
