"""The RappelConso example end to end (examples/rappel_conso.yml, docs/examples.md), on the
real engine with the real images: Postgres (dagd/postgres), the Kafka-protocol broker
(dagd/broker), the sample records API and the producer (dagd/producer), the Spark job
(dagd/spark), psql (dagd/loader). The test starts the services itself on a network of its
own, pipeline-<uuid> (the DAG file's `network: pipeline` is rewritten to it in a copy), so
it shares nothing with `make run` or another test's stack.

Checked against the sample file (the expected figures are computed here from it): a day
loads exactly its distinct reference_fiche values, the topic holds what the producer
published, the same day run again leaves the table as it was (ON CONFLICT DO NOTHING),
three days in a row load the three days, and so does `dagd backfill` of three days
under `dagd serve`.

It is the slowest end-to-end scenario and its images hold no dagd, so it runs in the plain
pass only: not under valgrind (DAGD_VALGRIND) and not against the ASan build, whose paths
(`dagd run`, containers, XCom) the other integration tests cover. Under $CI an image that
cannot be built fails the test (build_images); elsewhere it is skipped with the reason.
"""
import json
import secrets
import time
import uuid

import pytest

from conftest import REPO, Harness, docker
from serve_helpers import Server, clean_env
from image_helpers import build_images, plain_pass_only

pytestmark = plain_pass_only("the slowest end-to-end scenario; its dagd paths run in the other tests")

EXAMPLE = REPO / "examples" / "rappel_conso.yml"
CODE = REPO / "examples" / "rappel_conso"
SAMPLE = json.loads((CODE / "sample_records.json").read_text())["records"]
DAYS = sorted({r["date_de_publication"] for r in SAMPLE})
IMAGES = ["image-loader", "image-postgres", "image-broker", "image-producer", "image-spark"]
PAGE_SIZE = 4  # fewer than any day's records: the producer has to page


def day_refs(day):
    return [r["reference_fiche"] for r in SAMPLE if r["date_de_publication"] == day]


class Stack:
    """Postgres, the broker and the sample API on the network pipeline-<uuid>."""

    def __init__(self):
        tag = uuid.uuid4().hex[:10]
        self.network = "pipeline-" + tag
        self.names = []
        self.password = secrets.token_hex(8)
        docker("network", "create", "--label", "io.dagd.test=rappel", self.network)
        self.pg = self._run("pg", "postgres", "-e", "POSTGRES_USER=etl", "-e", "POSTGRES_DB=analytics",
                            "-e", "POSTGRES_PASSWORD=" + self.password, "dagd/postgres:local")
        self.broker = self._run("broker", "broker", "-e", "ADVERTISED_LISTENER_URL=tcp://broker:9092",
                                "dagd/broker:local")
        self.api = self._run("api", "rappel-api", "-v", "%s:/opt/rappel:ro" % CODE, "dagd/producer:local",
                             "python3", "/opt/rappel/sample_api.py", "--port", "8000")
        self._healthy(self.pg)
        self._healthy(self.broker)
        self._api_answers()

    def _run(self, role, alias, *args):
        name = "dagd-itest-rappel-%s-%s" % (role, self.network[len("pipeline-"):])
        self.names.append(name)
        docker("run", "-d", "--name", name, "--network", self.network, "--network-alias", alias, *args)
        return name

    def _healthy(self, name, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if s == "healthy":
                return
            assert s != "unhealthy", docker("logs", name, check=False).stderr[-2000:]
            time.sleep(0.5)
        pytest.fail("%s not healthy after %ss: %s" % (name, timeout, docker("logs", name, check=False).stderr[-2000:]))

    def _api_answers(self, timeout=30):
        probe = ("import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/explore/v2.1/"
                 "catalog/datasets/rappelconso0/records?limit=1', timeout=2)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if docker("exec", self.api, "python3", "-c", probe, check=False).returncode == 0:
                return
            time.sleep(0.25)
        pytest.fail("the sample API did not answer: %s" % docker("logs", self.api, check=False).stderr[-2000:])

    def sql(self, query):
        return docker("exec", self.pg, "psql", "-U", "etl", "-d", "analytics", "-v", "ON_ERROR_STOP=1",
                      "-Atc", query).stdout.strip()

    def topic_messages(self):
        """The messages rappel_conso/0 holds, counted by reading it through
        (examples/rappel_conso/topic_count.py; 0 before the topic exists)."""
        out = docker("run", "--rm", "--network", self.network, "-v", "%s:/opt/rappel:ro" % CODE,
                     "dagd/producer:local", "python3", "/opt/rappel/topic_count.py").stdout
        return json.loads(out.strip().splitlines()[-1])["messages"]

    def close(self):
        for n in self.names:
            docker("rm", "-f", "-v", n, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def stack(docker_engine):
    build_images(*IMAGES)
    s = Stack()
    yield s
    s.close()


@pytest.fixture
def pipeline(stack, dagd_bin, tmp_path):
    """The example DAG on the stack's network, under a DAG id of the test's own."""
    h = Harness(dagd_bin, tmp_path, "rappel")
    text = EXAMPLE.read_text()
    assert text.count("network: pipeline\n") == 1 and text.count("\ndag: rappel_conso\n") == 1
    text = text.replace("network: pipeline\n", "network: %s\n" % stack.network)
    text = text.replace("\ndag: rappel_conso\n", "\ndag: %s\n" % h.dag_id)
    h.dag = h.write(text, dedent=False)
    stack.sql("DROP TABLE IF EXISTS rappel_conso")
    yield h
    h.remove_containers()


def run_day(stack, h, day):
    env = clean_env(DAGD_CONN_WAREHOUSE="postgres://etl:%s@postgres:5432/analytics" % stack.password)
    res = h.exec("run", h.dag, "--date", day, "--state", h.state,
                 "--conf", json.dumps({"code_dir": str(CODE), "page_size": PAGE_SIZE}), timeout=600, env=env)
    assert res.rc == 0, res
    assert stack.password not in res.out + res.err, "the connection's password was printed"
    return res


def day_rows(stack, day):
    return int(stack.sql("SELECT count(*) FROM rappel_conso WHERE date_de_publication = '%s'" % day))


def all_refs(stack):
    return set(stack.sql("SELECT reference_fiche FROM rappel_conso").split())


def test_one_day_loads_its_distinct_recalls_and_a_rerun_adds_none(stack, pipeline):
    day = DAYS[1]
    refs = day_refs(day)
    assert len(set(refs)) < len(refs), "the sample day should repeat a reference_fiche"
    before = stack.topic_messages()

    run_day(stack, pipeline, day)
    assert stack.topic_messages() - before == len(refs)
    assert all_refs(stack) == set(refs)
    assert day_rows(stack, day) == len(set(refs))
    loaded = stack.sql("SELECT string_agg(reference_fiche || ':' || loaded_at, ',' ORDER BY reference_fiche) "
                       "FROM rappel_conso")

    run_day(stack, pipeline, day)
    assert day_rows(stack, day) == len(set(refs)) and len(all_refs(stack)) == len(set(refs))
    assert stack.topic_messages() - before == 2 * len(refs), "the second run publishes the day again"
    assert stack.sql("SELECT string_agg(reference_fiche || ':' || loaded_at, ',' ORDER BY reference_fiche) "
                     "FROM rappel_conso") == loaded, "a second run of the same day changed the table"


def test_a_backfill_of_three_days_loads_three_days(stack, pipeline):
    """`dagd backfill` of three days under `dagd serve`: three runs, each day's recalls
    loaded once (a recall already loaded from an earlier day keeps its first row)."""
    days = DAYS[:3]
    h = pipeline
    dags = h.tmp / "dags"
    dags.mkdir()
    (dags / "rappel_conso.yml").write_text(h.dag.read_text())
    srv = Server(h, dags, env={"DAGD_CONN_WAREHOUSE": "postgres://etl:%s@postgres:5432/analytics" % stack.password})
    srv.start()
    try:
        srv.wait_dag(h.dag_id, timeout=30)
        before = stack.topic_messages()
        conf = json.dumps({"code_dir": str(CODE), "page_size": PAGE_SIZE})
        res = h.exec("backfill", h.dag_id, "--from", days[0], "--to", days[-1], "--conf", conf, "--json",
                     "--server", "http://127.0.0.1:%d" % srv.port, "--state", srv.state, env=clean_env())
        assert res.rc == 0, res
        runs = json.loads(res.out)["dag_runs"]
        assert sorted(r["logical_date"][:10] for r in runs) == days, runs
        for r in runs:
            done = srv.wait_run(h.dag_id, r["dag_run_id"], timeout=600)
            assert done["state"] == "success", (done, srv.tis(h.dag_id, r["dag_run_id"]))
        assert stack.password not in srv.all_stderr(), "the connection's password was logged"
    finally:
        srv.term(timeout=60)
    union = set().union(*(day_refs(d) for d in days))
    assert all_refs(stack) == union
    assert sum(day_rows(stack, d) for d in days) == len(union)
    assert stack.topic_messages() - before == sum(len(day_refs(d)) for d in days)


def test_three_days_load_three_days(stack, pipeline):
    days = DAYS[:3]
    before = stack.topic_messages()
    seen = set()
    for day in days:
        run_day(stack, pipeline, day)
        new = set(day_refs(day)) - seen
        seen |= new
        # a recall already loaded from an earlier day keeps its first row
        assert day_rows(stack, day) == len(new), day
    assert all_refs(stack) == seen
    assert stack.topic_messages() - before == sum(len(day_refs(d)) for d in days)
    assert any(set(day_refs(days[i])) & set(day_refs(days[j])) for i in range(3) for j in range(i)), \
        "the sample should repeat a reference_fiche across these days"
