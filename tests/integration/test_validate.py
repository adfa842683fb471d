"""`dagd validate PATH...`: ok lines on stdout, `file:line:col: error: msg` on stderr,
exit 0 all valid / 1 any invalid / 2 usage.

Readings of the contract taken here:
- For a directory, only *.yml / *.yaml directly inside it are checked; other files are
  ignored. The file named in ok/error lines is the path as found (directory + name).
- `ok <file> (<dag_id>, <n> tasks)`: the tests use 2-task DAGs so the plural is certain.
- Line and column are 1-based; where a problem could be reported at the key or at its
  value, every case below keeps both on one line, and only the line is checked.
- Every problem in a file is reported (not only the first).
- A path that does not exist is an invalid input: exit 1 or 2, with its name on stderr.
"""
import os
import re
import shutil
import signal

import pytest

from conftest import REPO, Harness, _stop, free_port
from serve_helpers import Server, clean_env, wait_for

GOOD = """\
dag: {dag}
tasks:
  a:
    image: busybox:1
    command: [echo, "{{{{ ds }}}}"]
  b:
    image: busybox:1
    depends_on: [a]
"""


def ok_re(path, dag, n):
    return re.compile(r"^ok %s \(%s, %d tasks?\)$" % (re.escape(str(path)), re.escape(dag), n), re.M)


def err_re(path, line, col=None):
    return re.compile(r"^%s:%d:%s: error: \S" % (re.escape(str(path)), line,
                                                 r"\d+" if col is None else str(col)), re.M)


@pytest.fixture
def v(dagd_bin, tmp_path):
    """A Harness without the Docker engine (nothing here runs a container); the dagd
    processes it starts are stopped after the test."""
    h = Harness(dagd_bin, tmp_path, "validate")
    yield h
    for proc in h.procs:
        _stop(proc)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_valid_files(v, tmp_path):
    a = write(tmp_path, "one.yml", GOOD.format(dag="first_dag"))
    b = write(tmp_path, "two.yaml", GOOD.format(dag="second.dag-2"))
    res = v.exec("validate", a, b)
    assert res.rc == 0, res
    assert ok_re(a, "first_dag", 2).search(res.out), res
    assert ok_re(b, "second.dag-2", 2).search(res.out), res
    assert res.err.strip() == "", res


def test_syntax_error(v, tmp_path):
    p = write(tmp_path, "broken.yml", "dag: x\ntasks:\n  a: {image: busybox:1\n  b: [\n")
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert re.search(r"^%s:\d+:\d+: error: \S" % re.escape(str(p)), res.err, re.M), res
    assert "ok " not in res.out


def test_unknown_key_suggestion(v, tmp_path):
    p = write(tmp_path, "typo.yml", GOOD.format(dag="typo").replace("depends_on", "depnds_on"))
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert err_re(p, 8, 5).search(res.err), res
    line = [l for l in res.err.splitlines() if l.startswith("%s:8:" % p)][0]
    assert "did you mean" in line and "depends_on" in line, line
    p2 = write(tmp_path, "typo2.yml", "dag: typo2\nschedul: '@daily'\ntasks:\n  a: {image: x}\n")
    res = v.exec("validate", p2)
    assert res.rc == 1
    assert err_re(p2, 2, 1).search(res.err) and "schedule" in res.err, res


def test_cycle(v, tmp_path):
    p = write(tmp_path, "cycle.yml", """\
dag: cyc
tasks:
  a:
    image: busybox:1
    depends_on: [b]
  b:
    image: busybox:1
    depends_on: [a]
  c:
    image: busybox:1
""")
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert re.search(r"^%s:\d+:\d+: error: .*(a -> b -> a|b -> a -> b)" % re.escape(str(p)),
                     res.err, re.M), res


def test_directory_mixing_good_and_bad(v, tmp_path):
    d = tmp_path / "dags"
    g1 = write(d, "good1.yml", GOOD.format(dag="good_one"))
    g2 = write(d, "good2.yaml", GOOD.format(dag="good_two"))
    bad = write(d, "bad.yml", GOOD.format(dag="bad_one").replace("    image: busybox:1\n    command", "    imag: busybox:1\n    command"))
    write(d, "notes.txt", "this: is [not a dag\n")
    res = v.exec("validate", d)
    assert res.rc == 1, res
    assert ok_re(g1, "good_one", 2).search(res.out), res
    assert ok_re(g2, "good_two", 2).search(res.out), res
    assert err_re(bad, 4, 5).search(res.err), res
    assert "notes.txt" not in res.out + res.err
    assert "bad.yml" not in res.out


@pytest.mark.parametrize("name,text,lines,needle", [
    ("unknown_dep", "dag: d\ntasks:\n  a: {image: x, depends_on: [nope]}\n  b: {image: x}\n", [3], "nope"),
    ("no_kind", "dag: d\ntasks:\n  a:\n    retries: 1\n  b: {image: x}\n", [3, 4], None),
    ("two_kinds", "dag: d\ntasks:\n  a:\n    image: x\n    notify: ops\n  b: {image: x}\n"
     "notifications:\n  ops: {webhook: {url: 'http://h/'}}\n", [3, 4, 5], None),
    ("bad_cron", "dag: d\nschedule: '0 2 * *'\nstart_date: 2025-01-01\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [2], None),
    ("bad_cron_field", "dag: d\nschedule: '61 2 * * *'\nstart_date: 2025-01-01\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [2], None),
    ("schedule_no_start", "dag: d\nschedule: '@daily'\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [1, 2], "start_date"),
    ("bad_duration", "dag: d\ntasks:\n  a: {image: x, timeout: 5 parsecs}\n  b: {image: x}\n", [3], None),
    ("bad_size", "dag: d\ntasks:\n  a: {image: x, shm_size: lots}\n  b: {image: x}\n", [3], None),
    ("bad_timezone", "dag: d\ntimezone: Mars/Olympus\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [2], "Mars/Olympus"),
    ("bad_trigger_rule", "dag: d\ntasks:\n  a: {image: x}\n  b: {image: x, depends_on: [a], trigger_rule: sometimes}\n", [4], "sometimes"),
    ("unknown_notification", "dag: d\non_failure: [pager]\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [2], "pager"),
    ("duplicate_task", "dag: d\ntasks:\n  a: {image: x}\n  a: {image: y}\n", [4], None),
    ("bad_dag_id", "dag: 'has space'\ntasks:\n  a: {image: x}\n  b: {image: x}\n", [1], None),
    ("no_dag_key", "tasks:\n  a: {image: x}\n  b: {image: x}\n", [1, 2, 3, 4], "dag"),
    ("bad_template", "dag: d\ntasks:\n  a: {image: x, command: [echo, '{{ ds ']}\n  b: {image: x}\n", [3], None),
    ("bad_pull", "dag: d\ntasks:\n  a: {image: x, pull: sometimes}\n  b: {image: x}\n", [3], "sometimes"),
])
def test_rejections(v, tmp_path, name, text, lines, needle):
    p = write(tmp_path, name + ".yml", text)
    res = v.exec("validate", p)
    assert res.rc == 1, res
    errs = [l for l in res.err.splitlines() if l.startswith(str(p) + ":")]
    assert errs, res
    at = []
    for l in errs:
        m = re.match(r"^%s:(\d+):(\d+): error: \S" % re.escape(str(p)), l)
        assert m, "bad diagnostic format: %r" % l
        at.append(int(m.group(1)))
    assert any(n in lines for n in at), (lines, res)
    if needle:
        assert needle in res.err, res
    assert res.out.strip() == "", res


def test_every_problem_reported(v, tmp_path):
    p = write(tmp_path, "many.yml", """\
dag: many
tasks:
  a:
    image: x
    retriess: 1
  b:
    image: x
    comand: [true]
    depends_on: [zzz]
""")
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert err_re(p, 5, 5).search(res.err), res
    assert err_re(p, 8, 5).search(res.err), res
    assert err_re(p, 9).search(res.err), res


def test_every_problem_in_one_pass(v, tmp_path):
    """A key, a template, a dependency, a schedule and a pool problem come out together,
    each at the value that holds it (a template error at its scalar, not at the task)."""
    p = write(tmp_path, "five.yml", """\
dag: five
schedule: '0 25 * * *'
start_date: 2025-01-01
tasks:
  a:
    image: busybox:1
    retires: 2
    command: [echo, "{{ ds "]
    depends_on: [nope]
    pool: spark
  b:
    image: busybox:1
    depends_on: [a]
""")
    res = v.exec("validate", p, env=clean_env())
    assert res.rc == 1, res
    lines = res.err.splitlines()
    want = [(2, 11, "bad schedule '0 25 * * *'"),
            (7, 5, "unknown key 'retires' in task 'a' (did you mean 'retries'?)"),
            (8, 21, "command: unterminated '{{' at offset 0 in template '{{ ds '"),
            (9, 18, "unknown task 'nope' in depends_on"),
            (10, 11, "unknown pool 'spark'")]
    assert len(lines) == len(want), res
    for line, (ln, col, text) in zip(lines, want):
        assert line.startswith("%s:%d:%d: error: %s" % (p, ln, col, text)), (line, res)


def test_pool_must_be_configured(v, tmp_path):
    """A pool the configuration does not define is an error under validate, run and
    serve alike, with or without pools configured; default_pool always exists."""
    p = write(tmp_path, "pooled.yml", """\
dag: pooled
tasks:
  a: {image: busybox:1, pool: spark}
  b: {image: busybox:1, pool: default_pool}
""")
    res = v.exec("validate", p, env=clean_env())
    assert res.rc == 1, res
    assert res.err.strip() == (
        "%s:3:31: error: unknown pool 'spark' (no pools are configured, only default_pool; define it under "
        "'pools' in the configuration file, or in DAGD_POOLS as spark=SLOTS)" % p), res
    res = v.exec("validate", p, env=clean_env(DAGD_POOLS="db=1,etl=2"))
    assert res.rc == 1, res
    assert "unknown pool 'spark' (the pools are default_pool, db and etl;" in res.err, res
    res = v.exec("validate", p, env=clean_env(DAGD_POOLS="spark=1"))
    assert res.rc == 0 and ok_re(p, "pooled", 2).search(res.out), res

    res = v.exec("run", p, "--state", tmp_path / "state", env=clean_env())
    assert res.rc == 2, res
    assert "%s:3:31: error: unknown pool 'spark'" % p in res.err, res

    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copyfile(p, folder / p.name)
    srv = Server(v, folder, state=tmp_path / "serve-state",
                 env=dict(DOCKER_HOST="tcp://127.0.0.1:%d" % free_port())).start(wait_ready=False)
    errors = wait_for("the import error", lambda: serve_verdicts(srv)[1], 10)
    assert [(e[1], e[2]) for e in errors] == [(3, 31)], errors
    assert errors[0][3].startswith("unknown pool 'spark' (no pools are configured"), errors


def test_config_errors_name_the_setting_once(v, tmp_path):
    """A bad setting is reported once with its place (file:line:col, or the variable), the
    setting, the value and the accepted form."""
    good = write(tmp_path, "good.yml", GOOD.format(dag="good"))
    write(tmp_path, "cfg/bad2.yml", "listen: 127.0.0.1:1\npools:\n  spark: 2\nparallelism: lots\n")
    res = v.exec("validate", good, "--config", "cfg/bad2.yml", env=clean_env(), cwd=tmp_path)
    assert res.rc == 2, res
    assert res.err.strip() == ("dagd: cfg/bad2.yml:4:14: error: parallelism: invalid value 'lots' "
                               "(expected a whole number from 1 to 100000)"), res
    res = v.exec("validate", good, env=clean_env(DAGD_POOLS="spark:1"))
    assert res.rc == 2, res
    assert res.err.strip() == "dagd: DAGD_POOLS: invalid value 'spark:1' (expected name=slots,name=slots)", res


@pytest.mark.parametrize("name,text,at,needle", [
    ("at_schedule", "dag: d\nschedule: @daily\nstart_date: 2025-01-01\ntasks:\n  a: {image: x}\n", (2, 11),
     "(a value that starts with '@' must be quoted: schedule: \"@daily\")"),
    ("tab", "dag: d\ntasks:\n  a:\n\timage: x\n", (4, 1),
     "(line 4 is indented with a tab; YAML indents with spaces only)"),
    ("unquoted_template", "dag: d\ntasks:\n  a:\n    image: x\n    working_dir: {{ ds }}\n", (5, 18),
     "a value that starts with '{{' must be quoted (YAML reads {{ ... }} as a mapping): \"{{ ds }}\""),
    ("filter", "dag: d\ntasks:\n  a: {image: x, command: [echo, '{{ ds | uper }}']}\n", (3, 33),
     "command: unknown filter 'uper' (did you mean 'upper'?)"),
    ("statement", "dag: d\ntasks:\n  a: {image: x, command: [echo, '{% if x %}y{% endif %}']}\n", (3, 33),
     "command: '{% ... %}' statements are not supported"),
    ("next_ds", "dag: d\ntasks:\n  a:\n    image: x\n    env: {DAY: '{{ next_ds }}'}\n", (5, 16),
     "env 'DAY': 'next_ds' is not provided by dagd (Airflow 2 deprecated it; use data_interval_end"),
    ("var", "dag: d\ntasks:\n  a: {image: x, command: [echo, '{{ var.value.bucket }}']}\n", (3, 33),
     "'var.value.bucket' is not provided by dagd (dagd has no Airflow Variables"),
])
def test_hints(v, tmp_path, name, text, at, needle):
    """YAML syntax errors name their usual cause; template errors suggest the nearest
    filter, refuse {% %} and name what dagd does not provide."""
    p = write(tmp_path, name + ".yml", text)
    res = v.exec("validate", p, env=clean_env())
    assert res.rc == 1, res
    prefix = "%s:%d:%d: error: " % ((p,) + at)
    assert any(l.startswith(prefix) and needle in l for l in res.err.splitlines()), (prefix, needle, res)


def test_empty_file(v, tmp_path):
    p = write(tmp_path, "empty.yml", "")
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert re.search(r"^%s:\d+:\d+: error: \S" % re.escape(str(p)), res.err, re.M), res


def test_binary_file(v, tmp_path):
    data = bytes(range(256)) * 8 + b"\x00\xff\xfe dag: x\n\x00" + os.urandom(2048)
    p = write(tmp_path, "binary.yaml", data)
    res = v.exec("validate", p)
    assert res.rc == 1, res
    assert str(p) in res.err, res


def test_not_a_mapping(v, tmp_path):
    for i, text in enumerate(["- a\n- b\n", "just a string\n", "dag: x\ntasks: [a, b]\n",
                              "dag: x\ntasks:\n  a: 3\n"]):
        p = write(tmp_path, "shape%d.yml" % i, text)
        res = v.exec("validate", p)
        assert res.rc == 1, (text, res)
        assert re.search(r"^%s:\d+:\d+: error: \S" % re.escape(str(p)), res.err, re.M), res


def test_one_bad_file_does_not_hide_others(v, tmp_path):
    bad = write(tmp_path, "a_bad.yml", "dag: [\n")
    good = write(tmp_path, "z_good.yml", GOOD.format(dag="zgood"))
    res = v.exec("validate", bad, good)
    assert res.rc == 1, res
    assert ok_re(good, "zgood", 2).search(res.out), res


def test_usage(v, tmp_path):
    res = v.exec("validate")
    assert res.rc == 2, res
    missing = tmp_path / "missing.yml"
    res = v.exec("validate", missing)
    assert res.rc in (1, 2), res
    assert str(missing) in res.err, res


# --------------------------------------------------------------------------- validate = serve

DATA = REPO / "tests" / "data" / "dags"
# broken/config/ holds the files that are invalid only under the configuration below.
BROKEN = sorted((DATA / "broken").glob("*.yml")) + sorted((DATA / "broken" / "config").glob("*.yml"))
VALID = sorted((DATA / "valid").glob("*.yml"))
DIAG_RE = re.compile(r"^(.+?):(\d+):(\d+): error: (.*)$")


def shared_config(tmp_path):
    """The configuration that `dagd validate` and `dagd serve` both get, through the
    environment: pools spark and etl, a connections file (warehouse, mart, slack), the
    default policy said out loud (no privileged containers), and an engine that does not
    answer: serve then loads and reloads its folder but never gets to schedule, so the
    valid DAGs' runs create nothing on the engine."""
    conns = tmp_path / "connections.yml"
    conns.write_text("warehouse: postgres://etl:pw@db:5432/warehouse\n"
                     "mart: postgres://etl:pw@mart:5432/mart\n"
                     "slack: https://hooks.example.com/T000/B000\n")
    os.chmod(conns, 0o600)
    return clean_env(DAGD_POOLS="spark=2,etl=2", DAGD_CONNECTIONS_FILE=str(conns),
                     DAGD_POLICY_ALLOW_PRIVILEGED="false",
                     DOCKER_HOST="tcp://127.0.0.1:%d" % free_port())


def expected_text(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), "%s has no expect line" % path
    return first[len("# expect: "):]


def validate_verdicts(v, folder, env):
    """`dagd validate folder`: (the files it calls ok, its diagnostics as sorted
    (file, line, col, message) tuples)."""
    res = v.exec("validate", folder, env=env)
    assert res.rc in (0, 1), res
    ok, errors = set(), []
    for line in res.out.splitlines():
        m = re.match(r"^ok (.+) \([^()]*\)$", line)
        assert m, "not an ok line: %r\n%r" % (line, res)
        ok.add(os.path.realpath(m.group(1)))
    for line in res.err.splitlines():
        m = DIAG_RE.match(line)
        assert m, "not a file:line:col: error: line: %r\n%r" % (line, res)
        errors.append((os.path.realpath(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)))
    return ok, sorted(errors)


def serve_verdicts(srv):
    """What the running daemon made of its folder: (the files of the DAGs it lists, its
    import errors as sorted (file, line, col, message) tuples)."""
    doc = srv.get("/import-errors?limit=1000")
    assert doc["total_entries"] == len(doc["import_errors"]), doc["total_entries"]
    errors = sorted((os.path.realpath(e["filename"]), e["line"], e["col"], e["message"])
                    for e in doc["import_errors"])
    loaded = {os.path.realpath(d["file"]) for d in srv.get("/dags?limit=1000")["dags"]}
    return loaded, errors


def copy_in(files, folder):
    """Copy files into folder, each appearing whole (written beside it, then renamed)."""
    for f in files:
        part = folder / ("." + f.name + ".part")
        shutil.copyfile(f, part)
        os.replace(part, folder / f.name)


@pytest.mark.parametrize("when", ["load", "reload"])
def test_validate_and_serve_judge_every_file_alike(v, when):
    """Every broken file (tests/data/dags/broken, and broken/config under the shared
    configuration) and every valid one goes to `dagd validate` and into the DAGs folder of
    one `dagd serve`, both with the same configuration from the environment. For each
    file both give the same verdict, and a broken file's import errors are exactly
    validate's diagnostics (file, line, col, message), among them its `# expect:` text.
    load: the folder holds every file when serve starts. reload: serve starts on the
    valid files, then the broken ones are copied in and it is sent SIGHUP."""
    env = shared_config(v.tmp)
    folder = v.tmp / "dags"
    folder.mkdir()
    copy_in(VALID, folder)
    if when == "load":
        copy_in(BROKEN, folder)
    srv = Server(v, folder, env=env).start(wait_ready=False)
    if when == "reload":
        wait_for("the valid DAGs to load", lambda: len(serve_verdicts(srv)[0]) == len(VALID), 10)
        copy_in(BROKEN, folder)
        srv.proc.send_signal(signal.SIGHUP)
    names = [f.name for f in VALID + BROKEN]
    assert len(set(names)) == len(names), "two data files share a name"
    files = [os.path.realpath(folder / n) for n in names]

    def accounted():
        loaded, errors = serve_verdicts(srv)
        seen = loaded | {e[0] for e in errors}
        return (loaded, errors) if all(f in seen for f in files) else None
    serve_ok, serve_errors = wait_for("serve to judge every file", accounted, 10)
    assert srv.alive(), srv.stderr()
    val_ok, val_errors = validate_verdicts(v, folder, env)

    problems = []
    for src, f in zip(VALID + BROKEN, files):
        name = os.path.relpath(src, DATA)
        ve = [e[1:] for e in val_errors if e[0] == f]
        se = [e[1:] for e in serve_errors if e[0] == f]
        verdicts = ("valid" if f in val_ok and not ve else "invalid",
                    "valid" if f in serve_ok and not se else "invalid")
        want = "valid" if src in VALID else "invalid"
        if verdicts != (want, want):
            problems.append("%s: validate says %s, serve says %s (want %s); validate: %s; serve: %s"
                            % (name, verdicts[0], verdicts[1], want, ve, se))
        elif ve != se:
            problems.append("%s: validate and serve differ:\n    validate: %s\n    serve:    %s" % (name, ve, se))
        elif want == "invalid" and not any(expected_text(src) in e[2] for e in ve):
            problems.append("%s: no message contains %r: %s" % (name, expected_text(src), ve))
    log = [l for l in srv.stderr().splitlines() if ": not loaded (" not in l]
    assert not problems, "%d of %d files are judged apart (%s):\n%s\n--- dagd serve stderr (less 'not loaded')\n%s" % (
        len(problems), len(files), when, "\n".join(problems), "\n".join(log[-20:]))
