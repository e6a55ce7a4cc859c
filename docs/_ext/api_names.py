"""A local Sphinx extension: public names documented where users import them.

autodoc reads the doc-comment (``#:``) or docstring of a module-level constant or type alias
only in the module being documented. A package that re-exports one from a submodule (``from
.shapes import DEFAULT_SHAPES_CONFIG``) has none in its own source, so ``automodule`` leaves the
name out. _copy_reexported_docs hands the package the doc written at the definition, for the
names in its ``__all__``. Docstrings also refer to the helpers of their own module by short name
(``:func:`bump```); on a package page that short name means nothing, so _resolve_short_name
follows it in the module that defines the referring object, to the page that documents it.
"""
from __future__ import annotations

_PACKAGE = "pyg_infdiff"
# Not "obj": docstrings use :obj: for argument names, which can coincide with module globals.
_SHORT_NAME_ROLES = {"class", "exc", "func", "meth", "attr", "data"}


def _public_modules() -> dict:
    import importlib
    import pkgutil

    package = importlib.import_module(_PACKAGE)
    modules = {_PACKAGE: package}
    for info in pkgutil.walk_packages(package.__path__, _PACKAGE + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        try:
            modules[info.name] = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (pyg_infdiff.testing.strategies: hypothesis)
            continue
    return modules


def _copy_reexported_docs(app) -> None:
    import inspect

    from sphinx.pycode import ModuleAnalyzer

    def attr_docs(modname: str) -> dict:
        analyzer = ModuleAnalyzer.for_module(modname)  # cached: autodoc reads this same object
        analyzer.analyze()
        return analyzer.attr_docs

    modules = _public_modules()
    for modname, module in modules.items():
        docs = attr_docs(modname)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if ("", name) in docs or inspect.isclass(obj) or inspect.isroutine(obj):
                continue
            for source_name, source in modules.items():
                if source_name != modname and vars(source).get(name) is obj:
                    source_docs = attr_docs(source_name)
                    if ("", name) in source_docs:
                        docs["", name] = list(source_docs["", name])
                        break


def _import_object(fullname: str):
    """The object a dotted name means: by attribute access first, as Python reads it (so
    ``pyg_infdiff.graph.subsample`` is the function, not the module of that name), else through
    the longest importable module name (``pyg_infdiff.graph.subsample.radical_inverse``)."""
    import importlib

    parts = fullname.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        return None
    for attr in parts[1:]:
        if not hasattr(obj, attr):
            break
        obj = getattr(obj, attr)
    else:
        return obj
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _home_module(node):
    """The module whose namespace the short names in :obj:`node`'s docstring come from: that
    of the object the docstring belongs to, or the module of the page section."""
    import sys

    from sphinx import addnodes

    desc = node.parent
    while desc is not None and not isinstance(desc, addnodes.desc):
        desc = desc.parent
    sig = next(desc.findall(addnodes.desc_signature), None) if desc is not None else None
    if sig is not None and sig.get("module") and sig.get("fullname"):
        obj = _import_object(f"{sig['module']}.{sig['fullname']}")
        obj = getattr(obj, "fget", obj)  # a property: its getter knows its module
        modname = getattr(obj, "__module__", None)
        if isinstance(modname, str) and modname.startswith(_PACKAGE + "."):
            return sys.modules.get(modname)
    return sys.modules.get(node.get("py:module") or "")


def _resolve_short_name(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("reftype") not in _SHORT_NAME_ROLES:
        return None
    home = _home_module(node)
    head, _, rest = node["reftarget"].partition(".")
    obj = vars(home).get(head) if home is not None else None
    if obj is None:
        return None
    domain = env.get_domain("py")
    for fullname in sorted(domain.objects, key=len):  # the shortest: the package-level name
        if (fullname.startswith(_PACKAGE + ".") and fullname.rpartition(".")[2] == head
                and _import_object(fullname) is obj):
            target = f"{fullname}.{rest}" if rest else fullname
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       target, node, contnode)
    return None


def setup(app) -> dict:
    app.connect("builder-inited", _copy_reexported_docs)
    app.connect("missing-reference", _resolve_short_name)
    return {"parallel_read_safe": True}
