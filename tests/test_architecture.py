"""The layering docs/architecture.md describes, checked on the source: the engine's pure core
imports neither pydantic nor the API types nor an adapter, and the registry does not load."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nb_completion"

# The engine's pure core: token ids in, records out (docs/architecture.md, "Core and adapters").
CORE = [
    "records", "fold", "sampling", "batch_sampling", "sequence", "scheduler", "slots", "model_runner",
    "batch_engine", "engine_thread", "kv", "rowwise_int8", "int8_op",
    "block_kernel", "block_linear", "config", "cpp_op", "gguf_blocks", "llama_pass",
    "detokenize", "stopping", "token_text", "gguf_cache", "model_lock",
]  # fmt: skip
# What the core may import from the rest of the package: the table of bounds (no imports itself).
CORE_MAY_IMPORT = {"nb_completion.api.bounds"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (also inside functions), relative imports resolved."""
    package = "nb_completion." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts[:-1])
    package = package.rstrip(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x
                    names.update(f"{module}.{alias.name}" for alias in node.names)
                    continue
            else:
                module = node.module or ""
            names.add(module)
    return names


@pytest.mark.parametrize("name", CORE)
def test_the_engine_core_imports_no_pydantic_api_or_adapter(name):
    imports = imported_modules(PACKAGE / "engine" / f"{name}.py")
    assert not any(m == "pydantic" or m.startswith("pydantic.") for m in imports), imports
    ours = {m for m in imports if m.startswith("nb_completion.")}
    core = {f"nb_completion.engine.{c}" for c in CORE}
    assert ours <= core | CORE_MAY_IMPORT, ours - core - CORE_MAY_IMPORT


def test_the_registry_does_not_load():
    imports = imported_modules(PACKAGE / "engine" / "registry.py")
    assert "nb_completion.engine.loading" not in imports and "nb_completion.engine.local" not in imports


def test_imported_modules_resolves_relative_imports():
    imports = imported_modules(PACKAGE / "engine" / "local.py")
    assert {"nb_completion.engine.batch_engine", "nb_completion.api.types", "nb_completion.engine.sampling"} <= imports


@pytest.mark.parametrize("frontend", ["notebook/magic.py", "notebook/comparison.py", "widget/_widget.py"])
def test_the_notebook_frontends_drain_through_the_one_runner(frontend):
    """The magic, compare() and the widget share ``runner.py`` (issue 9's "one small runner")."""
    assert "nb_completion.runner" in imported_modules(PACKAGE / frontend)


ENGINE_SETTINGS = {
    "NB_COMPLETION_COMPILE", "NB_COMPLETION_LEAN", "NB_COMPLETION_THREADS", "NB_COMPLETION_CACHE",
    "NB_COMPLETION_BLOCK_OP", "NB_COMPLETION_INT8_OP",
}  # fmt: skip


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_engine_config_reads_engine_settings_from_the_environment():
    """Issue 24: one ``EngineConfig`` built in one place (engine/config.py), passed down."""
    readers = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ENGINE_SETTINGS:
                readers.add(str(path.relative_to(PACKAGE)))
    assert readers == {"engine/config.py"}


def test_no_module_writes_the_environment_but_the_op_builds_path_for_ninja():
    writers = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                    writers.add((str(path.relative_to(PACKAGE)), ast.unparse(target.slice)))
    # torch's extension builder finds ninja on PATH; the pip-installed ninja is put there
    assert writers <= {("engine/cpp_op.py", "'PATH'")}, writers


def test_the_engine_imports_only_the_engine_and_the_contract():
    """Issue 24's layers: no HTTP client, no display, no CLI inside ``engine/``."""
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        ours = {m for m in imported_modules(path) if m.startswith("nb_completion.")}
        outside = {m for m in ours if not m.startswith(("nb_completion.engine", "nb_completion.api"))}
        assert not outside, (path.name, outside)


def test_remote_clients_load_progress_and_cli_flags_live_outside_the_engine():
    names = {p.stem for p in (PACKAGE / "engine").glob("*.py")}
    assert not {n for n in names if n.startswith("remote")} and "load_progress" not in names
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        imports = imported_modules(path)
        assert "argparse" not in imports and "httpx" not in imports, path.name
        flags = [
            node.value
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--")
        ]
        assert not flags, (path.name, flags)


def test_what_a_backend_is_is_asked_one_way():
    """Issue 24: ``is_local(backend)`` (``BackendKind``), not ``getattr``/``hasattr`` probes."""
    probes = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                target = ast.unparse(node.args[0]) if node.args else ""
                if target in ("backend", "self.backend", "prepared.backend", "plan.backend"):
                    probes.append(f"{path.relative_to(PACKAGE)}: {ast.unparse(node)}")
    assert not probes, probes


def test_only_the_service_opens_a_backend():
    """Every frontend, Step included, opens through ``service`` (``open_events`` / ``open_plan``)."""
    openers = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open":
                if ast.unparse(node.func.value).endswith("backend"):
                    openers.add(str(path.relative_to(PACKAGE)))
    assert openers == {"service.py"}, openers
