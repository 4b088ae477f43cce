"""The enclave measures all the code it runs: every module of a measured package, and every ``protocols`` or
``pps_wire`` module a measured module imports, is in ``MODULES``, before the modules that import it."""

from __future__ import annotations

import ast

from pps_wire.measurement import MODULES, module_path, read_sources


def _imports(source: bytes, *, top_level_only: bool = False) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(source)
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_module_of_a_measured_package_is_measured() -> None:
    packages = {name for name in MODULES if module_path(name).name == "__init__.py"}
    assert packages == {"protocols.paillier_fast", "protocols.vertical_lr", "protocols.he_scoring"}
    for package in packages:
        directory = module_path(package).parent
        modules = {f"{package}.{f.stem}" for f in directory.glob("*.py") if f.name != "__init__.py"}
        assert modules <= set(MODULES), modules - set(MODULES)
        assert all(MODULES.index(m) < MODULES.index(package) for m in modules)  # the package comes last


def test_what_measured_code_imports_from_protocols_is_measured_first() -> None:
    order = {name: i for i, name in enumerate(MODULES)}
    for name, _path, source in read_sources():
        top = _imports(source, top_level_only=True)  # a function-level import may be circular (it runs later)
        for imported in _imports(source):
            if not imported.startswith(("protocols.", "pps_wire.")):
                continue
            parts = imported.split(".")
            module = next(
                (".".join(parts[:i]) for i in range(len(parts), 1, -1) if ".".join(parts[:i]) in order), None
            )
            assert module is not None, f"{name} imports {imported}, which is not measured"
            if imported in top:
                assert order[module] < order[name], f"{name} imports {module} before it is measured"
