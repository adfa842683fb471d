"""The seed pipelines of examples/ (daily_sales_batch, daily_log_processing, the ELT pair
elt_extract_load / elt_transform, shell_preprocess, postgres_check) run end to end by
`dagd run` on the real engine, with the images `make images` builds: Postgres from
dagd/postgres:local (started here), Spark jobs in dagd/spark:local, psql in
dagd/loader:local, email to a real SMTP receiver.

Each test runs the example file itself, copied with these changes only (each text must
occur exactly once in the file, so an edit of the example that drops it fails here):
- `network: pipeline` becomes a network of the test's own: `network:` is not a template,
  and the name `pipeline` is shared by every stack on the engine;
- long sensor intervals and retry delays are shortened, so that a test waits seconds, not
  minutes (what they wait for is unchanged).
The data folder is the examples' `data_root` param, given as a run's conf.

`test_every_example_validates` runs in every pass. The others run in the plain pass
only: the Spark scenarios start a JVM per job (tens of seconds each on two cores), and all
of them mostly wait on containers, so under the ASan build and valgrind they would add
minutes while dagd's own code paths here (file and dag sensors, connections, email,
volumes with templates) run in the ASan pass through test_sensors_notify.py,
test_sensors_more.py and test_behaviour.py (the valgrind pass leaves the sensor waits out
too, docs/operations.md). Under $CI an image that cannot be built fails these tests
(build_images); elsewhere it skips them with the reason.
"""
import json
import random
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from decimal import Decimal

import pytest

from conftest import REPO, TIME_SCALE, docker, env_with, epoch_ms, wrap
from image_helpers import build_images, plain_pass_only
from test_images import Container
from test_sensors_notify import header
from test_sensors_more import wait_proc

E2E = plain_pass_only("end-to-end scenarios that mostly wait on containers (a JVM per Spark job)")

EXAMPLES = REPO / "examples"
CENT = Decimal("0.01")


class Warehouse:
    """dagd/postgres:local on a network of the test module's own, reachable there as
    `warehouse`; psql() asks it from inside its container."""

    def __init__(self):
        sfx = uuid.uuid4().hex[:10]
        self.network = "dagd-itest-seeds-" + sfx
        self.password = "pw-" + uuid.uuid4().hex[:12]
        self.uri = "postgres://etl:%s@warehouse:5432/analytics" % self.password
        docker("network", "create", self.network)
        self.pg = None
        try:
            self.pg = Container("--network", self.network, "--network-alias", "warehouse",
                                "-e", "POSTGRES_USER=etl", "-e", "POSTGRES_PASSWORD=" + self.password,
                                "-e", "POSTGRES_DB=analytics",
                                "--health-interval", "1s", "--health-start-period", "0s",
                                "dagd/postgres:local")
            self.pg.wait_health(timeout=90)
        except BaseException:
            self.close()
            raise

    def psql(self, sql):
        """Rows of a query, each a list of strings."""
        p = docker("exec", "-e", "PGPASSWORD=" + self.password, self.pg.name, "psql", "-h", "127.0.0.1",
                   "-U", "etl", "-d", "analytics", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c", sql)
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def close(self):
        if self.pg:
            self.pg.remove()
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def warehouse(docker_engine):
    build_images("image-postgres", "image-loader")
    w = Warehouse()
    yield w
    w.close()


@pytest.fixture(scope="module")
def spark_image(docker_engine):
    build_images("image-spark")
    return "dagd/spark:local"


def example(dg, wh, name, subs=()):
    """examples/<name>.yml copied into the test's folder with the network replaced and the
    (old, new) substitutions made, each found exactly once; its DAG's containers are the
    test's to clean up."""
    text = (EXAMPLES / (name + ".yml")).read_text()
    for old, new in (("\n  network: pipeline\n", "\n  network: %s\n" % wh.network),) + tuple(subs):
        assert text.count(old) == 1, "examples/%s.yml holds %r %d times, not once" % (name, old, text.count(old))
        text = text.replace(old, new)
    path = dg.tmp / (name + ".yml")
    path.write_text(text)
    dag_id = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("dag:"))
    dg.dag_ids.append(dag_id)
    return path, dag_id


def run_env(wh, **kw):
    return env_with(DAGD_CONN_WAREHOUSE=wh.uri, **kw)


def data_root(dg):
    root = dg.tmp / "data"
    root.mkdir(mode=0o755, exist_ok=True)
    root.chmod(0o755)
    return root


def write_dir(path, files):
    """Make the folder `path` holding `files` (name -> text) at once: written beside it and
    renamed, so a sensor never sees a half-written day. Readable by the images' user."""
    tmp = path.parent / (".tmp-" + path.name)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o644)
    tmp.chmod(0o755)
    tmp.rename(path)


def run_of(dg, dag_id, date):
    rows = dg.rows("SELECT * FROM dag_runs WHERE dag_id = ? AND logical_ms = ?", (dag_id, epoch_ms(date)))
    assert len(rows) == 1, rows
    return rows[0]


def wait_checked_once(dg, p, dag_id, task_id, date, timeout=60):
    """Waits until the reschedule-mode sensor task_id of dag_id's run at `date` has
    checked and found nothing: its second try exists only after the first check answered
    "not yet". Fails if the dagd process ended first."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < deadline:
        assert p.poll() is None, "dagd ended before the sensor waited: %s" % (p.communicate(),)
        try:
            if dg.rows("SELECT 1 FROM task_tries t JOIN dag_runs r ON r.dag_id = t.dag_id AND r.run_id = t.run_id"
                       " WHERE t.dag_id = ? AND t.task_id = ? AND t.try_number >= 2 AND r.logical_ms = ?",
                       (dag_id, task_id, epoch_ms(date))):
                return
        except Exception:  # no state database or tables yet
            pass
        time.sleep(0.2)
    pytest.fail("sensor %s.%s never checked at %s" % (dag_id, task_id, date))


# --------------------------------------------------------------------------- sales batch

def sales_day(seed, files=3, rows=40):
    """CSV texts of one day's raw sales, and the per-product (total, orders) they hold."""
    rnd = random.Random(seed)
    texts, totals = {}, defaultdict(lambda: [Decimal("0.00"), 0])
    n = 0
    for i in range(files):
        lines = ["order_id,product_id,amount"]
        for _ in range(rows):
            n += 1
            prod = "P%02d" % rnd.randint(1, 7)
            amount = (Decimal(rnd.randint(1, 99999)) / 100).quantize(CENT)  # 12.30, not 12.3
            lines.append("o%05d,%s,%s" % (n, prod, amount))
            totals[prod][0] += amount
            totals[prod][1] += 1
        texts["part-%d.csv" % i] = "\n".join(lines) + "\n"
    return texts, {k: (v[0], v[1]) for k, v in totals.items()}


def e2e(fn):
    for mark in E2E:
        fn = mark(fn)
    return fn


def test_every_example_validates(dagd_bin):
    """`dagd validate` accepts every file of examples/ (cheap: every pass runs it)."""
    files = sorted(EXAMPLES.glob("*.yml"))
    assert len(files) >= 6, files
    for f in files:
        p = subprocess.run(wrap([dagd_bin, "validate", str(f)]), capture_output=True, text=True,
                           timeout=120 * TIME_SCALE, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, "%s: %s%s" % (f.name, p.stdout, p.stderr)


@e2e
def test_daily_sales_batch(dg, warehouse, spark_image, smtp_sink):
    """The sensor waits for the day's files (made by the test while it waits), Spark sums
    them into the mart (totals equal the test's own sums), the summary mail arrives; a
    second run of the day leaves the same rows."""
    date = "2025-01-15"
    root = data_root(dg)
    f, dag_id = example(dg, warehouse, "daily_sales_batch", [("interval: 60s", "interval: 1s")])
    conf = json.dumps({"data_root": str(root), "report_to": "sales@example.org"})
    env = run_env(warehouse, DAGD_SMTP_URL=smtp_sink.url, DAGD_SMTP_FROM="dagd@example.org")
    p = dg.popen("run", f, "--state", dg.state, "--date", date, "--conf", conf, env=env)
    wait_checked_once(dg, p, dag_id, "wait_for_raw_sales", date)
    # the sensor is still waiting when the files appear
    assert dg.tis(dag_id=dag_id)["wait_for_raw_sales"]["state"] != "success"
    assert p.poll() is None
    files, want = sales_day(1)
    created_ms = int(time.time() * 1000)
    write_dir(root / "raw" / "sales" / date, files)
    rc, out, err = wait_proc(p, 600)
    assert rc == 0, (out, err)
    tis = dg.tis(dag_id=dag_id)
    assert all(t["state"] == "success" for t in tis.values()), tis
    assert tis["wait_for_raw_sales"]["end_ms"] >= created_ms, (created_ms, tis["wait_for_raw_sales"])

    def mart():
        return {r[0]: (Decimal(r[1]), int(r[2])) for r in warehouse.psql(
            "select product_id, total_sales, orders from daily_product_sales where day = '%s'" % date)}
    assert mart() == want
    total = sum(v[0] for v in want.values())
    orders = sum(v[1] for v in want.values())
    summary = "%d products, %d orders, total %s" % (len(want), orders, total)
    assert tis["aggregate_sales"]["output"] == summary, tis["aggregate_sales"]
    assert warehouse.password not in dg.log("aggregate_sales", dag_id=dag_id)

    mails = smtp_sink.wait(1, timeout=10)
    assert len(mails) == 1, mails
    m = mails[0]
    assert [r.strip("<>") for r in m["to"]] == ["sales@example.org"], m
    assert header(m["data"], "Subject") == "Daily sales batch complete (%s)" % date, m
    assert summary.encode() in m["data"], m

    # the same day again: the day's rows are replaced, not added to
    # (in a state folder of its own: dagd makes one run per logical date in a state folder)
    res = dg.run(f, "--date", date, "--conf", conf, "--state", dg.tmp / "state-again", timeout=600, env=env,
                 state=False)
    assert res.rc == 0, res
    assert mart() == want
    assert warehouse.psql("select count(*) from daily_product_sales where day = '%s'" % date) == [[str(len(want))]]
    assert len(smtp_sink.wait(2, timeout=10)) == 2


# --------------------------------------------------------------------------- log processing

LEVELS = ["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"]


def log_day(seed, files=2, lines=120):
    rnd = random.Random(seed)
    texts, levels, classes, unparsed = {}, Counter(), Counter(), 0
    for i in range(files):
        out = []
        for j in range(lines):
            if rnd.random() < 0.05:
                out.append("garbage line %d without the fields" % j)
                unparsed += 1
                continue
            level = rnd.choice(LEVELS)
            status = rnd.choice([200, 200, 201, 301, 404, 500, 503])
            out.append("2025-01-16T%02d:%02d:00Z %s %s %s /p/%d %d %d" % (
                j % 24, j % 60, level, rnd.choice(["api", "web"]), rnd.choice(["GET", "POST"]),
                j, status, rnd.randint(1, 900)))
            levels[level] += 1
            classes["%dxx" % (status // 100)] += 1
        out.append("")  # a blank line is not a log line
        texts["app-%d.log" % i] = "\n".join(out) + "\n"
    return texts, levels, classes, unparsed


@e2e
def test_daily_log_processing(dg, warehouse, spark_image):
    """The file sensor lets the Spark job run once the day's logs are there; the counts
    per level and status class loaded into Postgres are the ones the test counts."""
    date = "2025-01-16"
    root = data_root(dg)
    files, levels, classes, unparsed = log_day(2)
    write_dir(root / "logs" / date, files)
    f, dag_id = example(dg, warehouse, "daily_log_processing", [("interval: 30s", "interval: 1s")])
    res = dg.run(f, "--date", date, "--conf", json.dumps({"data_root": str(root)}), timeout=600,
                 env=run_env(warehouse))
    assert res.rc == 0, res
    tis = dg.tis(dag_id=dag_id)
    assert tis["wait_for_logs"]["state"] == "success" and tis["count_log_lines"]["state"] == "success", tis
    assert tis["wait_for_logs"]["end_ms"] <= tis["count_log_lines"]["start_ms"]
    got = defaultdict(dict)
    for kind, key, n in warehouse.psql("select kind, key, lines from daily_log_counts where day = '%s'" % date):
        got[kind][key] = int(n)
    assert got["level"] == dict(levels), got
    assert got["status"] == dict(classes), got
    assert got["unparsed"] == {"-": unparsed}, got
    assert tis["count_log_lines"]["output"] == "%d lines, %d unparsed" % (sum(levels.values()), unparsed)


# --------------------------------------------------------------------------- ELT pair

def orders_csv(seed, n=25):
    rnd = random.Random(seed)
    lines, want = ["order_id,customer,amount"], defaultdict(lambda: [0, Decimal("0.00")])
    for i in range(n):
        cust = rnd.choice(["acme", "globex", "initech", "umbrella"])
        amount = (Decimal(rnd.randint(100, 50000)) / 100).quantize(CENT)
        lines.append("e%03d,%s,%s" % (i, cust, amount))
        want[cust][0] += 1
        want[cust][1] += amount
    return "\n".join(lines) + "\n", {k: (v[0], v[1]) for k, v in want.items()}


@e2e
def test_elt_pair_waits_for_the_other_dag_and_fails_fast(dg, warehouse):
    """elt_transform's dag sensor waits while elt_extract_load has no run 30 minutes
    earlier, goes on when that run succeeded (the totals are built from the loaded rows),
    and, for a day whose extract fails, fails as soon as that run failed."""
    root = data_root(dg)
    fast = [("interval: 60s", "interval: 1s")]
    load, load_id = example(dg, warehouse, "elt_extract_load", [("retry_delay: 2m", "retry_delay: 1s")])
    transform, tr_id = example(dg, warehouse, "elt_transform", fast + [("retry_delay: 2m", "retry_delay: 1s")])
    conf = json.dumps({"data_root": str(root)})
    env = run_env(warehouse)

    day = "2025-01-17"
    text, want = orders_csv(3)
    write_dir(root / "elt" / day, {"orders.csv": text})
    p = dg.popen("run", transform, "--state", dg.state, "--date", day + "T01:30:00Z", env=env)
    wait_checked_once(dg, p, tr_id, "wait_for_extract_load", day + "T01:30:00Z")
    assert p.poll() is None
    tr_log = dg.log("wait_for_extract_load", dag_id=tr_id)
    assert "no run of DAG 'elt_extract_load' at %sT01:00:00Z yet" % day in tr_log, tr_log
    res = dg.run(load, "--date", day + "T01:00:00Z", "--conf", conf, timeout=120, env=env)
    assert res.rc == 0, res
    rc, out, err = wait_proc(p, 120)
    assert rc == 0, (out, err)
    tis = dg.tis(dag_id=tr_id)
    assert tis["wait_for_extract_load"]["state"] == "success" and tis["transform"]["state"] == "success", tis
    got = {r[0]: (int(r[1]), Decimal(r[2])) for r in warehouse.psql(
        "select customer, orders, total from customer_daily_totals where day = '%s'" % day)}
    assert got == want
    assert tis["transform"]["output"] == str(len(want)), tis["transform"]

    # a day without an export: extract_load fails, the waiting sensor fails at once
    bad = "2025-01-18"
    p = dg.popen("run", transform, "--state", dg.state, "--date", bad + "T01:30:00Z", env=env)
    wait_checked_once(dg, p, tr_id, "wait_for_extract_load", bad + "T01:30:00Z")
    res = dg.run(load, "--date", bad + "T01:00:00Z", "--conf", conf, timeout=120, env=env)
    assert res.rc == 1, res
    failed_ms = int(time.time() * 1000)
    rc, out, err = wait_proc(p, 60)
    assert rc == 1, (out, err)
    run = run_of(dg, tr_id, bad + "T01:30:00Z")
    tis = dg.tis(run_id=run["run_id"], dag_id=tr_id)
    sensor = tis["wait_for_extract_load"]
    load_run = run_of(dg, load_id, bad + "T01:00:00Z")["run_id"]
    assert sensor["state"] == "failed", sensor
    assert sensor["message"] == ("DAG 'elt_extract_load' run '%s' is failed (one of the sensor's failed_states)"
                                 % load_run), sensor
    # fails at its next check (1s here), far from its timeout of 2h
    assert sensor["end_ms"] - failed_ms < 15000 * TIME_SCALE, (sensor, failed_ms)
    assert tis["transform"]["state"] == "upstream_failed", tis
    assert warehouse.psql("select count(*) from customer_daily_totals where day = '%s'" % bad) == [["0"]]


# --------------------------------------------------------------------------- shell, psql

@e2e
def test_shell_preprocess(dg, warehouse):
    """The shell script cleans the day's files: one header, no blank lines, no CR, no
    duplicate records; its last line (the task's output) counts them."""
    date = "2025-01-19"
    root = data_root(dg)
    clean = root / "clean"
    clean.mkdir()
    clean.chmod(0o777)
    write_dir(root / "incoming" / date, {
        "a.csv": "id,name\r\n1,alpha\r\n2,beta\r\n\r\n2,beta\r\n",
        "b.csv": "id,name\n3,gamma\n\n1,alpha\n4,delta\n",
    })
    f, dag_id = example(dg, warehouse, "shell_preprocess")
    res = dg.run(f, "--date", date, "--conf", json.dumps({"data_root": str(root)}), timeout=120)
    assert res.rc == 0, res
    out = (clean / (date + ".csv")).read_text()
    assert out.splitlines() == ["id,name", "1,alpha", "2,beta", "3,gamma", "4,delta"], out
    assert dg.tis(dag_id=dag_id)["preprocess"]["output"] == "4 records in clean/%s.csv" % date


@e2e
def test_postgres_check(dg, warehouse):
    """select 1 through the connection answers; the connection's password never shows."""
    f, dag_id = example(dg, warehouse, "postgres_check")
    res = dg.run(f, "--date", "2025-01-20", timeout=120, env=run_env(warehouse))
    assert res.rc == 0, res
    log = dg.log("select_one", dag_id=dag_id)
    assert "connecting to host warehouse, port 5432, database analytics, user etl" in log, log
    assert "Postgres connected: PostgreSQL 15" in log, log
    assert warehouse.password not in log + res.out + res.err
