"""Running server tools: one signed HTTP POST per call.

The body is the call's arguments (a JSON object). Headers say what it is and
prove it came from this gateway:

* ``X-Gateway-Tool``, ``X-Gateway-Call-Id``: the function and the call;
* ``X-Gateway-Timestamp``: Unix seconds when it was sent;
* ``X-Gateway-Signature``: ``sha256=`` + hex HMAC-SHA256 under
  ``GATEWAY_TOOLS_SECRET`` of ``"{timestamp}.{body}"``, so a receiver can check it
  (and refuse a replay by the timestamp's age) — :func:`sign` is the recipe.

The JSON answer (any JSON value) is the call's result. A failure — refused
address, connection error, timeout, a non-2xx status, an answer that is not JSON
or is too large — becomes a result ``{"error": "..."}``, so the model can say so;
it never fails the turn.

SSRF: the model chooses the arguments, and a tools file may point at any URL; a
gateway usually sits next to things that must not be reachable from outside
(cloud metadata at 169.254.169.254, admin ports on localhost, the private
network). So the host is resolved first, every address must be public (unless
the file sets ``allow_private_addresses: true``), and the request goes to the
checked address itself — the ``Host`` header and TLS name (SNI, certificate
check) stay the tool's host — so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot redirect it. Redirects are never followed.

Hand-written on ``httpx2`` (the gateway's HTTP client) because signing, the
address check and mapping failures to results are the whole job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson

from gateway.core.history import FunctionCall
from gateway.tools.file import ToolsFile, WebhookTool

log = logging.getLogger("gateway.tools")

#: The largest answer taken from a webhook.
MAX_ANSWER_BYTES = 64 * 1024


class ToolRunner(Protocol):
    """Runs server tool calls; :meth:`run` returns the result as JSON text, never raises."""

    async def run(self, call: FunctionCall) -> str: ...

    async def aclose(self) -> None: ...


def error_result(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def run_tool(runner: ToolRunner | None, call: FunctionCall) -> str:
    """``runner.run(call)``, or an error result when no runner is configured."""
    if runner is None:
        return error_result(f"{call.name} cannot run: this gateway has no server tools")
    return await runner.run(call)


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


#: Resolves ``(host, port)`` to IP addresses (the event loop's ``getaddrinfo`` by default).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a call really goes: ``url`` (maybe with an IP for the host) and the
    request ``headers``/``extensions`` that keep the original host name."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


class WebhookRunner:
    """POSTs each call to its tool's URL (see the module docstring)."""

    def __init__(
        self,
        tools: ToolsFile,
        *,
        secret: str | None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve,
        public: Callable[[str], bool] = is_public,
    ) -> None:
        self._resolve = resolver
        self._public = public
        self._tools: Mapping[str, WebhookTool] = {t.spec.name: t for t in tools.tools}
        self._allow_private = tools.allow_private_addresses
        self._secret = secret
        self._clock = clock
        self._client = httpx2.AsyncClient(follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self, call: FunctionCall) -> str:
        tool = self._tools.get(call.name)
        if tool is None:
            return error_result(f"there is no server tool {call.name!r}")
        try:
            async with asyncio.timeout(tool.timeout_s):
                return await self._post(tool, call)
        except TimeoutError:
            log.warning("tool %s timed out after %g s", call.name, tool.timeout_s)
            return error_result(f"{call.name} did not answer within {tool.timeout_s:g} s")
        except httpx2.HTTPError as exc:
            log.warning("tool %s failed: %s", call.name, type(exc).__name__)
            return error_result(f"{call.name} could not be reached ({type(exc).__name__})")

    async def _post(self, tool: WebhookTool, call: FunctionCall) -> str:
        target = await self._target(tool.url)
        if isinstance(target, str):
            log.warning("tool %s refused: %s", call.name, target)
            return error_result(f"{call.name} is not allowed to run: {target}")
        body = call.arguments.encode()
        timestamp = str(int(self._clock()))
        headers = {
            **dict(tool.headers),
            "content-type": "application/json",
            "x-gateway-tool": call.name,
            "x-gateway-call-id": call.call_id,
            "x-gateway-timestamp": timestamp,
        }
        if self._secret:
            headers["x-gateway-signature"] = sign(self._secret, timestamp, body)
        headers.update(target.headers)
        async with self._client.stream(
            "POST", target.url, content=body, headers=headers, extensions=target.extensions
        ) as reply:
            if not 200 <= reply.status_code < 300:
                return error_result(f"{call.name} answered HTTP {reply.status_code}")
            data = bytearray()
            async for piece in reply.aiter_bytes():
                data += piece
                if len(data) > MAX_ANSWER_BYTES:
                    return error_result(f"{call.name} answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = orjson.loads(bytes(data))
        except orjson.JSONDecodeError:
            return error_result(f"{call.name} did not answer JSON")
        return orjson.dumps(answer).decode()

    async def _target(self, url: str) -> _Target | str:
        """Where to send a call of ``url``, or why it may not be sent (SSRF)."""
        if self._allow_private:
            return _Target(url, {}, {})
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except OSError:
            return f"the host {host!r} cannot be resolved"
        private = sorted(a for a in set(addresses) if not self._public(a))
        if private or not addresses:
            shown = private[0] if private else "none"
            return (
                f"{host} resolves to a private or loopback address ({shown}); "
                "set allow_private_addresses in the tools file to allow it"
            )
        address = addresses[0].split("%", 1)[0]
        netloc = f"[{address}]" if ":" in address else address
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned = urlunsplit(parts._replace(netloc=netloc))
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return _Target(pinned, {"host": parts.netloc.rsplit("@", 1)[-1]}, extensions)
