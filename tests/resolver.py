"""A fake resolver for the listeners' tests: `dual.test` has an IPv4 and an IPv6 address."""

from __future__ import annotations

import socket
from typing import Any

import pytest

_getaddrinfo = socket.getaddrinfo


def resolve_dual_to_both_loopbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """`dual.test` resolves to 127.0.0.1 and ::1 (as `localhost` does where /etc/hosts lists both)."""

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "dual.test":
            return _getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port))),
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", int(port), 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
