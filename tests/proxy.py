"""A unix-socket proxy that a test can cut and heal: a network partition
between one ZEO client and the server, while the server keeps serving the
others.

``cut()`` closes every proxied connection and refuses new ones (accepted
and closed at once, like a link that resets); ``heal()`` lets connections
through again.  It runs in a daemon thread and stops with ``close()``.
"""

import os
import selectors
import socket
import threading


class UnixProxy:

    def __init__(self, listen_path, target_path):
        self.listen_path = listen_path
        self.target_path = target_path
        self.cut_off = False
        self._lock = threading.Lock()
        self._pairs = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(listen_path)
        os.chmod(listen_path, 0o600)
        self._server.listen(16)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        self._server.settimeout(0.2)
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.cut_off:
                conn.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target_path)
            except OSError:
                conn.close()
                upstream.close()
                continue
            with self._lock:
                self._pairs.append((conn, upstream))
            threading.Thread(
                target=self._pump, args=(conn, upstream), daemon=True
            ).start()

    def _pump(self, a, b):
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._closed.is_set():
                for key, _ in selector.select(0.2):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            selector.close()
            for s in (a, b):
                s.close()

    def cut(self):
        """Drop every connection and refuse new ones."""
        self.cut_off = True
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def heal(self):
        self.cut_off = False

    def close(self):
        self._closed.set()
        self.cut()
        self._server.close()
        self._thread.join(5)
        try:
            os.unlink(self.listen_path)
        except FileNotFoundError:
            pass
