"""The layering rules of docs/architecture.md, checked on every import statement of the package:
a violation fails here, naming the file, the line and the rule."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "provider"
STDLIB = set(sys.stdlib_module_names)

# layer -> (allowed third-party top-level packages, forbidden provider subpackages)
RULES: dict[str, tuple[set[str], tuple[str, ...]]] = {
    # Pure models and rules: the standard library and pydantic (plus packaging's version values).
    "domain": (
        {"pydantic", "packaging"},
        ("provider.services", "provider.backends", "provider.api", "provider.app"),
    ),
    # Use cases talk to ports only: no backend, no library of the outside world (aiohttp, boto, ...),
    # no API layer.
    "services": (
        set(),
        ("provider.backends", "provider.api", "provider.app", "provider.cli", "provider.server"),
    ),
}
# The API layer may use aiohttp and pydantic, and reaches backends only through app.py.
API_FORBIDDEN = ("provider.backends", "provider.app")


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(layer: str) -> list[str]:
    allowed, forbidden = RULES[layer]
    problems = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if module.startswith(forbidden):
                problems.append(f"{where}: {layer} imports {module}")
            elif top not in STDLIB and top != "provider" and top not in allowed:
                problems.append(f"{where}: {layer} imports the third-party {module}")
    return problems


def test_the_domain_imports_only_the_standard_library_and_pydantic() -> None:
    assert violations("domain") == []


def test_services_import_no_backend_no_third_party_and_no_api() -> None:
    assert violations("services") == []


def test_the_api_imports_no_backend() -> None:
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: api imports {module}"
        for path in sorted((PACKAGE / "api").rglob("*.py"))
        for line, module in imports(path)
        if module.startswith(API_FORBIDDEN)
    ]
    assert problems == []


def test_the_checker_sees_a_violation() -> None:
    """A rule that cannot fail proves nothing: a backend import in a services module is caught."""
    tree = "from provider.backends.storage.fs import FilesystemStorage\n"
    sample = PACKAGE.parent / "tests" / "_architecture_sample.py"
    sample.write_text(tree)
    try:
        assert imports(sample) == [(1, "provider.backends.storage.fs")]
        assert "provider.backends.storage.fs".startswith(RULES["services"][1])
    finally:
        sample.unlink()


def unsupervised(source: str, filename: str = "<sample>") -> list[str]:
    """Background work that bypasses provider/aio.py: a bare `asyncio.create_task` (a task nobody
    holds may vanish, and its failure goes unseen) or `asyncio.wait_for(<x>.wait(), ...)`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if name == "create_task":
            found.append(f"{filename}:{node.lineno}: create_task (use provider.aio.Tasks)")
        elif name == "wait_for" and node.args:
            waited = node.args[0]
            if (
                isinstance(waited, ast.Call)
                and isinstance(waited.func, ast.Attribute)
                and waited.func.attr == "wait"
                and not waited.args
                and isinstance(waited.func.value, ast.Attribute | ast.Name)
                and not _is_process(waited.func.value)
            ):
                found.append(f"{filename}:{node.lineno}: wait_for on an event (use provider.aio.wait_event)")
    return found


def _is_process(node: ast.expr) -> bool:
    return "process" in ast.unparse(node)


def test_background_work_goes_through_the_asyncio_kit() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "aio.py" and path.parent == PACKAGE:
            continue
        problems += unsupervised(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert problems == []


def test_the_kit_checker_sees_bypasses() -> None:
    sample = (
        "import asyncio\n"
        "async def f(e, p):\n"
        "    asyncio.create_task(g())\n"
        "    await asyncio.wait_for(e.wait(), 1)\n"
        "    await asyncio.wait_for(p.process.wait(), 1)\n"  # a process, not an event: allowed
    )
    assert unsupervised(sample) == [
        "<sample>:3: create_task (use provider.aio.Tasks)",
        "<sample>:4: wait_for on an event (use provider.aio.wait_event)",
    ]
