"""A TCP proxy on 127.0.0.1 that plays a network between two hosts.

The hosts tests (tests/test_hosts.py) put one between each client host
and the ZEO server.  What it can do to the link, at any time:

- ``blackhole()``: stop delivering in both directions while every socket
  stays open, new connections included (a firewall that lost its state
  table, a migrated VM, a dead switch: nothing arrives, nothing says
  so); ``heal()`` delivers what was held, as TCP's retransmissions would;
- ``latency``: seconds added to each direction;
- ``rate``: bytes per second in each direction (None: unlimited).

Each direction of each connection is a receiving thread and a sending
thread joined by a queue of (time received, bytes); all of them are
daemon threads, bounded by ``close()``.  The queue holds at most
``WINDOW`` bytes: past that the receiving thread stops reading, so a
slow or dead link pushes back on the sender as a real one does (its
socket buffers fill) instead of swallowing everything at once.
"""

import collections
import socket
import threading
import time

WINDOW = 256 * 1024  # bytes in flight per direction


class _Queue(collections.deque):
    size = 0  # bytes queued


class NetProxy:

    def __init__(self, target, latency=0.0, rate=None):
        self.target = target  # (host, port)
        self.latency = latency
        self.rate = rate
        self.held = False
        self._changed = threading.Condition()
        self._closed = False
        self._sockets = []
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.address = self._server.getsockname()
        self.delivered = 0  # bytes, both directions
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self):
        return self.address[1]

    def _accept(self):
        self._server.settimeout(0.2)
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            for s in (conn, upstream):  # no Nagle: latency is ours to add
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._changed:
                self._sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                queue = _Queue()
                threading.Thread(target=self._receive, args=(a, b, queue), daemon=True).start()
                threading.Thread(target=self._send, args=(b, a, queue), daemon=True).start()

    def _receive(self, source, sink, queue):
        try:
            while not self._closed:
                with self._changed:
                    while queue.size > WINDOW and not self._closed:
                        self._changed.wait(0.2)
                data = source.recv(65536)
                with self._changed:
                    queue.append((time.monotonic(), data))
                    queue.size += len(data)
                    self._changed.notify_all()
                if not data:
                    return
        except OSError:
            with self._changed:
                queue.append((time.monotonic(), b""))
                self._changed.notify_all()

    def _send(self, sink, source, queue):
        try:
            while True:
                with self._changed:
                    while not self._closed and (self.held or not queue):
                        self._changed.wait(0.2)
                    if self._closed:
                        return
                    received, data = queue.popleft()
                    queue.size -= len(data)
                    self._changed.notify_all()
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                due = received + self.latency
                while time.monotonic() < due and not self._closed:
                    time.sleep(min(0.05, due - time.monotonic()))
                rate = self.rate
                for start in range(0, len(data), 16384 if rate else len(data)):
                    piece = data[start:start + (16384 if rate else len(data))]
                    sent_at = time.monotonic()
                    sink.sendall(piece)
                    self.delivered += len(piece)
                    if rate:
                        pause = len(piece) / rate - (time.monotonic() - sent_at)
                        if pause > 0:
                            time.sleep(pause)
        except OSError:
            pass
        finally:
            for s in (sink, source):
                try:
                    s.close()
                except OSError:
                    pass

    def blackhole(self):
        with self._changed:
            self.held = True

    def heal(self):
        with self._changed:
            self.held = False
            self._changed.notify_all()

    def close(self):
        with self._changed:
            self._closed = True
            sockets, self._sockets = self._sockets, []
            self._changed.notify_all()
        self._server.close()
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass
