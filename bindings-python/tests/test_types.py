"""The fixed sets of strings are `Literal` types that match the core, a type checker refuses a
typo in one, and every stub has a docstring for editors to show."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import typing

import remote_access as ra

CORE = pathlib.Path(__file__).resolve().parents[2] / "remote-access-core" / "src"


def core_names(file: str, impl: str, function: str) -> set[str]:
    """The strings that `impl <impl> { fn <function> ... }` in the core's `file` maps its
    variants to (`Self::Manual => "manual"`)."""
    source = (CORE / file).read_text()
    block = re.search(rf"impl {impl} \{{.*?fn {function}\b.*?\{{(.*?)\n    \}}", source, re.S)
    assert block, f"no fn {function} in impl {impl} in {file}"
    names = set(re.findall(r'=> "([a-z_]+)"', block.group(1)))
    assert names, f"fn {function} in impl {impl} maps nothing"
    return names


def literal(alias: object) -> set[str]:
    return set(typing.get_args(alias))


def test_each_literal_is_the_cores_set() -> None:
    assert literal(ra.Trigger) == core_names("build.rs", "Trigger", "as_str")
    assert literal(ra.EventKind) == core_names("session/event.rs", "EventKind", "as_str")
    assert literal(ra.Phase) == core_names("session/machine.rs", "Phase", "as_str")
    assert literal(ra.ConnectionProtocol) == core_names("session/machine.rs", "Protocol", "as_str")
    assert literal(ra.EndReasonCode) == core_names("error.rs", "EndReason", "code")
    assert literal(ra.DenialReason) == core_names("error.rs", "DenialReason", "as_str")
    # The Python package adds two codes of its own.
    assert literal(ra.ErrorCode) == core_names("error.rs", "Error", "code") | {"forked", "shut_down"}
    agent = (pathlib.Path(__file__).resolve().parents[1] / "src" / "agent.rs").read_text()
    assert literal(ra.AgentExit) == set(re.findall(r'=> "([a-z_]+)"', agent))


CORRECT = """
import remote_access as ra


async def main(authority: ra.Authority) -> None:
    await authority.issue("b-1", trigger="manual", remote_access_enabled=True)
    session = await authority.session("b-1")
    print(session.phase == "steps_running")
    print(session.end_reason_code == "logged_out")
    connection = await authority.connected("b-1", "ssh")
    print(connection.protocol == "ssh")
    async for event in authority.subscribe():
        print(event.kind == "finish_build", event.to_dict()["kind"] == "lagged")
        print(event.kind == "deadline_changed" and event.deadline, event.kind == "dropped")
        print(event.to_dict()["deadline"], event.kind == "connection_lost")
    print(session.end_reason_code == "connection_lost", session.reconnect_by, session.access_rule)
    await connection.lost()
    info = await authority.connection_info("b-1", ra.HostKey.generate(), ra.ScriptOptions("gw"))
    info.refresh(session)
    try:
        await authority.verify_vnc("b-1", "password")
    except ra.AccessDeniedError as err:
        print(err.code == "access_denied")
        print(err.reason == "wrong_password")
    trigger: ra.Trigger = "webhook"
    await authority.issue("b-2", trigger=trigger, remote_access_enabled=True)
    print(ra.Gateway(authority).stats()["ssh_connections"])
"""

# Each line marked `# error` holds a typo that `mypy --strict` must refuse. No line narrows a
# type (an `assert` would make mypy skip what follows as unreachable).
TYPOS = """
import remote_access as ra


async def main(authority: ra.Authority) -> None:
    await authority.issue("b-1", trigger="manul", remote_access_enabled=True)  # error
    session = await authority.session("b-1")
    print(session.phase == "running")  # error
    print(session.end_reason_code == "logout")  # error
    connection = await authority.connected("b-1", "rdp")  # error
    print(connection.protocol == "SSH")  # error
    async for event in authority.subscribe():
        print(event.kind == "finishbuild")  # error
        print(event.to_dict()["kind"] == "laged")  # error
        print(event.kind == "deadline_change")  # error
    try:
        await authority.verify_vnc("b-1", "password")
    except ra.AccessDeniedError as err:
        print(err.code == "acces_denied")  # error
        print(err.reason == "bad_password")  # error
    trigger: ra.Trigger = "Manual"  # error
    print(ra.Gateway(authority).stats()["ssh_conections"])  # error
"""


def test_mypy_refuses_a_typo_in_a_fixed_set_and_accepts_the_right_spelling(tmp_path: pathlib.Path) -> None:
    (tmp_path / "correct.py").write_text(CORRECT)
    (tmp_path / "typos.py").write_text(TYPOS)
    # The README's quickstart (the package's page on PyPI) is checked in the same run.
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    (tmp_path / "readme.py").write_text(re.findall(r"```python\n(.*?)```", readme, re.S)[0])
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "correct.py", "readme.py", "typos.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = checked.stdout + checked.stderr
    assert checked.returncode == 1, out
    assert "correct.py" not in out and "readme.py" not in out, out
    reported = {int(line.split(":")[1]) for line in checked.stdout.splitlines() if line.startswith("typos.py:")}
    marked = {number for number, line in enumerate(TYPOS.splitlines(), 1) if line.endswith("# error")}
    assert reported == marked, out


def test_every_stub_has_a_docstring() -> None:
    stub = pathlib.Path(ra._native.__file__).with_name("_native.pyi")
    missing = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if ast.get_docstring(child) is None:
                    missing.append(prefix + child.name)
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(stub.read_text()), "")
    assert missing == [], missing
