"""lb.proxy.l4.reactor's two promises, on real sockets: an event taken for a descriptor that a
handler of the same batch closed and reused does not reach the new socket, and a handler that
raises ends only its own connection while the rest of the batch is still delivered."""

from __future__ import annotations

import asyncio
import socket

from lb.proxy.l4.reactor import Reactor
from tests.conftest import wait_until


class Owner:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def readable_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.send(b"x")  # a is readable
    return a, b


async def test_an_event_of_a_reused_descriptor_is_not_given_to_the_new_socket() -> None:
    reactor = Reactor(asyncio.get_running_loop())
    first, first_peer = readable_pair()
    second, second_peer = readable_pair()
    seen: list[str] = []
    reborn: list[socket.socket] = []

    def close_the_other(other: socket.socket, name: str) -> None:
        seen.append(name)
        if reborn:
            return
        # Close the other socket and open a new one, which takes the freed number.
        fd = other.fileno()
        reactor.forget(fd)
        other.close()
        reborn.extend(socket.socketpair())
        assert fd in (s.fileno() for s in reborn)
        reactor.register(fd, lambda events: seen.append("fresh"), Owner())

    reactor.register(first.fileno(), lambda e: close_the_other(second, "first"), Owner())
    reactor.register(second.fileno(), lambda e: close_the_other(first, "second"), Owner())
    reactor._dispatch()  # one batch, with an event for each of the two
    # One ran and replaced the other; the other's event of that batch reached nobody.
    assert seen in (["first"], ["second"])
    reactor._dispatch()  # the fresh socket's own first event (it is writable)
    assert seen[-1] == "fresh"
    reactor.close()
    for s in (first, second, first_peer, second_peer, *reborn):
        s.close()


async def test_a_failing_handler_ends_its_owner_and_the_batch_goes_on() -> None:
    reactor = Reactor(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    pairs = [readable_pair() for _ in range(3)]
    owners = [Owner() for _ in pairs]
    delivered: list[int] = []

    def handler(i: int) -> None:
        delivered.append(i)
        if i == 1:
            raise RuntimeError("bug")

    for i, ((sock, _peer), owner) in enumerate(zip(pairs, owners, strict=True)):
        reactor.register(sock.fileno(), lambda events, i=i: handler(i), owner)
    await wait_until(lambda: len(delivered) == 3, timeout=0.5)
    assert sorted(delivered) == [0, 1, 2]
    assert [o.aborted for o in owners] == [False, True, False]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    reactor.close()
    for sock, peer in pairs:
        sock.close()
        peer.close()
