"""One place maps the Kafka client's errors to the service's: :func:`recsys.errors.backbone_error`."""

from __future__ import annotations

import asyncio
import inspect
import socket

import aiokafka.errors
import pytest
from aiokafka import AIOKafkaProducer

from recsys.errors import BackboneUnavailable, RecsysError, backbone_error, backbone_failures


def client_exceptions() -> list[type[BaseException]]:
    """Every exception class aiokafka defines."""
    return [
        cls
        for _, cls in inspect.getmembers(aiokafka.errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("aiokafka")
    ]


def test_the_walk_finds_the_whole_tree() -> None:
    found = set(client_exceptions())
    assert len(found) > 100
    assert {aiokafka.errors.KafkaError, aiokafka.errors.KafkaConnectionError} <= found
    assert {aiokafka.errors.ConsumerStoppedError, aiokafka.errors.IllegalOperation} <= found
    retriable = {getattr(cls, "retriable", None) for cls in found}
    assert {True, False} <= retriable  # both kinds are in it


@pytest.mark.parametrize("cls", client_exceptions(), ids=lambda cls: cls.__name__)
def test_every_client_exception_is_the_backbone_unavailable(cls: type[BaseException]) -> None:
    error = backbone_error(cls("broker 1 said no"), "the event backbone did not confirm the events")
    assert isinstance(error, BackboneUnavailable)
    assert error.http_status == 503 and error.code == "event_backbone_unavailable"
    assert error.message.startswith("the event backbone did not confirm the events (")
    assert error.message.count(cls.__name__) == 1 and "broker 1 said no" in error.message


def test_a_subclass_outside_the_client_is_recognised_through_its_bases() -> None:
    class LocalTimeout(aiokafka.errors.KafkaTimeoutError):
        pass

    error = backbone_error(LocalTimeout(), "no answer")
    assert isinstance(error, BackboneUnavailable) and error.message == "no answer (LocalTimeout)"


def test_a_wait_on_the_backbone_that_ran_out_is_one() -> None:
    with pytest.raises(TimeoutError) as waited:
        asyncio.run(asyncio.wait_for(asyncio.sleep(5), 0.01))
    for timeout in (TimeoutError(), waited.value):
        error = backbone_error(timeout, "the event backbone did not confirm the events")
        assert isinstance(error, BackboneUnavailable)
        assert error.message == "the event backbone did not confirm the events (TimeoutError)"
    error = backbone_error(TimeoutError("after 5 s"), "no answer")
    assert error is not None and error.message == "no answer (TimeoutError: after 5 s)"


class KafkaError(RuntimeError):
    """Named like the client's base class, but not the client's."""


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        KeyError("bug"),
        RuntimeError("aiokafka's KafkaError is one of these, but this is not aiokafka's"),
        KafkaError("a namesake"),
        ConnectionRefusedError(111, "refused"),
        BackboneUnavailable("already the service's"),
        RecsysError("already the service's"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_anything_else_is_not_the_backbones(exc: BaseException) -> None:
    assert backbone_error(exc, "context") is None


def test_the_block_raises_the_services_error_from_the_clients() -> None:
    cause = aiokafka.errors.NotEnoughReplicasError("1 of 3 in sync")
    with pytest.raises(BackboneUnavailable) as raised, backbone_failures("the write was not confirmed"):
        raise cause
    assert raised.value.__cause__ is cause
    expected = "the write was not confirmed ([Error 19] NotEnoughReplicasError: 1 of 3 in sync)"
    assert raised.value.message == expected


@pytest.mark.parametrize("exc", [KeyError("bug"), asyncio.CancelledError(), BackboneUnavailable("mine")])
def test_the_block_lets_everything_else_through_unchanged(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as raised, backbone_failures("context"):
        raise exc
    assert raised.value is exc


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_client_without_a_broker() -> None:
    """What aiokafka itself raises when nothing listens: mapped, with its own words kept."""

    async def start() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{closed_port()}", request_timeout_ms=1000)
        try:
            with backbone_failures("no event backbone"):
                await producer.start()
        finally:
            await producer.stop()

    expected = r"^no event backbone \(KafkaConnectionError: Unable to bootstrap"
    with pytest.raises(BackboneUnavailable, match=expected):
        asyncio.run(start())
