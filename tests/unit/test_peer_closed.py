"""peer_closed: the one-system-call check a pooled connection gets before it is handed out."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from agentkeep.db.sql.base import peer_closed


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
    if max(soft, hard if hard != resource.RLIM_INFINITY else 4096) < 1100:
        pytest.skip("the process may not open 1,100 files")
    if soft < 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1100, hard))
    ours, theirs = socket.socketpair()
    high = os.dup2(ours.fileno(), 1050)
    try:
        assert not peer_closed(high)
        theirs.close()
        assert peer_closed(high)
    finally:
        os.close(high)
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
