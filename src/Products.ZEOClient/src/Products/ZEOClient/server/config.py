"""``<hardened>``: the zeo.conf section that installs the hardening.

It wraps the server's storage section and returns that storage as it is;
opening it installs ``protocol.install`` with this section's keys, before
the server accepts any connection.
"""

from ZODB.config import BaseConfig

from . import protocol


class Hardened(BaseConfig):

    def open(self):
        protocol.install(
            encodings=self.config.encodings or None,
            max_frame_size=self.config.max_frame_size,
        )
        return self.config.base.open()


def encoding(value):
    value = value.lower()
    if value not in protocol.ENCODINGS:
        raise ValueError(
            f"encodings takes pickle and/or msgpack, not {value!r}"
        )
    return value
