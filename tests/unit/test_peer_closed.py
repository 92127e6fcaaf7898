"""peer_closed: the one-system-call check a pooled connection gets before it is handed out."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from agentkeep.db.sql.base import peer_closed

HIGH = 1024  # the first descriptor select() refuses (FD_SETSIZE)


def test_idle_open_and_closed_sockets():
    ours, theirs = socket.socketpair()
    try:
        assert not peer_closed(ours.fileno())  # idle: keep it
        theirs.close()
        assert peer_closed(ours.fileno())  # the peer went away: reconnect
    finally:
        ours.close()


def test_a_descriptor_above_1023_is_checked_not_discarded():
    """A process with many files open (vector stores, thread pools) gets socket descriptors
    above select()'s limit; they must still read as open, or every pooled connection would
    be thrown away and the pool time out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH:
        # then this process never holds a descriptor select() refuses: the case cannot arise
        pytest.skip(f"the hard limit on open files ({hard}) keeps every descriptor below {HIGH}")
    if soft <= HIGH:
        resource.setrlimit(resource.RLIMIT_NOFILE, (HIGH + 1, hard))
    ours, theirs = socket.socketpair()
    high = os.dup2(ours.fileno(), HIGH)
    try:
        assert not peer_closed(high)
        theirs.close()
        assert peer_closed(high)
    finally:
        os.close(high)
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
