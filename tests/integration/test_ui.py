"""The web UI (docs/ui.md) of a real `dagd serve` running real DAGs on the engine.

The session and CSRF rules are checked over plain HTTP (urllib); the pages in a real headless
Chromium driven by Selenium. Each browser test writes a screenshot of every view it visits
into build/ui-screenshots (or $DAGD_UI_SCREENSHOTS) for a person to look at.
"""
import json
import os
import pathlib
import re
import shutil
import time
import urllib.error
import urllib.request

import pytest

from conftest import TIME_SCALE, VALGRIND
from serve_helpers import Server, dag_text, simple_task, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
HEX64 = re.compile(r"[0-9a-f]{64}")


class Http:
    """Raw HTTP to the server: every reply, whatever its status, as (status, headers, body)."""

    def __init__(self, srv):
        self.base = "http://127.0.0.1:%d" % srv.port

    def __call__(self, method, path, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **kw):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=10 * TIME_SCALE) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()


def sign_in(http, token):
    st, hd, body = http("POST", "/ui/sign-in", {"token": token})
    assert st == 200, (st, body)
    raw = hd["Set-Cookie"]
    m = re.match(r"dagd_session=([^;]*)", raw)
    assert m, raw
    return m.group(1), json.loads(body)["csrf_token"], raw


def test_sessions_csrf_and_the_embedded_files(dg):
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", simple_task("a", "echo a"), simple_task("b", "echo b", "    depends_on: [a]\n"),
                      head="params:\n  count: 2\n  label: hi\n"), name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    http = Http(srv)

    # the UI's files are the ones in src/api/ui/, served without a token
    st, hd, _ = http("GET", "/")
    assert st == 302 and hd["Location"] == "/ui/", (st, dict(hd))
    for path, name, ctype in (("/ui/", "index.html", "text/html"), ("/ui/app.js", "app.js", "text/javascript"),
                              ("/ui/app.css", "app.css", "text/css")):
        st, hd, body = http("GET", path)
        assert st == 200 and hd["Content-Type"].startswith(ctype), (path, st, dict(hd))
        assert body == (REPO / "src/api/ui" / name).read_bytes(), path
        assert "default-src 'self'" in hd["Content-Security-Policy"]

    # a wrong token makes no session
    st, hd, body = http("POST", "/ui/sign-in", {"token": srv.token + "x"})
    assert st == 401 and "Set-Cookie" not in hd, (st, dict(hd), body)
    st, _, body = http("POST", "/ui/sign-in", {"tokn": srv.token})
    assert st == 400 and b"token" in body, body

    sid, csrf, raw = sign_in(http, srv.token)
    assert HEX64.fullmatch(sid) and HEX64.fullmatch(csrf) and sid != csrf, raw
    attrs = [a.strip().lower() for a in raw.split(";")[1:]]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs, raw
    assert "max-age=43200" in attrs, raw
    ck = {"Cookie": "dagd_session=" + sid}
    dag = "/api/v1/dags/" + dg.dag_id

    # reading with the cookie; the DAG carries its tasks' upstream and its params
    st, _, body = http("GET", dag, headers=ck)
    assert st == 200, body
    d = json.loads(body)
    assert d["tasks"] == [{"task_id": "a", "upstream": []}, {"task_id": "b", "upstream": ["a"]}], d
    assert d["params"] == {"count": 2, "label": "hi"}, d
    st, _, body = http("GET", "/ui/session", headers=ck)
    assert st == 200 and json.loads(body)["csrf_token"] == csrf, body

    # changing state with the cookie needs the session's CSRF token
    pause = {"is_paused": True}
    json_ct = {"Content-Type": "application/json"}
    st, _, body = http("PATCH", dag, pause, headers={**ck, **json_ct})
    assert st == 403 and b"X-CSRF-Token" in body, (st, body)
    st, _, body = http("PATCH", dag, pause, headers={**ck, **json_ct, "X-CSRF-Token": csrf[:-1] + "0"
                                                     if csrf[-1] != "0" else csrf[:-1] + "1"})
    assert st == 403, (st, body)
    st, _, body = http("POST", dag + "/runs", {}, headers={**ck, **json_ct, "X-CSRF-Token": ""})
    assert st == 403, (st, body)
    assert srv.dag(dg.dag_id)["is_paused"] is False and srv.runs(dg.dag_id) == []
    st, _, body = http("PATCH", dag, pause, headers={**ck, **json_ct, "X-CSRF-Token": csrf})
    assert st == 200 and json.loads(body)["is_paused"] is True, body
    # the bearer token needs no CSRF token, as before
    st, _, body = http("PATCH", dag, {"is_paused": False},
                       headers={**json_ct, "Authorization": "Bearer " + srv.token})
    assert st == 200 and json.loads(body)["is_paused"] is False, body

    # another session's CSRF token is no good; a made-up session id is no session
    sid2, csrf2, _ = sign_in(http, srv.token)
    assert sid2 != sid and csrf2 != csrf
    st, _, _ = http("PATCH", dag, pause, headers={**ck, **json_ct, "X-CSRF-Token": csrf2})
    assert st == 403
    st, _, _ = http("GET", dag, headers={"Cookie": "dagd_session=" + "0" * 64})
    assert st == 401
    st, _, _ = http("GET", dag, headers={"Cookie": "dagd_session=" + sid[:32]})
    assert st == 401

    # signing out needs the CSRF token too, and ends that session only
    st, _, _ = http("POST", "/ui/sign-out", headers=ck)
    assert st == 403
    st, hd, body = http("POST", "/ui/sign-out", headers={**ck, "X-CSRF-Token": csrf})
    assert st == 200 and json.loads(body) == {"signed_out": True}, body
    assert "max-age=0" in hd["Set-Cookie"].lower(), hd["Set-Cookie"]
    st, _, _ = http("GET", dag, headers=ck)
    assert st == 401
    st, _, _ = http("GET", "/ui/session", headers=ck)
    assert st == 401
    st, _, _ = http("GET", dag, headers={"Cookie": "dagd_session=" + sid2})
    assert st == 200
    assert srv.dag(dg.dag_id)["is_paused"] is False


def test_the_api_tells_log_streams_apart_and_lists_tries(dg):
    """What the UI's task page needs from the API: each try's times and exit code, and the
    log with stdout and stderr told apart (docs/api.md)."""
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", simple_task(
        "t", "echo out-{{ try_number }}; echo err-{{ try_number }} >&2; echo out-again; "
             "[ {{ try_number }} -ge 2 ] || exit 3",
        "    retries: 1\n    retry_delay: 1s\n"
        "    env:\n      MODE: \"fast-{{ try_number }}\"\n      PASSWORD: {secret: \"hunter2-s3cret\"}\n"
        "      ECHO: \"pw is hunter2-s3cret\"\n")), name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    run = srv.trigger(dg.dag_id)["dag_run_id"]
    assert srv.wait_run(dg.dag_id, run, timeout=60)["state"] == "success"
    base = "/dags/%s/runs/%s/tasks/t" % (dg.dag_id, run)
    ti = srv.get(base)
    tries = ti["tries"]
    assert [(x["try_number"], x["state"], x["exit_code"]) for x in tries] == [(1, "failed", 3), (2, "success", 0)], ti
    for x in tries:
        assert x["start_date"] <= x["running_date"] <= x["end_date"], x
        assert x["container_name"], x
    assert tries[0]["end_date"] <= tries[1]["start_date"], tries
    # what each try ran with: the rendered command, the env with secrets hidden
    for n, x in enumerate(tries, 1):
        assert x["command"][:2] == ["sh", "-c"] and "echo out-{{ try_number }}" not in x["command"][2], x
        assert "echo out-%d;" % n in x["command"][2], x
        assert x["env"] == {"MODE": "fast-%d" % n, "PASSWORD": "***", "ECHO": "pw is ***"}, x
    assert "hunter2" not in json.dumps(ti)
    # the plain log is as it was; ?streams=1 prefixes each line with its stream
    st, plain = srv.request("GET", "/api/v1" + base + "/logs/1", raw=True)
    assert st == 200 and sorted(plain.splitlines()) == ["err-1", "out-1", "out-again"], plain
    st, text = srv.request("GET", "/api/v1" + base + "/logs/1?streams=1", raw=True)
    assert st == 200, text
    lines = text.splitlines()
    assert sorted(lines) == ["stderr\terr-1", "stdout\tout-1", "stdout\tout-again"], text
    assert [l.split("\t", 1)[1] for l in lines] == plain.splitlines(), "the same lines in the same order"
    st, text = srv.request("GET", "/api/v1" + base + "/logs/2?streams=true", raw=True)
    assert st == 200 and "stderr\terr-2" in text.splitlines(), text
    for q, want in (("streams=2", 400), ("streams=1&follow=1", 400)):
        st, body = srv.request("GET", "/api/v1" + base + "/logs/1?" + q, raw=True)
        assert st == want and "streams" in body, (q, st, body)
    st, body = srv.request("GET", "/api/v1" + base + "/logs/3?streams=1", raw=True)
    assert st == 404, body
    wait_for("the run's containers to go", lambda: not dg.containers(), 30)


# --------------------------------------------------------------------------- the browser

def _chromium():
    try:
        from selenium import webdriver
    except ImportError:
        return None, "python3-selenium is not installed (make deps)"
    for b in ("chromium", "chromium-browser"):
        if shutil.which(b):
            break
    else:
        return None, "chromium is not installed (make deps)"
    if not shutil.which("chromedriver"):
        return None, "chromium-driver is not installed (make deps)"
    return webdriver, None


@pytest.fixture
def browser(tmp_path):
    webdriver, why = _chromium()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--user-data-dir=%s" % (tmp_path / "chromium")):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    drv.set_script_timeout(10 * TIME_SCALE)
    try:
        yield drv
    finally:
        drv.quit()


class Shots:
    def __init__(self, drv, prefix):
        self.drv = drv
        self.dir = pathlib.Path(os.environ.get("DAGD_UI_SCREENSHOTS") or REPO / "build" / "ui-screenshots")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.n = 0

    def __call__(self, name):
        self.n += 1
        self.drv.save_screenshot(str(self.dir / ("%s-%02d-%s.png" % (self.prefix, self.n, name))))


def css(drv, sel):
    return drv.find_elements("css selector", sel)


def until(what, fn, timeout=20):
    return wait_for(what, lambda: _quiet(fn), timeout, interval=0.2)


def _quiet(fn):
    from selenium.common.exceptions import StaleElementReferenceException, NoSuchElementException
    try:
        return fn()
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def browser_sign_in(drv, srv):
    drv.get("http://127.0.0.1:%d/" % srv.port)
    until("the sign-in form", lambda: css(drv, "#token") and css(drv, "#token")[0].is_displayed())
    drv.find_element("id", "token").send_keys(srv.token + "\n")
    until("the DAG list", lambda: css(drv, "table.dags tbody tr"))


def grid_states(drv, run_id):
    return {c.get_attribute("data-task"): c.get_attribute("data-state")
            for c in css(drv, "#grid a.cell[data-task]") if c.get_attribute("data-run") == run_id}


@pytest.mark.skipif(VALGRIND, reason="a browser driving the UI polls the API for tens of seconds; "
                                     "under valgrind that takes minutes (the HTTP test covers the C side)")
def test_browser_sign_in_list_trigger_grid_graph_log_clear_pause(dg, browser):
    drv = browser
    shot = Shots(drv, "ui")
    dags = dg.tmp / "dags"
    flaky = dg.new_dag_id("flaky")
    dg.write(dag_text("@DAG@", simple_task("extract", "echo count={{ params.count }} label={{ params.label }}"),
                      simple_task("load", "echo loaded; echo warn >&2", "    depends_on: [extract]\n"),
                      head="description: the UI's test DAG\ntags: [ui, test]\nschedule: \"30 6 * * *\"\nstart_date: 2025-01-01\n"
                           "paused: true\nparams:\n  count: 2\n  label: hi\n"),
             name="dags/a.yml", dedent=False)
    dg.write(dag_text(flaky, simple_task("check", "[ {{ try_number }} -ge 2 ] || { echo boom-on-stderr >&2; exit 3; }; "
                                                  "echo fine")), name="dags/flaky.yml", dedent=False)
    broken = dg.write("dag: @DAG@_broken\ntasks:\n  x:\n    image: @IMAGE@\n    comand: [true]\n",
                      name="dags/broken.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    srv.wait_dag(flaky)

    # sign in; the list and the import-errors banner
    browser_sign_in(drv, srv)
    banner = until("the import-errors banner", lambda: css(drv, "#import-errors"))[0]
    assert "%s:5:5" % broken in banner.text and "comand" in banner.text, banner.text
    row = css(drv, 'tr[data-dag="%s"]' % dg.dag_id)[0]
    assert "the UI's test DAG" in row.text and "every day at 06:30" in row.text and "ui" in row.text, row.text
    assert "next:" in row.text, row.text
    shot("list")
    drv.find_element("id", "search").send_keys("flaky")
    until("the search to hide the other DAG",
          lambda: not css(drv, 'tr[data-dag="%s"]' % dg.dag_id)[0].is_displayed()
          and css(drv, 'tr[data-dag="%s"]' % flaky)[0].is_displayed())
    drv.find_element("id", "search").clear()

    # the trigger form from the params
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s/trigger" % (srv.port, dg.dag_id))
    count = until("the trigger form", lambda: css(drv, "#param-count"))[0]
    assert count.get_attribute("type") == "number" and count.get_attribute("value") == "2"
    assert drv.find_element("id", "param-label").get_attribute("value") == "hi"
    count.clear()
    count.send_keys("5")
    drv.find_element("id", "conf").send_keys('{"extra": true}')
    shot("trigger")
    drv.find_element("id", "trigger-submit").click()
    until("the grid after the trigger", lambda: "#/dag/%s" % dg.dag_id == drv.execute_script("return location.hash"))
    runs = wait_for("the run", lambda: srv.runs(dg.dag_id), 10)
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"] == {"count": 5, "label": "hi", "extra": True}, runs[0]
    until("both tasks success in the grid", lambda: grid_states(drv, run_id) == {"extract": "success", "load": "success"},
          timeout=60)
    until("the graph's nodes success",
          lambda: {n.get_attribute("data-task"): n.get_attribute("data-state") for n in css(drv, "#graph g.node")}
          == {"extract": "success", "load": "success"})
    edges = css(drv, "#graph path.edge")
    assert len(edges) >= 1
    ex, lo = (css(drv, '#graph g.node[data-task="%s"]' % t)[0].get_attribute("transform") for t in ("extract", "load"))
    assert float(re.search(r"translate\(([\d.]+)", ex).group(1)) < float(re.search(r"translate\(([\d.]+)", lo).group(1))
    shot("grid-graph")
    # the same in the dark theme (prefers-color-scheme), and the graph is keyboard reachable
    drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    bg = drv.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert bg != "rgb(255, 255, 255)", bg
    shot("grid-graph-dark")
    drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    from selenium.webdriver.common.keys import Keys
    node = css(drv, '#graph g.node[data-task="load"]')[0]
    drv.execute_script("arguments[0].focus()", node)
    drv.switch_to.active_element.send_keys(Keys.ENTER)
    until("Enter on a graph node to open the task",
          lambda: drv.execute_script("return location.hash").endswith("/task/load"))

    # the run's Gantt, a task's output and log
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s/run/%s" % (srv.port, dg.dag_id, run_id))
    until("the Gantt bars", lambda: len(css(drv, "#gantt rect.bar")) == 2 and len(css(drv, "#gantt rect.queued")) == 2)
    shot("gantt")
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s/run/%s/task/extract" % (srv.port, dg.dag_id, run_id))
    until("extract's log", lambda: "count=5 label=hi" in drv.find_element("id", "log").text)
    info = drv.find_element("id", "ti-info").text
    assert "count=5 label=hi" in drv.find_element("id", "ti-output").text, info
    assert "exit code\n0" in info, info
    assert "count={{ params.count }}" not in info and "echo count=5 label=hi" in drv.find_element("id", "ti-command").text
    shot("task")

    # source view with line numbers
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s/source" % (srv.port, dg.dag_id))
    lines = until("the source", lambda: css(drv, "#source li"))
    assert lines[0].text == "dag: " + dg.dag_id
    shot("source")

    # a failed task: its log, clear it, watch it run again
    frun = srv.trigger(flaky)["dag_run_id"]
    srv.wait_run(flaky, frun)
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s" % (srv.port, flaky))
    cell = until("the failed cell", lambda: [c for c in css(drv, "#grid a.cell[data-task]")
                                             if c.get_attribute("data-state") == "failed"])[0]
    assert cell.text == "1"
    cell.click()
    until("the failed try's log", lambda: "boom-on-stderr" in drv.find_element("id", "log").text)
    assert "3" in drv.find_element("id", "exit-code").text
    assert "boom-on-stderr" in css(drv, "#log .stderr")[0].text, "stderr lines are marked as such"
    drv.find_element("id", "log-search").send_keys("boom")
    until("the search to mark the match", lambda: css(drv, "#log mark"))
    shot("failed-task")
    drv.find_element("id", "log-search").clear()
    drv.find_element("id", "clear-task").click()
    # the header dagd wrote first (which image, docs/dags.md "Tries"), then the output
    until("try 2's log on the page", lambda: drv.find_element("id", "log").text.splitlines()[-1:] == ["fine"],
          timeout=60)
    head = drv.find_element("id", "log").text.splitlines()
    assert len(head) == 2 and head[0].startswith("[dagd] image ") and " (id sha256:" in head[0], head
    until("the task page to show success", lambda: "success" in drv.find_element("id", "ti-info").text)
    assert srv.tis(flaky, frun)["check"]["try_number"] == 2
    opts = [o.text for o in css(drv, "#try-select option")]
    assert opts == ["try 1", "try 2"], opts
    shot("rerun-task")
    drv.get("http://127.0.0.1:%d/ui/#/dag/%s/run/%s" % (srv.port, flaky, frun))
    bars = until("both tries in the Gantt", lambda: len(css(drv, "#gantt g.node[data-try]")) == 2
                 and css(drv, "#gantt g.node[data-try]"))
    assert [b.get_attribute("class") for b in bars] == ["node st-failed", "node st-success"]
    xs = [float(b.find_element("css selector", "rect").get_attribute("x")) for b in bars]
    assert 150 <= xs[0] < xs[1], "both tries inside the chart, in order: %r" % xs
    shot("rerun-gantt")

    # pause from the list; a bad CSRF token is refused in the browser too
    drv.get("http://127.0.0.1:%d/ui/#/" % srv.port)
    toggle = until("the pause toggle", lambda: css(drv, 'tr[data-dag="%s"] input.pause-toggle' % flaky))[0]
    assert not toggle.is_selected()
    toggle.click()
    wait_for("the DAG to be paused", lambda: srv.dag(flaky)["is_paused"] is True, 10)
    shot("paused")
    assert drv.execute_script("return document.cookie") == "", "the session cookie is HttpOnly"
    st = drv.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/dags/%s', {method: 'PATCH', headers: {'Content-Type': 'application/json',
              'X-CSRF-Token': 'bad'}, body: '{"is_paused": false}'}).then(r => done(r.status));""" % flaky)
    assert st == 403
    assert srv.dag(flaky)["is_paused"] is True

    # phone width still shows the list; sign out ends the session
    drv.set_window_size(390, 844)
    shot("phone-list")
    drv.set_window_size(1280, 900)
    drv.find_element("id", "sign-out").click()
    until("the sign-in form again", lambda: drv.find_element("id", "token").is_displayed())
    st = drv.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/dags').then(r => done(r.status));""")
    assert st == 401
    wait_for("the runs' containers to go", lambda: not dg.containers(), 30)
