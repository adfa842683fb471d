#!/usr/bin/env python3
"""The include-layer check (docs/architecture.md, "The layer check").

    check_layers.py [--table FILE] ROOT

Reads the module table and the fenced-header table from FILE (default
ROOT/docs/architecture.md), then every #include of ROOT/src/**/*.c, ROOT/src/**/*.h and
ROOT/include/dagd/*.h, and prints one line per include that breaks a rule, sorted:

    src/server/server.c:12: server may not include dagd/api.h (server: util log ...)

Exit status: 0 clean, 1 violations, 2 usage error or a table that cannot be used.
Python 3 standard library only.
"""
import argparse
import fnmatch
import os
import re
import sys

MODULE_MARKER = "<!-- layers: the include check reads this table -->"
HEADER_MARKER = "<!-- layers: the include check reads this table of fenced headers -->"

MODULE_RE = re.compile(r"^([a-z][a-z0-9_]*(?:/[a-z][a-z0-9_]*)*)\s*:\s*(.*?)\s*$")
HEADER_RE = re.compile(r"^<([^<>\s]+)>\s*:\s*(.*?)\s*$")
INCLUDE_RE = re.compile(r"^\s*#\s*include\b\s*(.*?)\s*$")
QUOTED_RE = re.compile(r'^"([^"]+)"')
ANGLED_RE = re.compile(r"^<([^>]+)>")


class TableError(Exception):
    pass


# ---- the tables in the document ----

def fenced_block(lines, marker, doc):
    """The lines of the first fenced block after the marker line, as (lineno, text)."""
    for i, line in enumerate(lines):
        if line.strip() == marker:
            break
    else:
        raise TableError("%s: no line %s" % (doc, marker))
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j >= len(lines) or not lines[j].lstrip().startswith("```"):
        raise TableError("%s:%d: a fenced block (```) must follow the marker line" % (doc, i + 1))
    out = []
    for k in range(j + 1, len(lines)):
        if lines[k].lstrip().startswith("```"):
            return out
        out.append((k + 1, lines[k]))
    raise TableError("%s:%d: the fenced block is not closed" % (doc, j + 1))


def split_deps(text):
    words = text.split()
    return [] if words == ["(none)"] else words


def parse_tables(doc):
    """Returns (modules, headers): modules maps a module to the list of modules it may
    use, in table order; headers is a list of (pattern, list of modules) for the fenced
    third-party headers."""
    try:
        with open(doc, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise TableError("%s: %s" % (doc, e.strerror))

    modules, where = {}, {}
    for n, line in fenced_block(lines, MODULE_MARKER, doc):
        if not line.strip():
            continue
        m = MODULE_RE.match(line)
        if not m:
            raise TableError("%s:%d: not a 'module: deps' line: %s" % (doc, n, line.strip()))
        name, deps = m.group(1), split_deps(m.group(2))
        if name in modules:
            raise TableError("%s:%d: %s is listed twice" % (doc, n, name))
        if "(none)" in deps:
            raise TableError("%s:%d: (none) stands alone" % (doc, n))
        modules[name], where[name] = deps, n
    if not modules:
        raise TableError("%s: the module table is empty" % doc)

    seen_headers = {}
    for name, n in where.items():
        if len(set(modules[name])) != len(modules[name]):
            raise TableError("%s:%d: %s lists a module twice" % (doc, n, name))
        for dep in modules[name]:
            if dep == name:
                raise TableError("%s:%d: %s lists itself" % (doc, n, name))
            if dep not in modules:
                raise TableError("%s:%d: %s lists %s, which is not a module" % (doc, n, name, dep))
        h = public_header(name)
        if h in seen_headers:
            raise TableError("%s:%d: %s and %s would share the header %s"
                             % (doc, n, seen_headers[h], name, h))
        seen_headers[h] = name

    cycle = find_cycle(modules)
    if cycle:
        raise TableError("%s: the table has a cycle: %s" % (doc, " -> ".join(cycle)))

    headers = []
    for n, line in fenced_block(lines, HEADER_MARKER, doc):
        if not line.strip():
            continue
        m = HEADER_RE.match(line)
        if not m:
            raise TableError("%s:%d: not a '<header>: modules' line: %s" % (doc, n, line.strip()))
        users = split_deps(m.group(2))
        for u in users:
            if u not in modules:
                raise TableError("%s:%d: <%s> names %s, which is not a module" % (doc, n, m.group(1), u))
        headers.append((m.group(1), users))
    return modules, headers


def find_cycle(modules):
    """A dependency cycle as a list of modules (first = last), or None."""
    done, stack = set(), []

    def visit(m):
        stack.append(m)
        for d in sorted(modules[m]):
            if d in stack:
                return stack[stack.index(d):] + [d]
            if d not in done:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        done.add(m)
        return None

    for m in sorted(modules):
        if m not in done:
            c = visit(m)
            if c:
                return c
    return None


def public_header(module):
    """backend/local -> dagd/backend_local.h"""
    return "dagd/%s.h" % module.replace("/", "_")


# ---- reading includes ----

def strip_comments(text):
    """The text with every comment replaced by spaces (newlines kept, so line numbers
    stay); string and character literals are left alone."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def includes(path):
    """(lineno, kind, name) for each #include; kind is '"', '<' or '?' (unreadable)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = strip_comments(f.read())
    for n, line in enumerate(text.split("\n"), 1):
        m = INCLUDE_RE.match(line)
        if not m:
            continue
        rest = m.group(1)
        q, a = QUOTED_RE.match(rest), ANGLED_RE.match(rest)
        if q:
            yield n, '"', q.group(1)
        elif a:
            yield n, "<", a.group(1)
        else:
            yield n, "?", rest


def source_files(root):
    """(relative path, 'src' | 'include') of every file the check reads, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "src")):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".c", ".h")):
                files.append((rel(root, os.path.join(dirpath, name)), "src"))
    inc = os.path.join(root, "include", "dagd")
    if os.path.isdir(inc):
        for name in sorted(os.listdir(inc)):
            if name.endswith(".h") and os.path.isfile(os.path.join(inc, name)):
                files.append(("include/dagd/" + name, "include"))
    return files


def rel(root, path):
    return os.path.relpath(path, root).replace(os.sep, "/")


# ---- the rules ----

def check(root, modules, headers):
    """Returns the violations as (path, line, message), line 0 for a whole file/folder."""
    by_header = {public_header(m): m for m in modules}
    found = []
    unknown_folders = set()

    def allowed_list(m):
        deps = modules[m]
        return "%s: %s" % (m, " ".join(deps) if deps else "none")

    for path, area in source_files(root):
        folder = os.path.dirname(path)  # "src/exec", "include/dagd"
        if area == "src":
            sub = folder[len("src/"):] if folder != "src" else ""
            if sub == "" and os.path.basename(path) == "main.c":
                module = "main"
            elif sub == "":
                found.append((path, 0, "not in a module folder (only main.c lives directly in src/)"))
                module = None
            else:
                module = sub
        else:
            name = os.path.basename(path)[:-2]
            module = by_header.get("dagd/%s.h" % name)
            if module is None:
                found.append((path, 0, "no module %s in the table for this header" % name))
        if module is not None and module not in modules:
            if module not in unknown_folders:
                unknown_folders.add(module)
                found.append((folder, 0, "unknown module %s (add it to the table in docs/architecture.md)"
                              % module))
            module_known = False
        else:
            module_known = module is not None

        for n, kind, name in includes(os.path.join(root, path)):
            who = module or path
            if kind == "?":
                found.append((path, n, "an include the check cannot read: #include %s" % name))
                continue
            if kind == "<" and not name.startswith("dagd/"):
                for pattern, users in headers:
                    if fnmatch.fnmatchcase(name, pattern) and module not in users:
                        found.append((path, n, "%s may not include <%s> (only %s)"
                                      % (who, name, " ".join(users) or "no module")))
                        break
                continue
            if name.startswith("dagd/"):
                target = by_header.get(name)
                if target is None:
                    found.append((path, n, "%s is no module's public header" % name))
                elif module_known and target != module and target not in modules[module]:
                    found.append((path, n, "%s may not include %s (%s)" % (module, name, allowed_list(module))))
                continue
            # A private header: it must be in the includer's own folder.
            if area == "include":
                found.append((path, n, 'a public header includes project headers as "dagd/<module>.h", not "%s"'
                              % name))
                continue
            target = os.path.normpath(os.path.join(folder, name)).replace(os.sep, "/")
            tdir = os.path.dirname(target)
            if tdir != folder:
                if target.startswith("src/") and tdir != "src":
                    owner = "a private header of %s" % tdir[len("src/"):]
                elif target.startswith("include/dagd/"):
                    owner = 'a public header: include it as "dagd/%s"' % os.path.basename(target)
                else:
                    owner = "outside %s/" % folder
                found.append((path, n, '%s may not include "%s" (%s; a module\'s private headers are its own)'
                              % (who, name, owner)))
            elif not os.path.isfile(os.path.join(root, target)):
                found.append((path, n, '"%s" is not a header in %s/' % (name, folder)))
    return sorted(set(found))


def main(argv):
    ap = argparse.ArgumentParser(
        prog="check_layers.py",
        description="Check that every #include follows the layer table of docs/architecture.md.")
    ap.add_argument("--table", metavar="FILE",
                    help="the document holding the tables (default ROOT/docs/architecture.md)")
    ap.add_argument("root", metavar="ROOT", help="the source tree (holding src/ and include/dagd/)")
    args = ap.parse_args(argv)

    if not os.path.isdir(os.path.join(args.root, "src")):
        print("check_layers.py: %s has no src/ folder" % args.root, file=sys.stderr)
        return 2
    doc = os.path.normpath(args.table or os.path.join(args.root, "docs", "architecture.md"))
    try:
        modules, headers = parse_tables(doc)
    except TableError as e:
        print("check_layers.py: %s" % e, file=sys.stderr)
        return 2

    found = check(args.root, modules, headers)
    for path, line, msg in found:
        print("%s:%d: %s" % (path, line, msg) if line else "%s: %s" % (path, msg))
    if found:
        print("layers: %d violation%s of the table in %s"
              % (len(found), "" if len(found) == 1 else "s", doc), file=sys.stderr)
        return 1
    print("layers: ok (%d files, %d modules)" % (len(source_files(args.root)), len(modules)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
