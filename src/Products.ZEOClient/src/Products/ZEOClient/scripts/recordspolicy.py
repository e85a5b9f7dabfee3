"""The records guard's modules, from the code the instances run.

The server stores only records whose classes come from allowed modules
(``server/records.py``).  A hand-kept list of packages cannot follow
what a site installs (an add-on brings its own classes), so buildout
runs this with the instances' eggs (``bin/zopepy``) and writes one
``allow-module`` line per top-level package of every distribution it
finds into ``parts/etc/records-policy.conf``, which zeo.conf's
``<hardened>`` section includes.

That allows classes to be *stored* (referenced, and created without
calling them); what a record may *call* stays an exact list
(``allow-callable``).  Never allowed, whatever is installed: the
standard library (``os``, ``subprocess``, ``builtins``, ``importlib``,
``pickle``, ``ctypes``... all of it, so the exact defaults in records.py
stay the only stdlib names), pickle machinery from PyPI, and packaging
tools.

A profile adds exact entries in files of its own (``etc/plone/records.conf``
for the Plone profile: each entry with the reason in a comment), named on
the command line (``[records-policy] include``): their ``allow-callable``,
``allow-fresh-callable`` and ``allow-global`` lines are copied after the
generated ones, with their comments.  A file that names something the
generator never allows, or any other kind of line, is refused with the
file and line, and buildout stops.  Imports nothing from Zope.
"""

import importlib.metadata
import importlib.util
import sys

# Never, even when a distribution ships them: they run code on load.
NEVER = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "subprocess", "importlib",
    "pickle", "_pickle", "cPickle", "copyreg", "copy_reg", "ctypes", "sys",
    "shutil", "socket", "marshal", "code", "codeop", "runpy", "pty",
    "multiprocessing", "threading", "signal", "types", "inspect", "gc",
    "zodbpickle", "dill", "cloudpickle", "joblib",
    "setuptools", "pkg_resources", "pip", "_distutils_hack", "wheel",
    "distutils", "site", "zc.buildout", "zc.recipe",
})


def in_never(module):
    """True for *module* in, or under, a package of NEVER."""
    return any(module == n or module.startswith(n + ".") for n in NEVER)


def never(module):
    top = module.split(".")[0]
    return (
        top in sys.stdlib_module_names or top.startswith("_")
        or not all(part.isidentifier() for part in module.split("."))
        or in_never(module)
    )


def namespace(top):
    """True for a namespace package (no __init__: portions from several
    distributions may live in it)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin in (None, "namespace")


def installed_modules():
    """Top-level packages of every distribution on this path, sorted."""
    found = set()
    for top, dists in importlib.metadata.packages_distributions().items():
        # A name several distributions share is a namespace (Products,
        # zope, zc...): not allowed whole, or zc.buildout would come in
        # with zc.lockfile; its portions are, below.
        if len(set(dists)) == 1 and not never(top) and not namespace(top):
            found.add(top)
    # The portions of namespace packages, by their distributions' names.
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").replace("-", "_")
        if "." in name and not never(name):
            found.add(name)
    return sorted(found)


# The keys a profile's file may use: exact names, never module prefixes.
EXACT_KEYS = ("allow-callable", "allow-fresh-callable", "allow-global")


class BadEntry(ValueError):
    """A line of a profile's file that the generator does not copy."""


def profile_lines(path):
    """The lines of a profile's file of exact entries, checked."""
    lines = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                lines.append(line)
                continue
            key, _, name = line.partition(" ")
            name = name.strip()
            where = f"{path}, line {number}"
            if key not in EXACT_KEYS or not name or " " in name:
                raise BadEntry(
                    f"{where}: {line!r}: only {', '.join(EXACT_KEYS)} lines "
                    "naming one module.name each (classes of installed "
                    "packages are allowed by the generator)"
                )
            module = name.rpartition(".")[0]
            if not module or in_never(module):
                raise BadEntry(f"{where}: {name} can never be allowed")
            lines.append(f"{key} {name}")
    return lines


def main(argv=None):
    paths = sys.argv[1:] if argv is None else argv
    try:
        extra = [(path, profile_lines(path)) for path in paths]
    except (OSError, BadEntry) as exc:
        print(f"recordspolicy: {exc}", file=sys.stderr)
        return 1
    modules = installed_modules()
    print("# Generated by buildout (Products.ZEOClient.scripts.recordspolicy):")
    print("# the top-level packages of the instances' distributions.  Do not")
    print("# edit; add allow-* lines to etc/zeo.conf.in instead.")
    for module in modules:
        print(f"allow-module {module}")
    for path, lines in extra:
        print(f"# From {path}:")
        for line in lines:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
