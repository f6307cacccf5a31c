"""Classify the first bytes a client sends: TLS (SNI), HTTP (Host), SSH, mining, unknown.

Pure and incremental: call `sniff(buffer)` with everything read so far; when the result
says `need_more`, read again (until the gateway's deadline or `MAX_SNIFF` bytes) and call
again with the longer buffer. Mining is checked first, whatever the framing: a stratum
`mining.subscribe` over TLS-looking or HTTP-looking bytes is still mining. HTTP proxy
requests (`CONNECT host:port`, absolute URIs) carry their target in `proxy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SNIFF = 16 * 1024 + 5  # one full TLS record; an HTTP header block fits as well

_HTTP_METHODS = (
    b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ",
    b"TRACE ",
)
# Stratum v1 (bitcoin-style pools), xmrig's JSON-RPC `login` with an `agent`, getwork.
_MINING = re.compile(
    rb'"(mining\.(subscribe|authorize|submit|extranonce\.subscribe|configure|hello)'
    rb'|eth_submitLogin|eth_getWork|eth_submitWork|getblocktemplate|getwork)"'
    rb'|"method"\s*:\s*"(login|submit|keepalived)"[^\n]*"(agent|pass|rigid)"'
    rb'|"(agent|pass|rigid)"[^\n]*"method"\s*:\s*"(login|submit)"'
)


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes are: protocol (tls, http, ssh, mining, unknown), name, detail.

    `proxy` is the target of an HTTP proxy request (`CONNECT host:port`, or an absolute
    URI such as `GET http://host/path`), as "host:port"; None for an ordinary request.
    """

    protocol: str
    name: str | None = None
    detail: str = ""
    need_more: bool = False
    proxy: str | None = None


_MORE = Sniffed("unknown", need_more=True)


def sniff(data: bytes) -> Sniffed:
    """Classify `data` (all bytes read so far); `need_more` asks for another read."""
    if not data:
        return _MORE
    mined = _MINING.search(data[:MAX_SNIFF])
    if mined:
        return Sniffed("mining", detail=mined.group(0).decode("ascii", "replace")[:80])
    if data[0] == 0x16:
        return _tls(data)
    if data[:1] == b"{" or data[:1] == b"[":
        # JSON-RPC without a mining method yet: wait for the end of the first line.
        if b"\n" not in data and len(data) < 4096:
            return _MORE
        return Sniffed("unknown", detail="json-rpc")
    if data.startswith(b"SSH-") or b"SSH-".startswith(data[:4]):
        if len(data) < 4:
            return _MORE
        line = data.split(b"\n", 1)[0].rstrip(b"\r")
        if b"\n" not in data and len(data) < 255:
            return Sniffed("ssh", detail=line.decode("ascii", "replace"), need_more=True)
        return Sniffed("ssh", detail=line[:255].decode("ascii", "replace"))
    if any(data.startswith(m) for m in _HTTP_METHODS):
        return _http(data)
    if any(m.startswith(data) for m in _HTTP_METHODS):
        return _MORE
    return Sniffed("unknown", detail=data[:32].hex())


_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(\[[^\]]*\]|[^/:?#@\s]*)(?::(\d+))?",
                       re.ASCII)


def proxy_target(request_line: bytes) -> str | None:
    """"host:port" when the request line asks a proxy for another place, else None."""
    parts = request_line.split(b" ")
    if len(parts) < 2:
        return None
    method, target = parts[0], parts[1].decode("ascii", "replace")
    if method == b"CONNECT":
        return target or None
    m = _ABSOLUTE.match(target)
    if not m or not m.group(1):
        return None
    scheme = target.split(":", 1)[0].lower()
    port = m.group(2) or {"https": "443", "wss": "443", "ftp": "21"}.get(scheme, "80")
    return f"{m.group(1).strip('[]')}:{port}"


def _http(data: bytes) -> Sniffed:
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    request_line, *lines = head.split(b"\r\n")
    detail = request_line[:200].decode("ascii", "replace")
    proxy = proxy_target(request_line) if b"\r\n" in data else None
    for line in lines:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == b"host":
            return Sniffed("http", name=_strip_port(value.strip().decode("ascii", "replace")),
                           detail=detail, proxy=proxy)
    if end < 0 and len(data) < MAX_SNIFF:
        return Sniffed("http", detail=detail, need_more=True, proxy=proxy)
    if request_line.startswith(b"CONNECT "):
        target = request_line.split(b" ")[1].decode("ascii", "replace")
        return Sniffed("http", name=_strip_port(target), detail=detail, proxy=proxy)
    return Sniffed("http", detail=detail, proxy=proxy)


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _tls(data: bytes) -> Sniffed:
    if len(data) < 5:
        return _MORE
    if data[1] != 0x03:
        return Sniffed("unknown", detail=data[:32].hex())
    length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + length:
        return _MORE if len(data) < MAX_SNIFF else Sniffed("tls", detail="oversized hello")
    try:
        name = _sni(data[5 : 5 + length])
    except (IndexError, ValueError):
        return Sniffed("tls", detail="malformed ClientHello")
    return Sniffed("tls", name=name, detail="ClientHello" if name else "ClientHello, no SNI")


def _sni(hs: bytes) -> str | None:
    """The server_name from a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3)."""
    if hs[0] != 0x01:
        raise ValueError("not a ClientHello")
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    pos += 1 + hs[pos]  # session id
    pos += 2 + int.from_bytes(hs[pos : pos + 2], "big")  # cipher suites
    pos += 1 + hs[pos]  # compression methods
    if pos >= len(hs):
        return None
    end = pos + 2 + int.from_bytes(hs[pos : pos + 2], "big")
    pos += 2
    while pos + 4 <= end:
        ext_type = int.from_bytes(hs[pos : pos + 2], "big")
        ext_len = int.from_bytes(hs[pos + 2 : pos + 4], "big")
        body = hs[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type != 0:
            continue
        p = 2
        while p + 3 <= len(body):
            kind, size = body[p], int.from_bytes(body[p + 1 : p + 3], "big")
            if kind == 0:
                return body[p + 3 : p + 3 + size].decode("ascii").rstrip(".").lower()
            p += 3 + size
    return None
