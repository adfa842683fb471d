"""A stand-in for the RappelConso records API, serving the sample records of
sample_records.json (invented values, see its _comment) on a machine that cannot reach the
public API. It answers the one endpoint the producer uses the way the public Opendatasoft
"explore v2.1" API does:

    GET /api/explore/v2.1/catalog/datasets/rappelconso0/records
        ?limit=N (1..100, default 10) &offset=N &where=ODSQL &order_by=FIELD [asc|desc]
    -> 200 {"total_count": <matches>, "results": [<record>, ...]}

`where` takes the part of ODSQL a daily extract needs: comparisons of a field with a
string or date literal (=, !=, <, <=, >, >=; "text", 'text' or date'YYYY-MM-DD'), joined by
AND. Anything else is answered 400 with {"error_code": ..., "message": ...}, as the
public API answers a bad query, and offset + limit beyond 10000 too.

Run: python3 sample_api.py [--port 8000] [--records sample_records.json]
"""
import argparse
import http.server
import json
import os
import re
import sys
import urllib.parse

PATH = "/api/explore/v2.1/catalog/datasets/rappelconso0/records"
MAX_LIMIT = 100
MAX_WINDOW = 10000

TOKEN = re.compile(r"""\s*(?:
    (?P<date>date'(?P<dval>[^']*)')
  | "(?P<dq>[^"]*)"
  | '(?P<sq>[^']*)'
  | (?P<op><=|>=|!=|=|<|>)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>-?[0-9]+)
)""", re.X)


class QueryError(Exception):
    pass


def parse_where(text, fields):
    """ODSQL `a = 'x' AND b >= date'2024-01-01'` -> [(field, op, value), ...]."""
    toks, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError("ODSQL syntax error near %r" % text[pos:pos + 20])
        pos = m.end()
        if m.group("date") is not None:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.group("dval")):
                raise QueryError("invalid date literal date'%s'" % m.group("dval"))
            toks.append(("lit", m.group("dval")))
        elif m.group("dq") is not None or m.group("sq") is not None:
            toks.append(("lit", m.group("dq") if m.group("dq") is not None else m.group("sq")))
        elif m.group("op"):
            toks.append(("op", m.group("op")))
        elif m.group("num"):
            toks.append(("lit", m.group("num")))
        else:
            toks.append(("word", m.group("word")))
    conds = []
    i = 0
    while True:
        if i + 3 > len(toks) or toks[i][0] != "word" or toks[i + 1][0] != "op" or toks[i + 2][0] != "lit":
            raise QueryError("ODSQL: expected `field <op> literal` in where=%r" % text)
        field = toks[i][1]
        if field not in fields:
            raise QueryError("Unknown field: %s" % field)
        conds.append((field, toks[i + 1][1], toks[i + 2][1]))
        i += 3
        if i == len(toks):
            return conds
        if toks[i][0] != "word" or toks[i][1].lower() != "and":
            raise QueryError("ODSQL: only AND joins conditions here, got %r" % (toks[i][1],))
        i += 1


def matches(rec, conds):
    for field, op, val in conds:
        v = rec.get(field)
        if v is None:
            return False
        v = str(v)
        ok = {"=": v == val, "!=": v != val, "<": v < val, "<=": v <= val,
              ">": v > val, ">=": v >= val}[op]
        if not ok:
            return False
    return True


def int_arg(q, name, default, lo, hi):
    raw = q.get(name, [str(default)])[-1]
    try:
        n = int(raw)
    except ValueError:
        raise QueryError("Invalid value for %s: %r is not an integer" % (name, raw))
    if not lo <= n <= hi:
        raise QueryError("Invalid value for %s: %d (must be between %d and %d)" % (name, n, lo, hi))
    return n


def query(records, fields, q):
    limit = int_arg(q, "limit", 10, -1, MAX_LIMIT)
    if limit == -1:
        limit = MAX_LIMIT
    offset = int_arg(q, "offset", 0, 0, MAX_WINDOW)
    if offset + limit > MAX_WINDOW:
        raise QueryError("Invalid value for offset + limit: must be at most %d" % MAX_WINDOW)
    rows = records
    if q.get("where"):
        conds = []
        for w in q["where"]:  # several where= parameters are ANDed
            conds += parse_where(w, fields)
        rows = [r for r in rows if matches(r, conds)]
    if q.get("order_by"):
        keys = []
        for part in reversed(",".join(q["order_by"]).split(",")):
            words = part.split()
            if not words or len(words) > 2 or words[0] not in fields or (
                    len(words) == 2 and words[1].lower() not in ("asc", "desc")):
                raise QueryError("Invalid order_by: %r" % part.strip())
            keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        rows = list(rows)
        for field, desc in keys:  # stable sorts, last key first
            rows.sort(key=lambda r: (r.get(field) is None, str(r.get(field))), reverse=desc)
    return {"total_count": len(rows), "results": rows[offset:offset + limit]}


def make_handler(records, fields):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "rappelconso-sample/1"

        def send_json(self, code, body):
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path.rstrip("/") != PATH:
                self.send_json(404, {"error_code": "NotFound", "message": "no such endpoint: %s" % url.path})
                return
            try:
                q = urllib.parse.parse_qs(url.query, keep_blank_values=False, strict_parsing=False)
                self.send_json(200, query(records, fields, q))
            except QueryError as e:
                self.send_json(400, {"error_code": "ODSQLError", "message": str(e)})

        def log_message(self, fmt, *args):
            sys.stderr.write("sample-api: %s %s\n" % (self.address_string(), fmt % args))

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--records", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "sample_records.json"))
    a = ap.parse_args()
    with open(a.records, encoding="utf-8") as f:
        records = json.load(f)["records"]
    fields = set()
    for r in records:
        fields.update(r)
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", a.port), make_handler(records, fields))
    print("sample-api: %d sample records on :%d%s" % (len(records), a.port, PATH), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
