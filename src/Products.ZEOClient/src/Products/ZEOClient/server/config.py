"""``<hardened>``: the zeo.conf section that installs the hardening.

It wraps the server's storage section; opening it installs
``protocol.install`` with this section's keys, before the server accepts
any connection, installs the bundle's ZEO tuning (``../tuning.py``:
in-memory commit logs) unless ``tuning off``, and puts the stored-records guard (``records.py``) on the
storage's ``store``, ``restore`` and ``storeBlob``.
"""

from ZODB.config import BaseConfig

from .. import tuning
from . import protocol
from . import records


class Hardened(BaseConfig):

    def open(self):
        protocol.install(
            encodings=self.config.encodings or None,
            max_frame_size=self.config.max_frame_size,
        )
        if self.config.tuning:
            tuning.install()
        storage = self.config.base.open()
        if self.config.guard_records:
            policy = records.Policy(
                modules=records.DEFAULT_MODULES + tuple(self.config.allow_module),
                globals_=records.DEFAULT_GLOBALS + tuple(self.config.allow_global),
                callables=records.DEFAULT_CALLABLES + tuple(self.config.allow_callable),
            )
            records.guard(storage, policy)
        return storage


def encoding(value):
    value = value.lower()
    if value not in protocol.ENCODINGS:
        raise ValueError(
            f"encodings takes pickle and/or msgpack, not {value!r}"
        )
    return value
