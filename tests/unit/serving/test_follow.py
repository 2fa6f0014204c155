"""Following a topic while the broker is away: a cheap port check, and longer waits."""

from __future__ import annotations

import socket

import pytest

from serving import follow
from serving.follow import TopicFollower, broker_listens


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_open_port_passes_and_a_closed_one_is_refused() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        broker_listens(f"127.0.0.1:{closed_port()},127.0.0.1:{server.getsockname()[1]}")
    with pytest.raises(OSError, match="no broker at"):
        broker_listens(f"127.0.0.1:{closed_port()}")


def test_waits_double_while_the_broker_stays_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "MAX_RETRY_S", 16.0)
    follower = TopicFollower(f"127.0.0.1:{closed_port()}", "model-events", print, from_beginning=False)
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) == 6:
            follower._stop.set()
        return False

    monkeypatch.setattr(follower._stop, "wait", wait)
    follower._run()  # no Kafka client is built: the port check fails first
    assert waits == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
