"""VM handoff on real libvirt/QEMU through ``cloudlet handoff send/receive`` over TCP.

The source is a VM synthesized from the session's overlay and changed again afterwards;
the destination must hold exactly its memory and disk (the guest writes its disk throughout;
the final disk pass reads only what QEMU's dirty bitmap marks), and the source must survive
every failure (bad secret, no base at the destination, destination killed mid-stream) with
no bitmap or NBD export left in its QEMU.
The channel's refusals (replayed, reordered, forged, truncated frames; wrong secrets; stalled
handshakes; a second connection) are checked at the wire level, over loopback, without libvirt.
"""

import contextlib
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from cloudlet_compute.errors import CloudletError, FetchError, FormatError, HypervisorError
from cloudlet_compute.handoff import dirtydisk, wire
from cloudlet_compute.write import capture
from stack import story as storymod
from tests.compute.test_story import assert_same_guest

MOVE = "STORY_VAR=moved; head -c 2097152 /dev/urandom > /mnt/after; sync"
OBSERVE_AFTER = "echo after=$(md5sum < /mnt/after)"


def _observe(story, domain):
    with story.channel(domain) as chan:
        seen = storymod.parse_observation(chan.run(storymod.OBSERVE))
        seen.update(storymod.parse_observation(chan.run(OBSERVE_AFTER)))
    return seen


def _sender(story, domain, ticket_file):
    env = dict(os.environ, CLOUDLET_HOME=story.home)
    proc = subprocess.Popen(storymod.CLI + ["handoff", "send", domain, "--listen", "127.0.0.1",
                                            "--ticket-file", ticket_file, "--json",
                                            "--wait", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=storymod.guest.REPO_DIR)
    deadline = time.monotonic() + 30
    while not (os.path.exists(ticket_file) and os.path.getsize(ticket_file)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no ticket"
        time.sleep(0.1)
    return proc


def _receiver(home, ticket_file, name):
    env = dict(os.environ, CLOUDLET_HOME=home)
    return subprocess.Popen(storymod.CLI + ["handoff", "receive", "@" + ticket_file, "--name",
                                            name, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=storymod.guest.REPO_DIR)


@pytest.fixture(scope="module")
def moving_vm(story_run):
    """A synthesized VM whose memory and disk were changed after synthesis."""
    story = story_run.story
    name, _ = story.synthesize(story_run.overlay_path, role="ho-src")
    with story.channel(name) as chan:
        chan.run(MOVE, timeout=60)
    expected = dict(story_run.expected, var="moved")
    expected.update(_observe(story, name))
    return story, name, expected


def _source_intact(story, libvirt_conn, name, expected):
    dom = libvirt_conn.lookupByName(name)
    assert dom.isActive() and dom.state()[0] == 1   # running, not paused
    # The handoff's dirty bitmap, NBD export and server are gone.
    assert [d for b in capture.qmp(dom, "query-block")
            for d in b["inserted"].get("dirty-bitmaps", [])] == []
    assert capture.qmp(dom, "query-block-exports") == []
    with pytest.raises(HypervisorError, match="NBD server not running"):
        capture.qmp(dom, "nbd-server-stop")
    seen = _observe(story, name)
    assert_same_guest(expected, seen)
    assert seen["after"] == expected["after"]


def test_refused_and_failed_destinations_leave_the_source_running(moving_vm, libvirt_conn,
                                                                  tmp_path, caplog):
    story, name, expected = moving_vm
    ticket = str(tmp_path / "ticket")

    # A wrong secret is refused at the handshake; the sender keeps waiting for the right one.
    sender = _sender(story, name, ticket)
    good = open(ticket).read().strip()
    bad_file = str(tmp_path / "bad")
    with open(bad_file, "w") as f:
        f.write(good[:-4] + ("0000" if not good.endswith("0000") else "1111"))
    bad = _receiver(story.home, bad_file, story.name("ho-bad"))
    _, err = bad.communicate(timeout=60)
    assert bad.returncode != 0 and "refused" in err and len(err.strip().splitlines()) == 1
    assert sender.poll() is None

    # A destination without the base VM: the handoff fails on both sides, nothing is left.
    empty_home = storymod.make_dir(str(tmp_path / "empty-home"))
    nobase = _receiver(empty_home, ticket, story.name("ho-nobase"))
    _, err = nobase.communicate(timeout=120)
    assert nobase.returncode != 0 and "has no base VM" in err
    _, err = sender.communicate(timeout=120)
    assert sender.returncode != 0 and "has no base VM" in err
    assert not os.path.exists(os.path.join(empty_home, "instances", story.name("ho-nobase")))
    _source_intact(story, libvirt_conn, name, expected)

    # The destination dies mid-stream: frozen as soon as it has made the new VM's directory
    # (frames are arriving; it cannot have reported RUNNING yet), then killed. A fixed sleep
    # here let an unloaded machine finish the whole handoff first.
    os.unlink(ticket)
    sender = _sender(story, name, ticket)
    killed = _receiver(story.home, ticket, story.name("ho-killed"))
    dest_dir = os.path.join(story.home, "instances", story.name("ho-killed"))
    deadline = time.monotonic() + 120
    while not os.path.exists(dest_dir):
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the destination never started receiving"
        time.sleep(0.002)
    killed.send_signal(signal.SIGSTOP)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    _, err = sender.communicate(timeout=180)
    assert sender.returncode != 0, err
    assert len(err.strip().splitlines()[-1:]) == 1
    storymod.guest.destroy(libvirt_conn, story.name("ho-killed"))
    _source_intact(story, libvirt_conn, name, expected)

    # A disk QEMU shows no block node for: no bitmap, the final pass will rescan.
    with caplog.at_level(logging.INFO, logger=dirtydisk.__name__):
        assert dirtydisk.track(libvirt_conn.lookupByName(name), "/no/such/disk.qcow2") is None
    assert "final pass rescans: QEMU shows no block node" in caplog.text
    _source_intact(story, libvirt_conn, name, expected)


def test_handoff_moves_memory_and_disk(moving_vm, libvirt_conn, tmp_path):
    story, name, expected = moving_vm
    ticket = str(tmp_path / "ticket")
    with story.channel(name) as chan:
        chan.run(storymod.DISK_WRITER, timeout=60)
    sender = _sender(story, name, ticket)
    dest = story.name("ho-dst")
    story.domains.append(dest)
    receiver = _receiver(story.home, ticket, dest)
    out, err = receiver.communicate(timeout=300)
    assert receiver.returncode == 0, err
    sent_out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err
    stats = json.loads(sent_out)
    received = json.loads(out)
    print("\nhandoff source: %s\ndestination: %s" % (stats, received))

    assert dest in [d.name() for d in libvirt_conn.listAllDomains()]
    assert name not in [d.name() for d in libvirt_conn.listAllDomains()]
    assert not os.path.exists(os.path.join(story.home, "instances", name))
    assert libvirt_conn.lookupByName(dest).UUIDString() == received["uuid"]
    seen = _observe(story, dest)
    assert_same_guest(expected, seen)
    assert seen["after"] == expected["after"]
    # Only what the base lacks crossed: far less than the guest's RAM plus the changed disk.
    assert stats["bytes_sent"] < 40 << 20
    assert stats["sources"]["base_memory"] > 1000
    # The guest wrote its disk throughout: the destination's disk holds what its page cache does.
    with story.channel(dest) as chan:
        assert chan.run(storymod.DISK_EQUALS_CACHE, timeout=60).strip() == "same"
    # The final pass read only what the dirty bitmap marked: the writer's chunks (and the
    # file system's), not the top layer (its 2 MiB file alone is 512 chunks).
    final = stats["disk_final"]
    assert final["method"] == "bitmap", final
    assert 8 <= final["chunks_read"] < 400, final
    assert final["chunks_sent"] <= final["chunks_read"]


# --- the channel alone (handoff/wire.py over loopback, no libvirt) --------------------------
DEST_UUID = "0f3c8a52-6d1e-4f7b-9a0c-2b5e8d7f1a3c"


class _Accepting:
    """``Listener.accept`` in a thread: its channel, or the engine error it ended with."""

    def __init__(self, listener, wait=10.0):
        self.listener, self.channel, self.error = listener, None, None
        self.thread = threading.Thread(target=self._run, args=(wait,), daemon=True)
        self.thread.start()

    def _run(self, wait):
        try:
            self.channel = self.listener.accept(DEST_UUID, wait)
        except CloudletError as exc:   # anything else is a bug: the thread's traceback shows it
            self.error = exc

    def result(self, timeout=20.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the listener is still accepting"
        return self.channel, self.error


def _one_line(exc):
    assert isinstance(exc, CloudletError), repr(exc)
    assert str(exc) and "\n" not in str(exc), str(exc)
    return str(exc)


@pytest.fixture
def channels():
    """``(source, destination)`` channels after a real handshake over loopback."""
    listener = wire.Listener("127.0.0.1", timeout=5.0)
    accepting = _Accepting(listener)
    dest = wire.connect(listener.url, DEST_UUID, listener.secret, timeout=5.0)
    source, error = accepting.result()
    assert error is None
    yield source, dest
    source.close()
    dest.close()


def _sealed(channel, kind, payload):
    """The bytes ``channel.send`` puts on the wire for one frame (the counter advances)."""
    real, (tap, peer) = channel.sock, socket.socketpair()
    try:
        channel.sock = tap
        channel.send(kind, payload)
        peer.settimeout(5.0)
        data = peer.recv(1 << 20)
    finally:
        channel.sock = real
        tap.close()
        peer.close()
    return data


def _refused(dest, source, raw, error=FormatError, phrase="fails authentication"):
    """``raw`` on the wire is refused by the destination with one line; the source is told."""
    source.sock.sendall(raw)
    with pytest.raises(error) as caught:
        dest.receive()
    message = _one_line(caught.value)
    assert phrase in message, message
    dest.end_with(wire.FAILED, caught.value, linger=1.0)
    source.sock.settimeout(5.0)
    with pytest.raises(wire.PeerFailed) as told:
        source.check_peer() if select.select([source.sock], [], [], 5.0)[0] else None
    assert told.value.kind == wire.FAILED and str(told.value) == message
    return message


def test_wire_frames_pass_in_order(channels):
    source, dest = channels
    for n in range(3):
        source.send(wire.RECORDS, b"frame %d" % n)
    assert [dest.receive() for _ in range(3)] == [(wire.RECORDS, b"frame %d" % n)
                                                 for n in range(3)]
    dest.send(wire.RUNNING, b"")
    assert source.receive() == (wire.RUNNING, b"")


def test_wire_refuses_a_replayed_frame(channels):
    source, dest = channels
    raw = _sealed(source, wire.HEADER, b"header")
    source.sock.sendall(raw)
    assert dest.receive() == (wire.HEADER, b"header")
    _refused(dest, source, raw)


def test_wire_refuses_reordered_and_dropped_frames(channels):
    source, dest = channels
    first = _sealed(source, wire.RECORDS, b"first")
    second = _sealed(source, wire.RECORDS, b"second")
    _refused(dest, source, second + first)


def test_wire_refuses_a_frame_with_a_wrong_counter(channels):
    source, dest = channels
    source._send_count = 7       # a frame sealed for another place in the sequence
    _refused(dest, source, _sealed(source, wire.HEADER, b"header"))


@pytest.mark.parametrize("where", ["type", "ciphertext", "tag"])
def test_wire_refuses_a_forged_frame(channels, where):
    source, dest = channels
    raw = bytearray(_sealed(source, wire.RECORDS, b"a page of records" * 8))
    at = {"type": 0, "ciphertext": wire.FRAME_HEAD.size + 3, "tag": len(raw) - 1}[where]
    raw[at] ^= 0x01 if where != "type" else wire.RECORDS ^ wire.TAIL   # still a known type
    _refused(dest, source, bytes(raw))


@pytest.mark.parametrize("cut", [2, wire.FRAME_HEAD.size + 4, -1])
def test_wire_refuses_a_truncated_frame(channels, cut):
    source, dest = channels
    raw = _sealed(source, wire.RECORDS, b"records")
    source.sock.sendall(raw[:cut])
    source.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(FetchError) as caught:
        dest.receive()
    assert "closed after" in _one_line(caught.value)


@pytest.mark.parametrize("head", [struct.pack(">BI", 99, 32),
                                  struct.pack(">BI", wire.RECORDS, wire.MAX_FRAME + 1),
                                  struct.pack(">BI", wire.RECORDS, 3)])
def test_wire_refuses_a_frame_head_of_another_protocol(channels, head):
    source, dest = channels
    _refused(dest, source, head, phrase="not a frame of this protocol")


@pytest.mark.parametrize("wrong", ["secret", "server"])
def test_wire_source_refuses_a_wrong_destination_and_keeps_waiting(wrong):
    listener = wire.Listener("127.0.0.1", timeout=5.0)
    accepting = _Accepting(listener)
    secret = bytes(32) if wrong == "secret" else listener.secret
    uuid = DEST_UUID if wrong == "secret" else DEST_UUID[::-1]
    with pytest.raises(FetchError) as caught:
        wire.connect(listener.url, uuid, secret, timeout=5.0)
    assert "refused this destination" in _one_line(caught.value)
    assert accepting.thread.is_alive()            # the slot is still free
    dest = wire.connect(listener.url, DEST_UUID, listener.secret, timeout=5.0)
    source, error = accepting.result()
    assert error is None and source is not None
    source.send(wire.HEADER, b"ok")
    assert dest.receive() == (wire.HEADER, b"ok")
    source.close()
    dest.close()


class _RogueSource:
    """A TCP server on loopback that plays the source's part of the handshake its own way:
    ``reply(sock, hello_nonce, destination's message)``."""

    def __init__(self, hello, reply=None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "tcp://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, args=(hello, reply), daemon=True)
        self.thread.start()

    def _run(self, hello, reply):
        self.sock.settimeout(10.0)
        conn, _ = self.sock.accept()
        with conn, contextlib.suppress(OSError):   # the destination may hang up first
            conn.settimeout(10.0)
            nonce_s = os.urandom(wire.NONCE_SIZE)
            hello(conn, nonce_s)
            if reply:
                message = wire._recv_exact(conn, wire.UUID_SIZE + wire.NONCE_SIZE
                                           + wire.MAC_SIZE, "dest")
                reply(conn, nonce_s, message)
            conn.recv(1)                          # until the destination hangs up

    def close(self):
        self.sock.close()
        self.thread.join(10)


def _send_hello(conn, nonce_s):
    conn.sendall(wire.MAGIC + nonce_s)


def _trickle_hello(conn, nonce_s):
    for byte in wire.MAGIC + nonce_s:
        conn.sendall(bytes([byte]))
        time.sleep(0.1)


def _mac_with_other_secret(conn, nonce_s, message):
    uuid, nonce_d = message[:wire.UUID_SIZE], message[wire.UUID_SIZE:-wire.MAC_SIZE]
    conn.sendall(wire._mac(bytes(32), b"source", nonce_s, nonce_d, uuid))


@pytest.mark.parametrize("hello, reply, error, phrase", [
    (_send_hello, _mac_with_other_secret, FormatError, "failed authentication"),
    (lambda conn, nonce: conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n" + bytes(20)), None,
     FormatError, "does not speak the handoff protocol"),
    (_trickle_hello, None, FetchError, "did not complete the handshake in time"),
    (lambda conn, nonce: None, None, FetchError, "did not complete the handshake in time"),
])
def test_wire_destination_refuses_a_fake_or_stalled_source(hello, reply, error, phrase):
    rogue = _RogueSource(hello, reply)
    t0 = time.monotonic()
    try:
        with pytest.raises(error) as caught:
            wire.connect(rogue.url, DEST_UUID, os.urandom(32), timeout=1.5)
    finally:
        rogue.close()
    assert phrase in _one_line(caught.value)
    assert time.monotonic() - t0 < 4.0


def test_wire_second_connection_after_the_handoff_is_refused(channels):
    source, _dest = channels
    host, port = source.sock.getsockname()[:2]
    with pytest.raises(FetchError) as caught:
        wire.connect("tcp://%s:%d" % (host, port), DEST_UUID, os.urandom(32), timeout=2.0)
    assert "cannot reach the handoff source" in _one_line(caught.value)


def _hung_up(sock):
    """Whether the peer closed ``sock``: an orderly end, or a reset when the peer closed with
    bytes of ours still unread (a trickler's last byte can land just before the close)."""
    try:
        return sock.recv(1 << 10) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("stranger", ["silent", "trickling"])
def test_wire_stalled_handshake_times_out_and_the_listener_goes_on(stranger):
    listener = wire.Listener("127.0.0.1", timeout=1.0)
    accepting = _Accepting(listener, wait=20.0)
    stall = socket.create_connection(("127.0.0.1", listener.port))
    stop = threading.Event()

    def trickle():   # one byte every 0.2 s: 100 bytes would take 20 s
        with contextlib.suppress(OSError):
            while not stop.wait(0.2):
                stall.sendall(b"x")

    if stranger == "trickling":
        threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        dest = wire.connect(listener.url, DEST_UUID, listener.secret, timeout=10.0)
        source, error = accepting.result()
        assert error is None and source is not None
        assert time.monotonic() - t0 < 5.0, "the stalled peer held the slot"
        stall.settimeout(5.0)
        assert stall.recv(1 << 10)[:len(wire.MAGIC)] == wire.MAGIC
        assert _hung_up(stall)                     # then the source hung up on it
        source.close()
        dest.close()
    finally:
        stop.set()
        stall.close()


def test_wire_listener_gives_up_by_its_deadline_and_closes():
    listener = wire.Listener("127.0.0.1", timeout=5.0)
    accepting = _Accepting(listener, wait=1.5)
    stall = socket.create_connection(("127.0.0.1", listener.port))
    stop = threading.Event()

    def trickle():
        with contextlib.suppress(OSError):
            while not stop.wait(0.2):
                stall.sendall(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    try:
        t0 = time.monotonic()
        channel, error = accepting.result()
        assert channel is None and time.monotonic() - t0 < 4.0
        assert "did not connect for the handoff within" in _one_line(error)
    finally:
        stop.set()
        stall.close()
    with pytest.raises(FetchError) as caught:
        wire.connect(listener.url, DEST_UUID, listener.secret, timeout=2.0)
    assert "cannot reach" in _one_line(caught.value)
