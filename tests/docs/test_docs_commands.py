"""Every shell command in the docs is run here, or checked, or allow-listed with the reason it cannot run.

The commands are read from the ```sh / ```bash / ```console blocks of ``README.md``, ``docs/*.md`` and
``notebooks/README.md``. They are handled as follows:

* ``make demo`` / ``make test`` / ``make lint``: the target must exist (``make -n``); ``.ci/run`` runs them.
  ``make install`` is checked to be up to date (the venv this test runs in is what it makes); ``make serve``
  runs its recipe on a free port.
* ``.venv/bin/python -m pytest ...``: the paths and markers must exist (the suite itself runs in CI).
* ``.venv/bin/python benchmarks/X.py --flag``: the script must exist and declare every flag (measured runs
  take minutes; their figures are in docs/benchmarks.md).
* everything else runs for real, in order, in one bash session per installation: a temporary working
  directory (so ``.pps/`` is a fresh SQLite database and key directory), ``PATH`` starting with the venv.
  The README's "First steps by hand" block runs first and sets the installation up; the other blocks run
  after it in the same session, except a block that configures its own database (``export PPS_...``), which
  gets a fresh session. ``pps serve`` / ``make serve`` start in the background on a free port of 127.0.0.1
  (``--host 0.0.0.0`` becomes 127.0.0.1) and the session's ``http://127.0.0.1:8000`` points there; the
  ``pps_...`` token placeholder becomes a real token of the role the command needs; ``curl`` gets
  ``-sS --fail-with-body`` so that an HTTP error fails the command.
* commands that cannot run on a test machine are in :data:`NOT_RUN_HERE`, each with its reason.

A command that is none of these fails the test, so the docs cannot gain a command nobody runs.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "notebooks" / "README.md"]
SHELL_LANGS = {"sh", "bash", "console", "shell"}
DOC_URL = "http://127.0.0.1:8000"
DOC_DATABASE_URL = "postgresql+psycopg://pps@db.internal:5432/pps"
"""The production database of docs/operations.md; its block runs against a fresh test database instead."""

NOT_RUN_HERE: dict[str, str] = {
    # command (without its trailing comment) -> why it is not run by this test
    "make bench": "about 10 minutes; the scripts it runs are checked one by one below (docs/benchmarks.md commands)",
    ".venv/bin/pip install jupyterlab": "installs a package from the network into the shared venv; not a "
    "dependency of PPS",
    ".venv/bin/jupyter lab notebooks/": "starts an interactive server; the notebooks themselves are executed "
    "by tests/notebooks",
    'pg_dump --format=custom --file=backup/pps.dump "$PG_URL"': "needs the production PostgreSQL host; "
    "the SQLite backup and restore next to it runs here, and `pps audit verify` checks either",
    'pg_restore --dbname="$PG_URL_NEW" --no-owner backup/pps.dump': "needs the production PostgreSQL host "
    "(an empty database to restore into)",
}
"""Commands that cannot run on a test machine, with the reason. Each must still appear in the docs."""

CI_TARGETS = {
    "test": ".ci/run step 1 (`make test`)",
    "demo": ".ci/run step 3 (`make demo`)",
    "lint": ".ci/run step 4 (`make lint`)",
}
"""Make targets that CI runs itself; here only their existence is checked."""

TOKEN_FOR: list[tuple[str, str]] = [
    # a command holding the pps_... placeholder -> the role whose token it needs (first match wins)
    ("pps-client data upload", "data_provider"),
    ("/v1/catalog", "bank"),
    ("/v1/sealed/rotate", "platform_admin"),
    ("/v1/audit/", "auditor"),
]

ENROL_FOR: list[tuple[str, str]] = [
    # a command holding the enr_... placeholder (an enrolment code) -> whose code, by role (first match wins)
    ("pps-client enrol", "bank"),
]

EXPECTED_FAILURE: list[tuple[str, str]] = [
    # a command the docs show failing with a given exit code (`cmd || test $? -eq N`) -> its stderr
    ("pps audit verify || test $? -eq 4", "unknown signing key"),
]

EXPECTED_OUTPUT: list[tuple[str, str]] = [
    # a command (substring) -> what its output must contain
    ("pps admin bootstrap", "API token (shown once"),
    ("--token", "API token (shown once"),
    ("pps audit verify", "audit ledger verified"),
    ("pps audit export", "exported"),
    ("pps-client data upload", "uploaded"),
    ("pps keys rotate", "is current; re-wrapped"),
    ("pps keys retire", "are retired"),
    ("pps db upgrade", "→"),
    ("pps db current", "current:"),
    ("/v1/catalog", '"name":"tax"'),
    ("/readyz", '"status":"ready"'),
    ("/healthz", '"status":"ok"'),
    ("X-Forwarded-Proto: https", "Secure"),
    ('echo "$R3"', "r67C+nm20k1JP1Lw3JT5JbxgZ+HMD6yIQmf1v/9Qdqo="),
    ("xxd -p -l 4 sigline.bin", "d7762362"),
    ("openssl pkeyutl -verify", "Signature Verified Successfully"),
]

SYNOPSIS_PLACEHOLDERS = ("<USCC>", "<org id>", "<key>")
"""Placeholders of the usage lines of docs/audit.md (``pps audit export ... [--subject <USCC>]``)."""


# --- reading the docs ----------------------------------------------------------------------------------


@dataclass
class Block:
    doc: Path
    line: int
    heading: str
    commands: list[str]

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line} ({self.heading})"


def read_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lang: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                lang, body, start = line[3:].strip().lower() or "-", [], number
            continue
        if line.startswith("```"):
            if lang in SHELL_LANGS:
                blocks.append(Block(path, start, heading, join_commands(body, console=lang == "console")))
            lang = None
            continue
        body.append(line)
    return blocks


def join_commands(lines: list[str], *, console: bool = False) -> list[str]:
    """Joins backslash continuations; drops blank and comment-only lines. In a console block only the lines
    after a ``$ `` prompt are commands (the others are their output)."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        line = raw
        if console and not pending:
            if not raw.startswith("$ "):
                continue
            line = raw[2:]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def without_comment(command: str) -> str:
    """The command without a trailing ``# comment`` (a # inside quotes or a word stays)."""
    quote: str | None = None
    for i, ch in enumerate(command):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1] in " \t"):
            return command[:i].rstrip()
    return command.rstrip()


def all_blocks() -> list[Block]:
    return [b for doc in DOC_FILES if doc.exists() for b in read_blocks(doc)]


def is_walkthrough(block: Block) -> bool:
    return (
        block.doc.name == "README.md" and block.doc.parent == REPO and block.heading == "First steps by hand"
    )


# --- one bash session ----------------------------------------------------------------------------------


@dataclass
class Result:
    command: str
    rc: int
    out: str
    err: str


@dataclass
class Session:
    """A bash process fed one command at a time: variables, functions and the directory carry over."""

    cwd: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    """one-time enrolment codes printed by ``pps admin org create``, by role (issue 24)"""
    org_ids: dict[str, str] = field(default_factory=dict)
    subject_uscc: str | None = None
    url: str | None = None
    database_url: str | None = None
    servers: list[int] = field(default_factory=list)
    transcript: list[Result] = field(default_factory=list)

    SENTINEL = "__pps_docs_rc__"

    def __post_init__(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._err = self.cwd.parent / f"{self.cwd.name}.stderr"
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def run(self, command: str, timeout: float = 120) -> Result:
        assert self.proc.stdin is not None
        script = (
            f"{{\n{command}\n}} </dev/null 2>{shlex.quote(str(self._err))}\n"
            f"__rc=$?\nprintf '\\n{self.SENTINEL}:%d\\n' \"$__rc\"\n"
        )
        self.proc.stdin.write(script)
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"`{command}` did not finish in {timeout:.0f} s; output so far:\n{''.join(out)}")
            if line == "":
                pytest.fail(f"the shell ended during `{command}`:\n{''.join(out)}")
            if line.startswith(self.SENTINEL + ":"):
                rc = int(line.split(":", 1)[1])
                break
            out.append(line)
        text = "".join(out)
        text = text[:-1] if text.endswith("\n") else text
        result = Result(command, rc, text, self._err.read_text(encoding="utf-8", errors="replace"))
        self.transcript.append(result)
        return result

    def close(self) -> None:
        for pid in self.servers:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in self.servers:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPS_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"  # rich tables stay on one line per row
    env.pop("FORWARDED_ALLOW_IPS", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the handlers --------------------------------------------------------------------------------------


def check_make(command: str) -> str:
    """``make TARGET``: the target exists; CI's targets are left to CI."""
    words = shlex.split(command)
    assert words[0] == "make" and len(words) == 2, f"unexpected make line: {command!r}"
    target = words[1]
    dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=False)
    assert dry.returncode == 0, f"`make {target}` has no target in the Makefile: {dry.stderr}"
    if target in CI_TARGETS:
        return f"target exists; run by {CI_TARGETS[target]}"
    if target == "install":
        assert (VENV_BIN / "pps").exists(), "no .venv/bin/pps: `make install` did not make it"
        return "target exists; the venv this test runs in is what it makes (`make test` ran it in CI)"
    if command in NOT_RUN_HERE:
        return f"target exists; not run: {NOT_RUN_HERE[command]}"
    pytest.fail(f"`{command}`: a make target this test does not know how to run; add it here")


def declared_flags(script: Path) -> set[str]:
    flags: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return flags


def check_python_script(command: str) -> str:
    words = shlex.split(command)
    script = REPO / words[1]
    assert script.is_file(), f"`{command}`: {words[1]} does not exist"
    flags = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
    missing = flags - declared_flags(script)
    assert not missing, f"`{command}`: {words[1]} declares no {sorted(missing)}"
    return "script and flags exist (measured runs: docs/benchmarks.md)"


def check_pytest(command: str) -> str:
    words = shlex.split(command)[3:]  # after .venv/bin/python -m pytest
    markers = {
        m.split(":")[0].strip()
        for m in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
            "markers"
        ]
    }
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-m":
            expr = words[i + 1]
            unknown = {t for t in re.findall(r"[A-Za-z_]+", expr) if t not in {"and", "or", "not"}} - markers
            assert not unknown, f"`{command}`: unknown markers {sorted(unknown)}"
            i += 2
            continue
        if not w.startswith("-"):
            assert (REPO / w.split("::")[0]).exists(), f"`{command}`: {w} does not exist"
        i += 1
    return "paths and markers exist (the suite runs in CI)"


def substitute(command: str, s: Session) -> str:
    """Placeholders of the docs -> what this installation has."""
    cmd = command.replace(".venv/bin/", f"{VENV_BIN}/")
    if "pps_..." in cmd:
        role = next((r for key, r in TOKEN_FOR if key in cmd), None)
        assert role, f"`{command}` holds a token placeholder but TOKEN_FOR does not say whose token it needs"
        assert role in s.tokens, f"`{command}` needs a {role} token; none was created before it"
        cmd = cmd.replace("pps_...", s.tokens[role])
    if "enr_..." in cmd:  # an organisation redeems the enrolment code the operator delivered out of band
        role = next((r for key, r in ENROL_FOR if key in cmd), None)
        assert role and role in s.codes, f"`{command}` needs an enrolment code; none was printed for {role}"
        cmd = cmd.replace("enr_...", s.codes[role])
    if DOC_URL in cmd:
        assert s.url, f"`{command}` talks to the API, but no server was started before it in its block"
        cmd = cmd.replace(DOC_URL, s.url)
    if re.match(r"pps \w", cmd):  # a usage line of docs/audit.md: options in [...], placeholders in <...>
        cmd = re.sub(r"\[([^\]]*)\](\.\.\.)?", r"\1", cmd)
        for placeholder in SYNOPSIS_PLACEHOLDERS:
            if placeholder in cmd:
                cmd = cmd.replace(placeholder, shlex.quote(placeholder_value(placeholder, s)))
        assert not re.search(r"<[a-z][a-z ]*>", cmd, re.I), f"`{command}`: an unknown placeholder"
    if cmd.startswith("curl "):
        assert shutil.which("curl"), "curl is not installed: apt-get install -y curl"
        cmd = "curl -sS --fail-with-body " + cmd[len("curl ") :]
    return cmd


def placeholder_value(placeholder: str, s: Session) -> str:
    if placeholder == "<USCC>":
        assert s.subject_uscc, f"{placeholder}: no enterprise was created before"
        return s.subject_uscc
    if placeholder == "<org id>":
        assert "bank" in s.org_ids, f"{placeholder}: no bank was created before"
        return s.org_ids["bank"]
    assert s.url, f"{placeholder}: the verifier key is read from the running server"
    return str(httpx.get(f"{s.url}/v1/audit/public-key", timeout=10).json()["verifier_key"])


def start_server(command: str, s: Session) -> Result:
    """``pps serve`` / ``make serve`` in the background on a free port of 127.0.0.1; waits until ready."""
    if command.startswith("make "):
        recipe = subprocess.run(
            ["make", "--no-print-directory", "-n", "serve"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )  # (inside `make test`, make would otherwise print its directory changes)
        lines = [line for line in recipe.stdout.splitlines() if line.strip() and not line.startswith("make")]
        command = lines[-1]
        assert re.search(r"\bpps serve\b", command), f"`make serve` runs {command!r}, not `pps serve`"
    command = command.rstrip("& ").replace("--host 0.0.0.0", "--host 127.0.0.1")
    port = free_port()
    cmd = substitute(command, s) + f" --port {port}"
    log = s.cwd.parent / f"serve-{port}.log"
    result = s.run(f"setsid {cmd} >{shlex.quote(str(log))} 2>&1 & echo $!")
    assert result.rc == 0, result.err
    s.servers.append(int(result.out.strip().splitlines()[-1]))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"`{command}` did not become ready:\n{log.read_text(errors='replace')}")
        time.sleep(0.3)
    s.url = url
    s.env["PPS_URL"] = url
    s.run(f"export PPS_URL={url}")
    return Result(command, 0, f"serving at {url}", "")


def remember(result: Result, s: Session) -> None:
    """Keeps the organisations and tokens a command printed, for the placeholders of later commands."""
    created = re.search(r"created (.+?) organisation (org_\w+) \((.*)\)", result.out)
    token = re.search(r"^(pps_\S+)$", result.out, re.M)
    code = re.search(r"^(enr_\S+)$", result.out, re.M)
    if created:
        role = created.group(1).replace(" ", "_")
        s.org_ids.setdefault(role, created.group(2))
        if token:
            s.tokens.setdefault(role, token.group(1))
        if code:
            s.codes.setdefault(role, code.group(1))
    if re.search(r"pps-client enrol\b", result.command) and token:
        role = next((r for key, r in ENROL_FOR if key in result.command), None)
        if role:
            s.tokens.setdefault(role, token.group(1))
    uscc = re.search(r"--uscc (\w{18})", result.command)
    if uscc:
        s.subject_uscc = uscc.group(1)


def run_command(command: str, s: Session) -> str:
    bare = without_comment(command)
    if re.match(r"(make serve|(\S*/)?pps serve)\b", bare):
        start_server(bare, s)
        return "started in the background and ready"
    result = s.run(substitute(bare, s))
    assert result.rc == 0, f"`{command}` exited {result.rc}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    failing = next(((k, e) for k, e in EXPECTED_FAILURE if k in bare), None)
    if failing is not None:  # a command the docs show failing on purpose: its own exit code and message
        assert failing[1] in " ".join(result.err.split()), (
            f"`{command}`: expected {failing[1]!r} in:\n{result.err}"
        )
    for key, expected in EXPECTED_OUTPUT if failing is None else []:
        if key in bare:
            assert expected in result.out, f"`{command}`: expected {expected!r} in:\n{result.out}"
    remember(result, s)
    return "ran"


def handle(command: str, s: Session | None) -> str:
    bare = without_comment(command)
    if bare in NOT_RUN_HERE and not bare.startswith("make "):
        return f"not run: {NOT_RUN_HERE[bare]}"
    if re.match(r"make \S+ *&?$", bare) and not bare.startswith("make serve"):
        return check_make(bare)
    if re.match(r"\.venv/bin/python -m pytest\b", bare):
        return check_pytest(bare)
    if re.match(r"\.venv/bin/python benchmarks/\S+\.py\b", bare):
        return check_python_script(bare)
    assert s is not None, f"`{command}` has to run, but its block has no session"
    return run_command(command, s)


# --- files the worked examples of docs/audit.md read ----------------------------------------------------


def fenced_after(text: str, marker: str) -> str:
    """The body of the first fenced block after ``marker``."""
    at = text.index(marker)
    start = text.index("```", at)
    start = text.index("\n", start) + 1
    return text[start : text.index("```", start)]


def prepare_audit_files(cwd: Path) -> None:
    audit = (REPO / "docs" / "audit.md").read_text(encoding="utf-8")
    (cwd / "entry9.json").write_bytes(fenced_after(audit, "Its canonical bytes are").rstrip("\n").encode())
    key = json.loads(fenced_after(audit, "### 7.2 `GET /v1/audit/public-key`"))
    (cwd / "ledger-key.pem").write_text(key["public_key_pem"], encoding="utf-8")


def prepare_saved_note(s: Session) -> None:
    """``saved.note`` of the audit.md usage lines: a checkpoint an auditor kept."""
    if s.url and s.tokens and not (s.cwd / "saved.note").exists():
        r = httpx.get(
            f"{s.url}/v1/audit/checkpoint",
            params={"format": "note"},
            headers={"Authorization": f"Bearer {next(iter(s.tokens.values()))}"},
            timeout=10,
        )
        r.raise_for_status()
        (s.cwd / "saved.note").write_text(r.text, encoding="utf-8")


# --- the test ----------------------------------------------------------------------------------------


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    made: list[Session] = []
    yield made
    for s in made:
        s.close()


def test_the_allow_list_names_only_commands_the_docs_still_have() -> None:
    blocks = all_blocks()
    assert any(is_walkthrough(b) for b in blocks), "README.md lost its 'First steps by hand' block"
    texts = {without_comment(c) for b in blocks for c in b.commands}
    stale = sorted(set(NOT_RUN_HERE) - texts)
    assert not stale, f"NOT_RUN_HERE lists commands no doc has any more: {stale}"


def test_a_wrong_flag_a_moved_path_an_unknown_marker_or_target_is_caught() -> None:
    """The checks that do not run a command still refuse what would not work."""
    with pytest.raises(AssertionError, match="declares no"):
        check_python_script(".venv/bin/python benchmarks/bench_ledger.py --quik")
    with pytest.raises(AssertionError, match="does not exist"):
        check_pytest(".venv/bin/python -m pytest tests/no_such_suite")
    with pytest.raises(AssertionError, match="unknown markers"):
        check_pytest(".venv/bin/python -m pytest -m 'db and gpu'")
    with pytest.raises(AssertionError, match="no target"):
        check_make("make deploy")
    with pytest.raises(AssertionError, match="no session"):
        handle("frobnicate --now", None)
    assert join_commands(["$ pps keys status", "KEK version 1", "$ echo a \\", "  b"], console=True) == [
        "pps keys status",
        "echo a    b",
    ]


def run_blocks(blocks: list[Block], s: Session, report: list[str]) -> None:
    for block in blocks:
        prepare_saved_note(s)
        for command in block.commands:
            cmd = command
            if DOC_DATABASE_URL in cmd:
                assert s.database_url, f"`{command}` names a database, but its block runs in the main session"
                cmd = cmd.replace(DOC_DATABASE_URL, shlex.quote(s.database_url))
            t0 = time.monotonic()
            how = handle(cmd, s)
            report.append(
                f"{block.where}: {without_comment(command)}  ->  {how} ({time.monotonic() - t0:.1f} s)"
            )


@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_every_command_in_the_docs_runs(tmp_path: Path, sessions: list[Session], database_url: str) -> None:
    """The README walk-through first, then every other block in the same installation; a block that sets up
    its own (``export PPS_...``) runs in a fresh session, in a thread beside the main one (two cores)."""
    blocks = all_blocks()
    ordered = [b for b in blocks if is_walkthrough(b)] + [b for b in blocks if not is_walkthrough(b)]
    main = Session(tmp_path / "installation", shell_env())
    sessions.append(main)
    prepare_audit_files(main.cwd)
    groups: list[tuple[Session, list[Block]]] = [(main, [])]
    for block in ordered:
        if any(re.match(r"export PPS_", c) for c in block.commands):  # configures its own installation
            fresh = Session(
                tmp_path / f"installation-{len(sessions)}", shell_env(), database_url=database_url
            )
            sessions.append(fresh)
            groups.append((fresh, [block]))
        else:
            groups[0][1].append(block)
    reports: list[list[str]] = [[] for _ in groups]
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [pool.submit(run_blocks, bs, s, r) for (s, bs), r in zip(groups, reports, strict=True)]
        for future in futures:
            future.result()  # re-raises a failed command's assertion
    print("\n".join(line for r in reports for line in r))
