/* yaml — YAML text to a marked node tree with libyaml's event parser (see include/dagd/yaml.h).
 * Aliases are copied under a node budget against "billion laughs"; sizes and depth are
 * bounded so that no input can crash a reader. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "dagd/yaml.h"

#define MAX_NODES 1000000
#define MAX_DEPTH 100

typedef struct anchor {
    char *name;
    dg_ynode *node;
} anchor;

typedef struct builder {
    const char *file;
    dg_diags *diags;
    const char *text;
    dg_ynode **stack;
    size_t depth;
    anchor *anchors;
    size_t n_anchors;
    size_t n_nodes;
    dg_ynode *root;
    size_t n_hints; /* hints looked for in the text, which is slow: a few are enough */
    bool failed;
} builder;

static void fail(builder *b, int line, int col, const char *fmt, ...) _printf_(4, 5);
static void fail(builder *b, int line, int col, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) abort();
    va_end(ap);
    dg_diags_add(b->diags, b->file, line, col, "%s", msg);
    free(msg);
    b->failed = true;
}

void dg_ynode_free(dg_ynode *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) dg_ynode_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n->anchor);
    free(n);
}

static dg_ynode *node_new(builder *b, dg_ytype type, yaml_mark_t m) {
    if (++b->n_nodes > MAX_NODES) {
        fail(b, (int)m.line + 1, (int)m.column + 1,
             "document too large (more than %d YAML nodes)", MAX_NODES);
        return NULL;
    }
    dg_ynode *n = xcalloc(1, sizeof *n);
    n->type = type;
    n->line = (int)m.line + 1;
    n->col = (int)m.column + 1;
    return n;
}

static void add_kid(dg_ynode *parent, dg_ynode *kid) {
    if ((parent->n & (parent->n - 1)) == 0) /* grow at powers of two */
        parent->kids = xrealloc(parent->kids, (parent->n ? parent->n * 2 : 1) * sizeof(kid));
    parent->kids[parent->n++] = kid;
}

static void attach(builder *b, dg_ynode *n) {
    if (b->depth == 0) {
        b->root = n;
        return;
    }
    add_kid(b->stack[b->depth - 1], n);
}

static void add_anchor(builder *b, const char *name, dg_ynode *n) {
    b->anchors = xrealloc(b->anchors, (b->n_anchors + 1) * sizeof(anchor));
    b->anchors[b->n_anchors++] = (anchor){xstrdup(name), n};
}

/* An alias becomes its own copy so the tree stays a tree; marks point at the alias. */
static dg_ynode *copy_node(builder *b, const dg_ynode *src, int line, int col, size_t level) {
    if (level > MAX_DEPTH) {
        fail(b, line, col, "nesting too deep (more than %d levels)", MAX_DEPTH);
        return NULL;
    }
    if (++b->n_nodes > MAX_NODES) {
        fail(b, line, col, "document too large (aliases expand to more than %d YAML nodes)",
             MAX_NODES);
        return NULL;
    }
    dg_ynode *n = xcalloc(1, sizeof *n);
    n->type = src->type;
    n->line = line;
    n->col = col;
    n->quoted = src->quoted;
    n->str = xstrdup(src->str);
    if (src->n) {
        n->kids = xcalloc(src->n, sizeof(dg_ynode *));
        for (size_t i = 0; i < src->n; i++) {
            n->kids[i] = copy_node(b, src->kids[i], line, col, level + 1);
            if (!n->kids[i]) break;
            n->n = i + 1;
        }
    }
    if (b->failed) {
        dg_ynode_free(n);
        return NULL;
    }
    return n;
}

/* The text at a 1-based line and column (columns count characters), or NULL. */
static const char *text_at(const char *text, int line, int col) {
    const char *s = text;
    for (int l = 1; l < line; l++) {
        s = strchr(s, '\n');
        if (!s) return NULL;
        s++;
    }
    for (int c = 1; c < col && *s && *s != '\n'; c++) {
        s++;
        while (((unsigned char)*s & 0xc0) == 0x80) s++;
    }
    return s;
}

/* The value at `value` quoted, as `"@daily"`, or as `schedule: "@daily"` when it is the
 * whole value of a `key: value` line; the value ends at `end`, else at a comment, at the
 * line's end or, inside [ ] or { }, at the next item. NULL when it cannot be quoted simply. */
static char *quoted_example(const char *line, const char *value, const char *end) {
    const char *k = line;
    while (*k == ' ') k++;
    if (k[0] == '-' && k[1] == ' ') k += 2;
    if (value < k) return NULL;
    size_t plen = (size_t)(value - k);
    bool flow = memchr(k, '[', plen) || memchr(k, '{', plen);
    bool keyed = plen > 2 && !flow && k[plen - 2] == ':' && k[plen - 1] == ' ' && !memchr(k, '"', plen) &&
                 !memchr(k, '\'', plen);
    if (!end) {
        end = value + strcspn(value, flow ? "\n,]}" : "\n");
        const char *hash = strstr(value, " #");
        if (hash && hash < end) end = hash;
    }
    while (end > value && (end[-1] == ' ' || end[-1] == '\r')) end--;
    if (end == value) return NULL;
    size_t vlen = (size_t)(end - value);
    char q = memchr(value, '"', vlen) ? '\'' : '"';
    if (q == '\'' && memchr(value, '\'', vlen)) return NULL;
    return xasprintf("%.*s%c%.*s%c", keyed ? (int)plen : 0, k, q, (int)vlen, value, q);
}

static int cmp_key(const void *a, const void *b) {
    const dg_ynode *x = *(dg_ynode *const *)a, *y = *(dg_ynode *const *)b;
    int r = strcmp(x->str, y->str);
    if (r) return r;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : (x->col < y->col ? -1 : x->col > y->col);
}

/* Called when a mapping closes; tasks_map says it is the value of the top-level `tasks`. */
static void check_keys(builder *b, dg_ynode *map, bool tasks_map) {
    size_t n = map->n / 2, k = 0;
    _cleanup_free_ dg_ynode **keys = xcalloc(n ? n : 1, sizeof(dg_ynode *));
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        dg_ynode *key = map->kids[i];
        if (key->type != DG_YSCALAR) {
            /* `command: {{ ds }}` is a mapping whose key is a mapping */
            const char *at =
                key->type == DG_YMAP && b->n_hints++ < 20 ? text_at(b->text, map->line, map->col) : NULL;
            const char *close = at && strncmp(at, "{{", 2) == 0 ? strstr(at, "}}") : NULL;
            if (close && memchr(at, '\n', (size_t)(close - at))) close = NULL;
            _cleanup_free_ char *ex = close ? quoted_example(at, at, close + 2) : NULL;
            if (close)
                dg_diags_add(b->diags, b->file, map->line, map->col,
                             "a value that starts with '{{' must be quoted (YAML reads {{ ... }} as a "
                             "mapping)%s%s", ex ? ": " : "", ex ? ex : "");
            else
                dg_diags_add(b->diags, b->file, key->line, key->col,
                             "mapping keys must be strings, not %s",
                             key->type == DG_YMAP ? "mappings" : "lists");
            continue;
        }
        keys[k++] = key;
    }
    qsort(keys, k, sizeof(dg_ynode *), cmp_key);
    for (size_t i = 1; i < k; i++) {
        if (strcmp(keys[i]->str, keys[i - 1]->str) != 0) continue;
        size_t first = i - 1;
        while (first > 0 && strcmp(keys[first - 1]->str, keys[i]->str) == 0) first--;
        keys[i]->dup = true;
        dg_diags_add(b->diags, b->file, keys[i]->line, keys[i]->col,
                     "duplicate %s '%.200s' (first defined at line %d)",
                     tasks_map ? "task id" : "key", keys[i]->str, keys[first]->line);
    }
}

static void reader_mark(const char *text, size_t offset, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < offset && text[i]; i++) {
        if (text[i] == '\n') l++, c = 1;
        else if (((unsigned char)text[i] & 0xc0) != 0x80) c++;
    }
    *line = l, *col = c;
}

/* libyaml says what it found, not why it is there. These are the usual causes. */
static char *syntax_hint(const builder *b, const yaml_parser_t *p, int line, int col) {
    const char *ls = text_at(b->text, line, 1), *at = text_at(b->text, line, col);
    if (!ls || !at) return NULL;
    for (const char *s = ls; *s == ' ' || *s == '\t'; s++)
        if (*s == '\t') return xasprintf("line %d is indented with a tab; YAML indents with spaces only", line);
    const char *problem = p->problem ? p->problem : "";
    if (strstr(problem, "cannot start any token") && (*at == '@' || *at == '`' || *at == '%')) {
        _cleanup_free_ char *ex = quoted_example(ls, at, NULL);
        return xasprintf("a value that starts with '%c' must be quoted%s%s", *at, ex ? ": " : "", ex ? ex : "");
    }
    const char *colon = strstr(ls, ": ");
    if (strstr(problem, "mapping values are not allowed") && colon && colon < at) {
        _cleanup_free_ char *ex = quoted_example(ls, colon + 2, NULL);
        return xasprintf("a value that contains ': ' must be quoted%s%s", ex ? ": " : "", ex ? ex : "");
    }
    /* a key out of line with the keys above it */
    size_t indent = strspn(ls, " ");
    bool at_key = at == ls + indent || (strstr(problem, "mapping values") && colon && colon == at);
    if (at_key && (strstr(problem, "mapping values") || strstr(problem, "expected key"))) {
        const char *pl = ls;
        for (int l = line - 1; l >= 1; l--) { /* the line above that holds something */
            for (pl--; pl > b->text && pl[-1] != '\n'; pl--)
                ;
            size_t pi = strspn(pl, " ");
            if (pl[pi] == '\n' || pl[pi] == '#' || pl[pi] == '\r' || !pl[pi]) continue;
            if (pi == indent) break;
            return xasprintf("line %d is indented %s than line %d: the keys of one mapping line up", line,
                             indent > pi ? "deeper" : "less", l);
        }
    }
    return NULL;
}

static void parser_error(builder *b, yaml_parser_t *p) {
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        reader_mark(b->text, p->problem_offset, &line, &col);
        if (p->problem && strstr(p->problem, "invalid"))
            fail(b, line, col, "invalid UTF-8 (%s)", p->problem);
        else
            fail(b, line, col, "not a text file: %s", p->problem ? p->problem : "unreadable input");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR) abort();
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
    _cleanup_free_ char *hint = syntax_hint(b, p, line, col);
    if (hint)
        fail(b, line, col, "YAML syntax error: %s (%s)", p->problem ? p->problem : "error", hint);
    else if (p->context)
        fail(b, line, col, "YAML syntax error: %s (%s started at line %d)",
             p->problem ? p->problem : "error", p->context, (int)p->context_mark.line + 1);
    else
        fail(b, line, col, "YAML syntax error: %s", p->problem ? p->problem : "error");
}

static void on_scalar(builder *b, yaml_event_t *ev) {
    dg_ynode *n = node_new(b, DG_YSCALAR, ev->start_mark);
    if (!n) return;
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(v, 0, len))
        dg_diags_add(b->diags, b->file, n->line, n->col, "strings must not contain NUL characters");
    n->str = xstrndup(v, len);
    const char *tag = (const char *)ev->data.scalar.tag;
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                (tag && strcmp(tag, "tag:yaml.org,2002:str") == 0);
    if (ev->data.scalar.anchor) add_anchor(b, (const char *)ev->data.scalar.anchor, n);
    attach(b, n);
}

static void on_start(builder *b, yaml_event_t *ev, dg_ytype type, const yaml_char_t *anc) {
    if (b->depth >= MAX_DEPTH) {
        fail(b, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
             "nesting too deep (more than %d levels)", MAX_DEPTH);
        return;
    }
    dg_ynode *n = node_new(b, type, ev->start_mark);
    if (!n) return;
    n->anchor = anc ? xstrdup((const char *)anc) : NULL;
    if ((b->depth & (b->depth - 1)) == 0)
        b->stack = xrealloc(b->stack, (b->depth ? b->depth * 2 : 1) * sizeof(dg_ynode *));
    b->stack[b->depth++] = n;
}

static void on_end(builder *b) {
    if (b->depth == 0) return;
    dg_ynode *n = b->stack[b->depth - 1];
    if (n->type == DG_YMAP) {
        bool tasks_map = false;
        if (b->depth == 2) {
            const dg_ynode *root = b->stack[0];
            const dg_ynode *key = root->n % 2 == 1 ? root->kids[root->n - 1] : NULL;
            tasks_map = key && key->type == DG_YSCALAR && strcmp(key->str, "tasks") == 0;
        }
        check_keys(b, n, tasks_map);
    }
    b->depth--;
    if (n->anchor) {
        add_anchor(b, n->anchor, n);
        free(n->anchor);
        n->anchor = NULL;
    }
    attach(b, n);
}

static void on_alias(builder *b, yaml_event_t *ev) {
    const char *name = (const char *)ev->data.alias.anchor;
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    for (size_t i = b->n_anchors; i > 0; i--) {
        if (strcmp(b->anchors[i - 1].name, name) != 0) continue;
        dg_ynode *n = copy_node(b, b->anchors[i - 1].node, line, col, b->depth);
        if (n) attach(b, n);
        return;
    }
    for (size_t i = 0; i < b->depth; i++)
        if (b->stack[i]->anchor && strcmp(b->stack[i]->anchor, name) == 0) {
            fail(b, line, col, "alias '*%.100s' refers to a node that contains it", name);
            return;
        }
    fail(b, line, col, "unknown alias '*%.100s'", name);
}

dg_ynode *dg_yaml_parse(const char *file, const char *text, size_t len, dg_diags *diags) {
    builder b = {.file = file, .diags = diags, .text = text};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) abort();
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int docs = 0;
    bool done = false;
    while (!done && !b.failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            parser_error(&b, &p);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                fail(&b, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                     "only one YAML document per file");
            break;
        case YAML_SCALAR_EVENT:
            on_scalar(&b, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            on_start(&b, &ev, DG_YSEQ, ev.data.sequence_start.anchor);
            break;
        case YAML_MAPPING_START_EVENT:
            on_start(&b, &ev, DG_YMAP, ev.data.mapping_start.anchor);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            on_end(&b);
            break;
        case YAML_ALIAS_EVENT:
            on_alias(&b, &ev);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (size_t i = 0; i < b.depth; i++) dg_ynode_free(b.stack[i]);
    free(b.stack);
    for (size_t i = 0; i < b.n_anchors; i++) free(b.anchors[i].name);
    free(b.anchors);
    if (!b.failed && (!b.root || (b.root->type == DG_YSCALAR && !b.root->quoted &&
                                  (!*b.root->str || strcmp(b.root->str, "~") == 0 ||
                                   strcmp(b.root->str, "null") == 0))))
        fail(&b, 1, 1, "file is empty (expected a mapping with 'dag' and 'tasks')");
    if (b.failed) {
        dg_ynode_free(b.root);
        return NULL;
    }
    return b.root;
}
