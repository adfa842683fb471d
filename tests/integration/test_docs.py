"""The documentation against the program: the README's tour works when typed in order,
docs/cli.md lists every environment variable dagd reads and shows the run summary line
as dagd prints it, the run ids in the docs are the ones dagd makes, and the clean-up
commands are scoped to one instance, DAG or run.

The tour runs in a scratch directory holding `build/dagd` and `examples/` (links into
the build and the repository), with the test image in place of the demo image and the
server on a free port (DAGD_LISTEN, DAGD_SERVER): the commands themselves are the
README's, as written.
"""
import os
import re
import signal
import subprocess
import time

from conftest import IMAGE, REPO, TIME_SCALE, free_port, wait_port, wrap
from serve_helpers import Server, clean_env, dag_text, simple_task

README = REPO / "README.md"
CLI_MD = REPO / "docs" / "cli.md"
DOCS = [README] + sorted((REPO / "docs").glob("*.md"))

SUMMARY_RE = (r"run (manual__\S+) success\. State: (\S+)/dagd\.db  Logs: \2/logs/(\S+)/\1/")


def section(text, title):
    """The text of the markdown section `title` (a heading line), up to the next heading
    of the same or a higher level; lines in fenced blocks are not headings."""
    out, level, fenced = None, 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"(#+) (.*)\n?$", line)
        if out is None:
            if m and m.group(2) == title:
                out, level = [], len(m.group(1))
            continue
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    assert out is not None, "no section %r" % title
    return "".join(out)


def code_blocks(text):
    """(language, body) of each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


# --------------------------------------------------------------------------- no engine needed

def variables_dagd_reads():
    names = {"DAGD_CONN_<ID>"}
    config = (REPO / "src" / "config" / "config.c").read_text()
    keys = re.search(r"env_keys\[\] = \{(.*?)\};", config, re.S)
    assert keys, "the list of configuration keys read from the environment moved"
    names |= {"DAGD_" + k.upper() for k in re.findall(r'"(\w+)"', keys.group(1))}
    for src in (REPO / "src").rglob("*.c"):
        names |= set(re.findall(r'getenv\("(\w+)"\)', src.read_text()))
    return names


def test_cli_md_lists_every_environment_variable():
    env = section(CLI_MD.read_text(), "Environment")
    names = variables_dagd_reads()
    assert {"DAGD_SMTP_URL", "DAGD_TOKEN", "DOCKER_HOST"} <= names
    missing = sorted(n for n in names if "`%s`" % n not in env)
    assert not missing, "docs/cli.md, Environment, does not list %s" % missing


def test_cli_md_shows_the_run_summary_line_and_the_dags_table():
    text = CLI_MD.read_text()
    assert re.search("^%s$" % SUMMARY_RE, section(text, "What it shows"), re.M), \
        "docs/cli.md, What it shows, has no run summary line"
    out = section(text, "Output")
    assert re.search(r"^\$ dagd dags\nDAG_ID +PAUSED +SCHEDULE +NEXT_RUN\n", out, re.M), out
    assert re.search(r"^\d+ files? ha(s|ve) errors: dagd import-errors$", out, re.M), out


def test_clean_up_commands_are_scoped():
    """A `docker rm` of dagd's containers names which ones: a label with a value (an
    instance, a DAG or a run), never every container that carries some io.dagd label."""
    seen = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if "docker rm" not in line and "xargs" not in line:
                continue
            for m in re.finditer(r"label=(io\.dagd\.\w+)(=?)", line):
                seen += 1
                assert m.group(2) == "=", "%s: unscoped clean-up: %s" % (doc.name, line.strip())
    assert seen, "no clean-up command found in the docs"


# --------------------------------------------------------------------------- against dagd

def test_run_ids_in_the_docs_are_the_ones_dagd_makes(dg):
    """Every manual run id the docs show is what dagd names a run of that logical date."""
    ids = set()
    for doc in DOCS:
        ids |= set(re.findall(r"manual__[0-9][0-9T:.+Z-]*[0-9Z]", doc.read_text()))
    assert ids, "no run id in the docs"
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", simple_task("a", "true")), name="dags/ids.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    made = {}
    for rid in sorted(ids):
        run = srv.trigger(dg.dag_id, logical_date=rid[len("manual__"):])
        made[rid] = run["dag_run_id"]
    for run_id in made.values():
        srv.wait_run(dg.dag_id, run_id)
    wrong = {k: v for k, v in made.items() if k != v}
    assert not wrong, "the docs show run ids dagd does not make (shown: made): %r" % wrong


def tour_steps():
    """The README tour as (kind, text, expected output) in order: files to save, commands
    to run (a console block also gives the output to expect)."""
    steps = []
    tour = section(README.read_text(), "A five-minute tour")
    assert re.search(r"[Ss]ave (this|it) as `hello\.yml`", tour), "the tour does not say to save hello.yml"
    for lang, body in code_blocks(tour):
        if lang == "yaml":
            first = body.splitlines()[0]
            m = re.fullmatch(r"# (\S+\.ya?ml)", first)
            assert m, "a YAML block of the tour does not say its file name: %r" % first
            steps.append(("save", m.group(1), body))
        elif lang == "console":
            for cmd in re.split(r"^\$ ", body, flags=re.M)[1:]:
                line, _, out = cmd.partition("\n")
                steps.append(("run", line, out))
        elif lang == "sh":
            for line in body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    steps.append(("run", line, None))
    return steps


def test_readme_tour_works_when_typed_in_order(dg):
    dg.dag_ids.append("hello")
    here = dg.tmp / "tour"
    (here / "build").mkdir(parents=True)
    (here / "build" / "dagd").symlink_to(dg.bin)
    (here / "examples").symlink_to(REPO / "examples")
    port = free_port()
    env = clean_env(DAGD_LISTEN="127.0.0.1:%d" % port, DAGD_SERVER="http://127.0.0.1:%d" % port)
    steps = tour_steps()
    assert [s[1] for s in steps if s[0] == "save"] == ["hello.yml"], steps
    ran = []
    server = None
    try:
        for kind, text, expected in steps:
            if kind == "save":
                body = re.sub(r"dagd-demo/busybox:1", IMAGE, expected)
                (here / text).write_text(body)
                continue
            cmd = re.sub(r"#.*$", "", text).strip()
            if cmd.endswith("&"):
                assert server is None, "a second daemon in the tour: %s" % cmd
                server = subprocess.Popen(wrap(["bash", "-c", "exec " + cmd[:-1]]), cwd=here, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                dg.procs.append(server)
                assert wait_port(port, timeout=20 * TIME_SCALE), "the tour's `%s` did not start listening" % cmd
                ran.append(cmd)
                continue
            p = subprocess.run(["bash", "-c", cmd], cwd=here, env=env, capture_output=True, text=True,
                               timeout=120 * TIME_SCALE)
            ran.append(cmd)
            assert p.returncode == 0, "tour step %r exited %d (after %r)\n--- stdout\n%s\n--- stderr\n%s" % (
                cmd, p.returncode, ran[:-1], p.stdout, p.stderr)
            if expected is not None:
                assert p.stdout == expected, "tour step %r printed\n%s\ninstead of\n%s" % (cmd, p.stdout, expected)
            if " run hello.yml" in cmd:
                assert re.search("^%s$" % SUMMARY_RE, p.stderr, re.M), p.stderr
        assert server is not None, "the tour never starts the daemon"
        assert any(" trigger hello" in c for c in ran) and any(" next " in c for c in ran), ran
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30 * TIME_SCALE)
