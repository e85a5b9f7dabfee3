import socket
import unittest

from Products.ZEOClient import tcpinfo


class FakeTransport:
    def __init__(self, sock):
        self.sock = sock

    def get_extra_info(self, name):
        return self.sock if name == "socket" else None


class ProgressTests(unittest.TestCase):

    def setUp(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.client = socket.create_connection(listener.getsockname(), timeout=10)
        self.addCleanup(self.client.close)
        self.server, _ = listener.accept()
        self.addCleanup(self.server.close)
        self.transport = FakeTransport(self.client)

    def send(self, size):
        self.client.sendall(b"x" * size)
        got = 0
        while got < size:
            got += len(self.server.recv(65536))

    def test_a_transfer_is_progress_small_messages_are_not(self):
        progress = tcpinfo.Progress()
        self.assertFalse(progress(self.transport))  # nothing to compare with yet
        self.send(200 * 1024)
        # The peer acknowledged it (the kernel's count, read back).
        self.assertIsNotNone(tcpinfo.bytes_acked(self.transport))
        for _ in range(100):
            if progress(self.transport):
                break
        else:
            self.fail("200 KB acknowledged were not seen as progress")
        self.send(100)  # a ping
        self.assertFalse(progress(self.transport))

    def test_no_socket_is_no_progress(self):
        progress = tcpinfo.Progress()
        for transport in (None, FakeTransport(None)):
            self.assertIsNone(tcpinfo.bytes_acked(transport))
            self.assertFalse(progress(transport))
        unix_a, unix_b = socket.socketpair()
        self.addCleanup(unix_a.close)
        self.addCleanup(unix_b.close)
        self.assertIsNone(tcpinfo.bytes_acked(FakeTransport(unix_a)))
