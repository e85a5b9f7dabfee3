"""The stored-records guard: what a client stores may reference only
globals the operator allows, and may call only callables named exactly.

A ZODB data record is two pickles (class, then state).  Unpickling one
imports every global it names and calls whatever a REDUCE, INST or OBJ
opcode names, with arguments from the pickle: a record that names
``os.system`` runs a command wherever it is loaded (server-side conflict
resolution, any client, a pack's reference scan of broken data).  The
guard reads each record's opcodes *without unpickling* (``pickletools``)
and follows the pickle machine's stack, so it knows which globals are
merely referenced (a class in a persistent reference) and which are
called.

- A referenced global must be allowed exactly (``allow-global``) or by
  its module prefix (``allow-module``: application packages).
- A called global (REDUCE, INST, OBJ) must be in ``allow-callable``,
  exactly: a prefix cannot stop gadget chains built from allowed
  modules.  Creating an instance with ``NEWOBJ`` or copyreg's
  ``_reconstructor``/``__newobj__`` only calls ``cls.__new__`` of an
  allowed class and needs no entry.
- Anything the guard cannot follow (a STACK_GLOBAL whose names do not
  come from plain strings, an unknown opcode) is refused.

A refused record makes the store raise ``RecordRefused``; ZEO aborts the
transaction at vote and sends the error to the client.  Nothing of that
transaction is written.
"""

import io
import logging
import pickletools

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

# Python 2 names in old records.
ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

MARK = object()


class RecordRefused(StorageTransactionError):
    """A stored record references a global the server does not allow.

    Nothing of the transaction was written.
    """


class Global:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def dotted(module, name):
    return f"{ALIASES.get(module, module)}.{name}"


class Policy:
    """The allowlists, from the server's configuration."""

    def __init__(self, modules=DEFAULT_MODULES, globals_=DEFAULT_GLOBALS,
                 callables=DEFAULT_CALLABLES):
        self.modules = tuple(modules)
        self.globals = frozenset(globals_) | frozenset(callables)
        self.callables = frozenset(callables)
        self._verdicts = {}  # name -> bool; a server sees few distinct names

    def referenced(self, name):
        verdict = self._verdicts.get(name)
        if verdict is None:
            module = name.rpartition(".")[0]
            verdict = name in self.globals or any(
                module == prefix or module.startswith(prefix + ".")
                for prefix in self.modules
            )
            if len(self._verdicts) < 10000:
                self._verdicts[name] = verdict
        return verdict

    def check_reference(self, name):
        if not self.referenced(name):
            raise RecordRefused(f"it references {name}, which is not allowed")

    def check_call(self, item):
        if isinstance(item, Global):
            if item.name not in self.callables:
                raise RecordRefused(f"it calls {item.name}, which may not be called")
        else:
            # Calling what is not a plain global (the result of another
            # call, a string...): the guard cannot tell what it is.
            raise RecordRefused("it calls an object the guard cannot identify")


def scan(data, policy):
    """Raise RecordRefused if the record *data* breaks *policy*."""
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        scan_one(stream, policy)


# Per opcode: (items below a mark it pops, or -1 without a mark;
# items it pops without a mark; items it pushes).
EFFECTS = {}
for _op in pickletools.opcodes:
    _before = _op.stack_before
    _below = (
        _before.index(pickletools.markobject)
        if pickletools.markobject in _before
        else -1
    )
    EFFECTS[_op.name] = (_below, len(_before), len(_op.stack_after))
del _op, _before, _below


def scan_one(stream, policy):
    stack, memo = [], {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "MARK":
            stack.append(MARK)
            continue
        if name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            target = Global(dotted(module, attr))
            policy.check_reference(target.name)
            if name == "INST":
                policy.check_call(target)
                _pop_to_mark(stack)
                stack.append(None)
            else:
                stack.append(target)
            continue
        if name == "STACK_GLOBAL":
            attr, module = _pop(stack), _pop(stack)
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise RecordRefused("it names a global the guard cannot read")
            target = Global(dotted(module, attr))
            policy.check_reference(target.name)
            stack.append(target)
            continue
        if name == "REDUCE":
            _pop(stack)
            policy.check_call(_pop(stack))
            stack.append(None)
            continue
        if name == "OBJ":
            items = _pop_to_mark(stack)
            policy.check_call(items[0] if items else None)
            stack.append(None)
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
            continue
        if name == "STOP":
            return
        # Everything else only moves data: apply its stack effect.
        below, pops, pushes = EFFECTS[name]
        if below >= 0:
            # e.g. APPENDS: [list, mark, items...] -> [list]
            _pop_to_mark(stack)
            pops = below
        if pops:
            del stack[-pops:]
        if pushes:
            stack.extend([arg if isinstance(arg, str) else None] * pushes)


def _pop(stack):
    return stack.pop() if stack else None


def _pop_to_mark(stack):
    items = []
    while stack:
        item = stack.pop()
        if item is MARK:
            break
        items.append(item)
    items.reverse()
    return items


def guard(storage, policy):
    """Check every record *storage* is asked to store."""
    store = storage.store
    restore = getattr(storage, "restore", None)
    store_blob = getattr(storage, "storeBlob", None)

    def check(oid, data):
        if data is None:  # a deletion, or an undo's back pointer
            return
        try:
            scan(data, policy)
        except RecordRefused as exc:
            message = (
                f"the server refused the record of object {oid_repr(oid)}: {exc}; "
                "nothing of this transaction was written"
            )
            logger.error("%s", message)
            raise RecordRefused(message) from None
        except Exception as exc:
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
