"""The house's borders (../shared/DESIGN.md), read from the code itself.

Each test reads every module's AST: imports, the calls that start programs and the
SQL text, so a move that breaks a border fails here, not in review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "isense_slurm"

SLURM_COMMANDS = {
    "sbatch",
    "scancel",
    "squeue",
    "sinfo",
    "scontrol",
    "sacct",
    "srun",
    "salloc",
    "sprio",
    "sreport",
    "sacctmgr",
    "sstat",
    "strigger",
}
PROGRAM_STARTERS = {
    "run",
    "Popen",
    "check_output",
    "check_call",
    "call",
    "create_subprocess_exec",
    "create_subprocess_shell",
    "execv",
    "execvp",
    "execvpe",
    "execve",
    "spawnv",
    "system",
}
SQL_WRITE = re.compile(
    r"(?is)^\s*(insert\s+(or\s+\w+\s+)?into|update\s+\w+\s+set|delete\s+from|replace\s+into|"
    r"create\s+(unique\s+)?(table|index|view|trigger)|drop\s+(table|index|view|trigger)|alter\s+table)\b"
)
# What the planner may import: pure values and rules, nothing that reaches a process,
# a file, a socket or a clock.
PLANNER_MAY_IMPORT = {"isense_slurm.planner", "isense_slurm.contracts", "isense_slurm.availability"}
PLANNER_STDLIB = {
    "__future__",
    "dataclasses",
    "datetime",
    "enum",
    "typing",
    "collections",
    "collections.abc",
    "math",
    "itertools",
    "functools",
    "bisect",
    "heapq",
    "re",
    "operator",
}
# What reports may read the ledger through: the read-only queries and row types.
REPORT_MAY_USE_FROM_METER = {
    "earnings",
    "status_queries",
    "start_queries",
    "metrics_queries",
    "money",
    "rows",
    "job_usage",
}


def modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found.append((name, path, ast.parse(path.read_text(), filename=str(path))))
    return found


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported(tree: ast.Module, name: str) -> set[str]:
    """Every module `name` imports, anywhere in it (the house writes absolute imports)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")  # relative: kept as written (see below)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def top_level_imports(tree: ast.Module) -> set[str]:
    """Imports run when the module loads (what can make a cycle)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_the_planner_imports_no_io():
    bad = []
    for name, _, tree in modules():
        if room(name) != "planner":
            continue
        for target in imported(tree, name):
            ours = target.startswith("isense_slurm")
            if ours and not any(target == ok or target.startswith(ok + ".") for ok in PLANNER_MAY_IMPORT):
                bad.append(f"{name} imports {target}")
            if not ours and target.split(".")[0] not in {m.split(".")[0] for m in PLANNER_STDLIB}:
                bad.append(f"{name} imports {target}")
    assert bad == []


def test_imports_are_absolute():
    bad = [f"{name} imports {t}" for name, _, tree in modules() for t in imported(tree, name) if t.startswith(".")]
    assert bad == []


def test_contracts_import_nothing_of_ours():
    bad = [
        f"{name} imports {t}"
        for name, _, tree in modules()
        if room(name) == "contracts"
        for t in imported(tree, name)
        if t.startswith("isense_slurm") and not t.startswith("isense_slurm.contracts")
    ]
    assert bad == []


def test_only_slurm_runs_slurm_commands():
    bad = []
    for name, path, tree in modules():
        if room(name) == "slurm":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in PROGRAM_STARTERS:
                continue
            for text in (s for arg in node.args for s in strings(arg)):
                words = text.split()
                if words and Path(words[0]).name in SLURM_COMMANDS:
                    bad.append(f"{path.name}:{node.lineno} runs {words[0]}")
    assert bad == []


def test_only_meter_writes_sql():
    bad = []
    for name, path, tree in modules():
        if room(name) == "meter":
            continue
        bad += [f"{name} imports {t}" for t in imported(tree, name) if t.split(".")[0] == "sqlite_utils"]
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WRITE.match(node.value):
                bad.append(f"{path.name}:{node.lineno} holds SQL that writes: {node.value.split()[0]}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "connect"
                and getattr(node.value, "id", "") == "sqlite3"
            ):
                bad.append(f"{path.name}:{node.lineno} opens SQLite itself")
    assert bad == []


def test_reports_do_not_write():
    bad = []
    for name, _, tree in modules():
        if room(name) != "report":
            continue
        for target in imported(tree, name):
            parts = target.split(".")
            if parts[:2] == ["isense_slurm", "meter"] and len(parts) > 2 and parts[2] not in REPORT_MAY_USE_FROM_METER:
                bad.append(f"{name} imports {target}")
    assert bad == []


def test_no_import_cycle_between_modules():
    graph = {}
    names = {name for name, _, _ in modules()}
    for name, _, tree in modules():
        graph[name] = {t for t in top_level_imports(tree) if t in names and t != name}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_border_checks_can_fail():
    """Each check sees what it looks for (a check that cannot fail is no check)."""
    sample = ast.parse('import subprocess\nsubprocess.run(["scancel", "1"])\nQ = "INSERT INTO requests VALUES (1)"\n')
    calls = [n for n in ast.walk(sample) if isinstance(n, ast.Call)]
    assert calls and Path(strings(calls[0].args[0])[0]).name in SLURM_COMMANDS
    assert SQL_WRITE.match("INSERT INTO requests VALUES (1)") and SQL_WRITE.match("  update workers set x=1")
    assert not SQL_WRITE.match("update the ledger when the worker ends")
    assert imported(ast.parse("from .inputs import X"), "isense_slurm.planner.plan") == {".inputs", ".inputs.X"}
    assert room("isense_slurm.planner.plan") == "planner" and room("isense_slurm.gpu") == "gpu"


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SIZED = ("isense_slurm", "bench", "dev")  # everything outside tests


def oversized(root: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES under `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_modules_and_functions_stay_small():
    assert [line for folder in SIZED for line in oversized(PACKAGE.parent / folder)] == []


def test_the_size_check_can_fail(tmp_path):
    (tmp_path / "pkg").mkdir()
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg" / "big.py").write_text(f"def f():\n{long_body}\n" + "\n" * MAX_MODULE_LINES)
    assert oversized(tmp_path / "pkg") == ["pkg/big.py: 461 lines", "pkg/big.py:1 f: 61 lines"]
