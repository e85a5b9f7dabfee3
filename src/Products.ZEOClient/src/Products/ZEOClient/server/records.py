"""The stored-records guard: what a client stores may reference only
globals the operator allows, and may call only callables named exactly.

A ZODB data record is two pickles (class, then state).  Unpickling one
imports every global it names and calls whatever a REDUCE, INST or OBJ
opcode names, with arguments from the pickle: a record that names
``os.system`` runs a command wherever it is loaded (server-side conflict
resolution, any client, a pack's reference scan of broken data).

How a record is read: by the pickle machine ZODB itself loads records
with (zodbpickle's, in C, with ZODB's settings), but with every way out
of it replaced (``StandInReader``).  ``find_class``, the only way a
pickle reaches a global, checks the name and returns an inert
*stand-in* class of that name instead of importing anything; calling a
stand-in (REDUCE, INST, OBJ) is the record calling that global, and is
checked; persistent references become plain numbers.  What the machine
does besides (building lists, dicts, tuples, strings) touches no code
but CPython's own, so no code named by the record ever runs, and the
guard reads the record exactly as a loader would.  (The first version
followed the opcodes with ``pickletools`` in Python, 6 to 10 times
slower: 33 us for a small record, 1 ms for a folder of 100 items, under
the commit lock; ``make bench`` reports the cost per record.)

- A referenced global must be allowed exactly (``allow-global``) or by
  its module prefix (``allow-module``: application packages).
- A called global must be in ``allow-callable``, exactly: a prefix
  cannot stop gadget chains built from allowed modules.  Creating an
  instance with ``NEWOBJ`` (or INST/OBJ without arguments) only calls
  ``cls.__new__`` of an allowed class and needs no entry.
- Calling anything that is not a global the record named (the result of
  another call, a string...), or what the machine cannot load, is
  refused.
- No writes through a call: a record may set the state of (BUILD) or
  add items to (SETITEM(S), APPEND(S)) what a call returned only when
  that callable is known to return a new object each time (the
  defaults but ``Provides``, and ``allow-fresh-callable``).  An allowed
  callable that returns a shared object (``zope.component``'s ``GAR``
  is ``getattr`` on a registry, pytz's ``_p`` returns cached time zones)
  would otherwise let a record change that process-wide object in every
  process that loads it.  ``GAR`` itself, when allowed, may only be
  called as ZODB's component pickling does: on the global registry, for
  ``adapters`` or ``utilities``.

A refused record makes the store raise ``RecordRefused``; ZEO aborts the
transaction at vote and sends the error to the client.  Nothing of that
transaction is written.
"""

import io
import logging

import zodbpickle.pickle

from ZODB.POSException import StorageTransactionError
from ZODB.utils import oid_repr

logger = logging.getLogger(__name__)

# Application packages of a Zope + CMF site: any class they define may be
# stored (referenced, or instantiated without calling it).
DEFAULT_MODULES = (
    "AccessControl", "Acquisition", "App", "BTrees", "ComputedAttribute",
    "DateTime", "DocumentTemplate", "ExtensionClass", "MultiMapping", "OFS",
    "Persistence", "Products", "Shared", "ZODB", "ZopeUndo", "ZPublisher",
    "Zope2", "five", "persistent", "plone", "webdav", "zope",
)

# Exact globals outside those packages that plain data needs.
DEFAULT_GLOBALS = (
    "builtins.object", "builtins.set", "builtins.frozenset",
    "builtins.bytearray", "builtins.complex", "builtins.list", "builtins.dict",
    "builtins.tuple", "builtins.str", "builtins.bytes", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.slice", "builtins.range",
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "collections.OrderedDict", "collections.deque",
    "datetime.datetime", "datetime.date", "datetime.time",
    "datetime.timedelta", "datetime.timezone", "decimal.Decimal",
    "uuid.UUID", "zodbpickle.binary", "_codecs.encode",
    # ZCatalog's "no value" (Missing.MV, pickled as this global) in the
    # metadata of an object that lacks a column, and in every record
    # once a column is added to a populated catalog.
    "Missing.V",
)

# What a record may call (REDUCE, INST, OBJ): named exactly.
DEFAULT_CALLABLES = (
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "builtins.set", "builtins.frozenset", "builtins.bytearray",
    "builtins.complex", "builtins.slice", "builtins.range",
    "collections.OrderedDict", "collections.deque",
    "datetime.datetime", "datetime.date", "datetime.time",
    "datetime.timedelta", "datetime.timezone", "decimal.Decimal",
    "uuid.UUID", "zodbpickle.binary", "_codecs.encode",
    "zope.interface.declarations.Provides",
    "zope.interface.declarations.ProvidesClass",
    "zope.interface.declarations.Implements",
    "zope.interface.interface.InterfaceClass",
    "DateTime.DateTime.DateTime",
)

# Callables known to return a new object each time: a record may set the
# state of what they return (copyreg's reconstructors are how most
# instances are pickled).  Not zope.interface's Provides: it returns
# cached declarations.
DEFAULT_FRESH = tuple(c for c in DEFAULT_CALLABLES
                      if c != "zope.interface.declarations.Provides")

GAR = "zope.component.globalregistry.GAR"


def check_gar(policy, args):
    """GAR(components, name) is getattr: only as ZODB pickles registries."""
    if not (len(args) == 2 and getattr(args[0], "name", None) ==
            "zope.component.globalregistry.base" and isinstance(args[0], type)
            and args[1] in ("adapters", "utilities")):
        policy.refuse(
            "call", GAR,
            f"it calls {GAR} other than on the global registry's adapters or utilities",
        )


# Callables whose arguments are checked too.
ARGUMENT_CHECKS = {GAR: check_gar}

# Python 2 names in old records.
ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RecordRefused(StorageTransactionError):
    """A stored record references a global the server does not allow.

    Nothing of the transaction was written.
    """


def dotted(module, name):
    return f"{ALIASES.get(module, module)}.{name}"


class Policy:
    """The allowlists, from the server's configuration."""

    def __init__(self, modules=DEFAULT_MODULES, globals_=DEFAULT_GLOBALS,
                 callables=DEFAULT_CALLABLES, fresh=DEFAULT_FRESH):
        self.modules = tuple(modules)
        self.fresh = frozenset(fresh)
        self.callables = frozenset(callables) | self.fresh
        self.globals = frozenset(globals_) | self.callables
        # (module, name) -> stand-in class of an allowed global; a server
        # sees few distinct names, so this is the guard's only cache.
        self._stand_ins = {}

    def referenced(self, name):
        module = name.rpartition(".")[0]
        return name in self.globals or any(
            module == prefix or module.startswith(prefix + ".")
            for prefix in self.modules
        )

    def refuse(self, kind, name, message):
        """What breaks the policy: a *kind* ("global", "call", "write") of
        use of global *name*.  Refused here; ``Findings`` notes it."""
        raise RecordRefused(message)

    def check_reference(self, name):
        if not self.referenced(name):
            self.refuse("global", name, f"it references {name}, which is not allowed")

    def check_call(self, name, args=()):
        if name not in self.callables:
            self.refuse("call", name, f"it calls {name}, which may not be called")
        check = ARGUMENT_CHECKS.get(name)
        if check is not None:
            check(self, args)

    def stand_in(self, module, name):
        """The inert class that takes the place of global *module.name*
        (checked: refused unless allowed)."""
        cls = self._stand_ins.get((module, name))
        if cls is None:
            full = dotted(module, name)
            self.check_reference(full)
            cls = StandInType(full, (StandIn,), {"policy": self, "name": full})
            if len(self._stand_ins) < 10000:
                self._stand_ins[(module, name)] = cls
        return cls


class StandInType(type):
    """The type of stand-ins: calling one is the record calling a global."""

    def __call__(cls, *args, **kw):
        cls.policy.check_call(cls.name, args)
        obj = object.__new__(cls)
        if cls.name not in cls.policy.fresh:
            obj.fresh = False
        return obj


class StandIn(metaclass=StandInType):
    """An instance of a global the record named; inert.  The methods are
    what the pickle machine may call on an object it builds (BUILD,
    APPEND(S), SETITEM(S)); each does nothing, unless the object is what
    a callable returned that may return a shared object: then it is a
    write into that object, refused."""

    policy = name = None
    fresh = True  # made by the record itself (NEWOBJ), or by a fresh call

    def __new__(cls, *args, **kw):  # NEWOBJ
        return object.__new__(cls)

    def _changed(self):
        if not self.fresh:
            self.policy.refuse(
                "write", self.name,
                f"it changes what {self.name} returned, which may be an object "
                "shared by the whole process",
            )

    def __setstate__(self, state):
        self._changed()

    def append(self, item):
        self._changed()

    def extend(self, items):
        self._changed()

    def __setitem__(self, key, value):
        self._changed()

    def __call__(self, *args, **kw):
        raise RecordRefused("it calls an object the guard cannot identify")


class StandInReader(zodbpickle.pickle.Unpickler):
    """ZODB's unpickler, with stand-ins for every global (see above)."""

    # A persistent reference becomes a number: loads nothing.  (The class
    # inside a reference is a global like any other: checked.)
    persistent_load = id

    def __init__(self, stream, policy):
        # ZODB's own settings for reading records (ZODB._compat).
        super().__init__(stream, encoding="ASCII", errors="bytes")
        self.policy = policy

    def find_class(self, module, name):
        return self.policy.stand_in(module, name)


class Findings(Policy):
    """A policy that notes what it would refuse and reads on: for
    ``bin/zeoguard scan`` (existing data) and the audit mode.

    ``found`` maps (kind, global) to [count, an example oid]; ``oid`` is
    the object being read, set by the caller.
    """

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.found = {}
        self.oid = None

    def refuse(self, kind, name, message):
        entry = self.found.setdefault((kind, name), [0, self.oid])
        entry[0] += 1

    def stand_in(self, module, name):
        # Not cached across checks: every reference is noted.
        full = dotted(module, name)
        self.check_reference(full)
        return StandInType(full, (StandIn,), {"policy": self, "name": full})


def scan(data, policy):
    """Raise RecordRefused if the record *data* breaks *policy*."""
    stream = io.BytesIO(data)
    reader = StandInReader(stream, policy)
    size = len(data)
    while stream.tell() < size:
        reader.load()


def scan_stored(data, policy, untransform=None):
    """Raise RecordRefused if a reader of the record *data* could find
    anything outside *policy* in it.

    *untransform* is the served storage's ``untransform_record_data``
    (ZODB's IStorageWrapper: zc.zlibstorage, ZODB.tests.hexstorage), or
    None.  What a store receives is then either the record itself (the
    wrapper transforms it on the way in: ``<zlibstorage>``), or the record
    as the client's own wrapper transformed it (the server side of a
    client transform, which stores it as it came: ``<serverzlibstorage>``);
    readers (server-side conflict resolution, pack, the clients) see what
    ``untransform`` makes of the stored bytes.  Which case it is cannot be
    told from the bytes: a client may send a record already compressed to
    a ``<zlibstorage>``, which then stores it as it is.  So both readings
    are checked: the bytes as they came and what ``untransform`` makes of
    them, each that is a readable pickle must conform, and one of them
    must be readable.  (The bytes a transform makes start with ``.``,
    the STOP opcode, which no pickle does: the reading that does not
    apply is simply not a pickle.)
    """
    forms = [data]
    if untransform is not None:
        try:
            plain = untransform(data)
        except Exception:
            plain = None  # not transformed (the wrapper does it on store)
        if plain is not None and plain != data:
            forms.append(plain)
    readable, error = False, None
    for form in forms:
        try:
            if not form:
                # No record is empty (a deletion is None); an untransform
                # can make b"" of junk (hexstorage of b"x").
                raise ValueError("an empty record")
            scan(form, policy)
        except RecordRefused:
            raise
        except Exception as exc:
            error = error or exc  # this reading is not a pickle
        else:
            readable = True
    if not readable:
        raise error


def guard(storage, policy, audit=False):
    """Check every record *storage* is asked to store.

    Records are read as readers of *storage* will read them: through its
    ``untransform_record_data`` when it has one (see ``scan_stored``).

    With *audit*, a record that breaks the policy is logged (WARNING,
    "would refuse") and stored all the same: for a first week of an
    existing site on the bundle, before the policy is made to fit.
    """
    store = storage.store
    restore = getattr(storage, "restore", None)
    store_blob = getattr(storage, "storeBlob", None)
    untransform = getattr(storage, "untransform_record_data", None)

    def check(oid, data):
        if data is None:  # a deletion, or an undo's back pointer
            return
        try:
            scan_stored(data, policy, untransform)
        except RecordRefused as exc:
            if audit:
                logger.warning(
                    "audit: would refuse the record of object %s: %s; stored",
                    oid_repr(oid), exc,
                )
                return
            message = (
                f"the server refused the record of object {oid_repr(oid)}: {exc}; "
                "nothing of this transaction was written"
            )
            logger.error("%s", message)
            raise RecordRefused(message) from None
        except Exception as exc:
            if audit:
                logger.warning(
                    "audit: would refuse the record of object %s: not a readable "
                    "pickle (%s); stored", oid_repr(oid), type(exc).__name__,
                )
                return
            message = (
                f"the server refused the record of object {oid_repr(oid)}: "
                f"it is not a readable pickle ({type(exc).__name__}); "
                "nothing of this transaction was written"
            )
            logger.error("%s", message)
            raise RecordRefused(message) from None

    def guarded_store(oid, serial, data, version, transaction):
        check(oid, data)
        return store(oid, serial, data, version, transaction)

    storage.store = guarded_store
    if restore is not None:

        def guarded_restore(oid, serial, data, version, prev_txn, transaction):
            check(oid, data)
            return restore(oid, serial, data, version, prev_txn, transaction)

        storage.restore = guarded_restore
    if store_blob is not None:

        def guarded_store_blob(oid, serial, data, blobfilename, version, transaction):
            check(oid, data)
            return store_blob(oid, serial, data, blobfilename, version, transaction)

        storage.storeBlob = guarded_store_blob
    return storage
