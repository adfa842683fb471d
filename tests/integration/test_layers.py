"""The include-layer check (docs/architecture.md, "The layer check"): it fails on a tree
with wrong includes, naming each one, and passes on one that follows the table. The
fixtures are checked against the real table in docs/architecture.md. No Docker needed.
"""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYERS = REPO / "tests" / "layers"
CHECKER = LAYERS / "check_layers.py"
DOC = REPO / "docs" / "architecture.md"

SERVER_DEPS = "server: util log cron store config dag sched exec runtime"

BAD = [
    "include/dagd/exec.h:2: exec may not include dagd/docker.h"
    " (exec: util log dag sched store tmpl backend)",
    "include/dagd/widget.h: no module widget in the table for this header",
    "src/api/api.c:3: api may not include <systemd/sd-daemon.h> (only log)",
    "src/backend/local/local.c:2: backend/local may not include dagd/exec.h"
    " (backend/local: util backend docker log)",
    'src/exec/exec.c:3: "missing.h" is not a header in src/exec/',
    "src/gadget: unknown module gadget (add it to the table in docs/architecture.md)",
    "src/helpers.c: not in a module folder (only main.c lives directly in src/)",
    "src/sched/sched.c:3: sched may not include <sqlite3.h> (only store)",
    "src/server/server.c:2: server may not include dagd/api.h (%s)" % SERVER_DEPS,
    'src/server/views.c:3: server may not include "../exec/exec_internal.h"'
    " (a private header of exec; a module's private headers are its own)",
]


def check(root, table=DOC, *extra):
    args = [sys.executable, str(CHECKER)]
    if table is not None:
        args += ["--table", str(table)]
    return subprocess.run(args + list(extra) + [str(root)], capture_output=True, text=True, timeout=60)


def test_bad_fixture_fails_naming_each_violation():
    p = check(LAYERS / "fixture_bad")
    assert p.returncode == 1, p
    assert p.stdout.splitlines() == BAD
    assert "10 violations" in p.stderr


def test_good_fixture_passes():
    p = check(LAYERS / "fixture_good")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("layers: ok")


def test_the_tables_are_read_from_the_document(tmp_path):
    """Allowing backend/local -> exec and sched -> <sqlite3.h> in the document is all it
    takes for those two lines to go."""
    text = DOC.read_text()
    changed = text.replace("\nbackend/local:  util backend docker log\n",
                           "\nbackend/local:  util backend docker log exec\n")
    changed = changed.replace("<sqlite3.h>:         store", "<sqlite3.h>:         store sched")
    assert changed.count("exec\n") > text.count("exec\n") and "store sched" in changed
    doc = tmp_path / "architecture.md"
    doc.write_text(changed)
    p = check(LAYERS / "fixture_bad", doc)
    assert p.returncode == 1, p
    gone = ("src/backend/local/local.c:", "src/sched/sched.c:")
    assert p.stdout.splitlines() == [l for l in BAD if not l.startswith(gone)]


def test_root_docs_architecture_is_the_default(tmp_path):
    root = tmp_path / "tree"
    (root / "src" / "util").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "docs" / "architecture.md").write_text(DOC.read_text())
    (root / "src" / "util" / "util.c").write_text('#include "dagd/util.h"\n#include <sqlite3.h>\n')
    p = check(root, None)
    assert p.returncode == 1, p
    assert p.stdout.splitlines() == ["src/util/util.c:2: util may not include <sqlite3.h> (only store)"]


def test_usage_and_table_errors(tmp_path):
    p = subprocess.run([sys.executable, str(CHECKER)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert check(tmp_path / "nowhere").returncode == 2

    root = LAYERS / "fixture_good"
    text = DOC.read_text()
    cases = {
        "no marker": text.replace("<!-- layers: the include check reads this table -->", ""),
        "unknown module": text.replace("\nsched:          util dag\n", "\nsched:          util dag nosuch\n"),
        "cycle": text.replace("\nyaml:           util\n", "\nyaml:           util config\n"),
        "self": text.replace("\nlog:            util\n", "\nlog:            util log\n"),
        "fenced header for no module": text.replace("<sqlite3.h>:         store", "<sqlite3.h>:         nosuch"),
    }
    for what, doc_text in cases.items():
        assert doc_text != text, what
        doc = tmp_path / ("%s.md" % what.replace(" ", "_"))
        doc.write_text(doc_text)
        p = check(root, doc)
        assert p.returncode == 2, (what, p)
        assert p.stdout == "", what
        assert "check_layers.py: " in p.stderr, what
