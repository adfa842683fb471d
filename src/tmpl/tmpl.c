/* tmpl — the `{{ expr }}` renderer of docs/dags.md, written by hand.
 *
 * A template is text with `{{ … }}` blocks. Each block is lexed and parsed into a small
 * tree (names, attributes, subscripts, literals, builtin calls, filters), then evaluated
 * against ctx->vars, which is only read. The tree owns its strings and literal values;
 * evaluation yields values that are either borrowed from vars/the tree or owned by the
 * evaluator (see struct val). Every failure names the block it happened in. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dagd/tmpl.h"

/* Errors quote the block; keep them readable when a block is huge. */
#define SNIPPET_MAX 160
#define DEPTH_MAX 32
/* Internal code for "unknown name": the one failure `| default(...)` swallows. */
#define UNKNOWN_NAME (-ENOENT)

/* ---- blocks and error messages ---- */

typedef struct block {
    size_t start;      /* offset of "{{" */
    size_t expr_start; /* just after "{{" */
    size_t expr_end;   /* offset of the closing "}}" */
    size_t end;        /* just after "}}" */
} block;

/* src[a..b) for a message, cut at a character boundary when too long. */
static char *snippet(const char *src, size_t a, size_t b) {
    if (b - a <= SNIPPET_MAX) return xstrndup(src + a, b - a);
    size_t n = SNIPPET_MAX;
    while (n > 0 && ((unsigned char)src[a + n] & 0xC0) == 0x80) n--;
    char *cut = xstrndup(src + a, n);
    char *r = xasprintf("%s...", cut);
    free(cut);
    return r;
}

static int block_error(dg_error *err, int code, const char *src, const block *b,
                       const char *fmt, ...) _printf_(5, 6);
static int block_error(dg_error *err, int code, const char *src, const block *b,
                       const char *fmt, ...) {
    _cleanup_free_ char *what = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&what, fmt, ap) < 0) abort();
    va_end(ap);
    _cleanup_free_ char *snip = snippet(src, b->start, b->end);
    return dg_error_set(err, code, "%s in template '%s'", what, snip);
}

/* Finds the next block at or after *pos. Strings are skipped while looking for "}}" so
 * that `{{ '}}' }}` is one block. Returns 1 with *ret set, 0 when there is none left. */
static int next_block(const char *src, size_t pos, block *ret, dg_error *err) {
    const char *open = strstr(src + pos, "{{");
    if (!open) return 0;
    size_t start = (size_t)(open - src), p = start + 2;
    while (src[p]) {
        char c = src[p];
        if (c == '\'' || c == '"') {
            size_t q = p++;
            while (src[p] && src[p] != c) {
                if (src[p] == '\\' && src[p + 1]) p++;
                p++;
            }
            if (!src[p]) {
                _cleanup_free_ char *snip = snippet(src, start, strlen(src));
                return dg_error_set(err, -EINVAL,
                                    "unterminated string at offset %zu in template '%s'", q, snip);
            }
            p++;
            continue;
        }
        if (c == '}' && src[p + 1] == '}') {
            *ret = (block){start, start + 2, p, p + 2};
            return 1;
        }
        p++;
    }
    _cleanup_free_ char *snip = snippet(src, start, strlen(src));
    return dg_error_set(err, -EINVAL, "unterminated '{{' at offset %zu in template '%s'", start,
                        snip);
}

/* ---- lexer ---- */

enum tok_kind {
    T_END,
    T_IDENT,
    T_INT,
    T_STR,
    T_DOT,
    T_LBRACK,
    T_RBRACK,
    T_LPAREN,
    T_RPAREN,
    T_COMMA,
    T_PIPE,
    T_EQ,
};

typedef struct tok {
    enum tok_kind kind;
    size_t start, end;
    char *s; /* T_IDENT name or decoded T_STR; owned until taken */
    long long i;
} tok;

typedef struct parser {
    const char *src;
    const block *blk;
    size_t pos;
    tok t;
    int depth;
    dg_error *err;
} parser;

static int syntax_error(parser *p, size_t off, const char *fmt, ...) _printf_(3, 4);
static int syntax_error(parser *p, size_t off, const char *fmt, ...) {
    _cleanup_free_ char *what = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&what, fmt, ap) < 0) abort();
    va_end(ap);
    return block_error(p->err, -EINVAL, p->src, p->blk, "%s at offset %zu", what, off);
}

static bool is_ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool is_ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

static int lex_string(parser *p) {
    const char *s = p->src;
    size_t i = p->pos;
    char q = s[i++];
    dg_buf b = {0};
    while (i < p->blk->expr_end && s[i] != q) {
        char c = s[i++];
        if (c == '\\' && i < p->blk->expr_end) {
            char e = s[i++];
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case '\\':
            case '\'':
            case '"': c = e; break;
            default:
                /* Python keeps unknown escapes as written. */
                dg_buf_append(&b, "\\", 1);
                c = e;
            }
        }
        dg_buf_append(&b, &c, 1);
    }
    /* next_block already matched the quotes, so the closing one is there. */
    char *str = dg_buf_steal(&b);
    json_t *check = json_string(str);
    if (!check) {
        free(str);
        return syntax_error(p, p->pos, "string literal is not valid UTF-8");
    }
    json_decref(check);
    p->t = (tok){T_STR, p->pos, i + 1, str, 0};
    p->pos = i + 1;
    return 0;
}

static int lex(parser *p) {
    free(p->t.s);
    p->t = (tok){0};
    const char *s = p->src;
    size_t lim = p->blk->expr_end;
    while (p->pos < lim && isspace((unsigned char)s[p->pos])) p->pos++;
    size_t st = p->pos;
    if (st >= lim) {
        p->t = (tok){T_END, st, st, NULL, 0};
        return 0;
    }
    char c = s[st];
    if (c == '\'' || c == '"') return lex_string(p);
    if (is_ident_start(c)) {
        size_t e = st;
        while (e < lim && is_ident_char(s[e])) e++;
        p->t = (tok){T_IDENT, st, e, xstrndup(s + st, e - st), 0};
        p->pos = e;
        return 0;
    }
    bool negative = c == '-' && st + 1 < lim && isdigit((unsigned char)s[st + 1]);
    if (isdigit((unsigned char)c) || negative) {
        size_t e = st + negative;
        long long v = 0;
        while (e < lim && isdigit((unsigned char)s[e])) {
            int d = s[e++] - '0';
            /* Accumulate negatively so LLONG_MIN is representable. */
            if (v < (LLONG_MIN + d) / 10) return syntax_error(p, st, "integer out of range");
            v = v * 10 - d;
        }
        if (e < lim && is_ident_char(s[e])) return syntax_error(p, st, "bad number");
        if (!negative) {
            if (v == LLONG_MIN) return syntax_error(p, st, "integer out of range");
            v = -v;
        }
        p->t = (tok){T_INT, st, e, NULL, v};
        p->pos = e;
        return 0;
    }
    static const struct {
        char c;
        enum tok_kind k;
    } punct[] = {{'.', T_DOT},    {'[', T_LBRACK}, {']', T_RBRACK}, {'(', T_LPAREN},
                 {')', T_RPAREN}, {',', T_COMMA},  {'|', T_PIPE},   {'=', T_EQ}};
    for (size_t i = 0; i < ARRAY_SIZE(punct); i++)
        if (punct[i].c == c) {
            p->t = (tok){punct[i].k, st, st + 1, NULL, 0};
            p->pos = st + 1;
            return 0;
        }
    if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
        return syntax_error(p, st, "unexpected byte 0x%02x", (unsigned char)c);
    return syntax_error(p, st, "unexpected '%c'", c);
}

static int unexpected(parser *p) {
    if (p->t.kind == T_END) return syntax_error(p, p->t.start, "unexpected end of expression");
    size_t n = p->t.end - p->t.start;
    return syntax_error(p, p->t.start, "unexpected '%.*s'", (int)(n > 40 ? 40 : n),
                        p->src + p->t.start);
}

static int expect(parser *p, enum tok_kind k, const char *what) {
    if (p->t.kind != k) {
        if (p->t.kind == T_END) return syntax_error(p, p->t.start, "expected %s", what);
        size_t n = p->t.end - p->t.start;
        return syntax_error(p, p->t.start, "expected %s, found '%.*s'", what,
                            (int)(n > 40 ? 40 : n), p->src + p->t.start);
    }
    return lex(p);
}

/* ---- syntax tree ---- */

enum node_kind { N_NAME, N_ATTR, N_INDEX, N_LIT, N_CALL, N_FILTER };

enum builtin { B_XCOM_PULL, B_DS_ADD, B_DS_FORMAT, F_DEFAULT, F_UPPER, F_LOWER, F_TOJSON };

/* Calls and filters are checked against these while parsing, so `dagd validate` catches a
 * misspelt function or a wrong argument count without any variables. */
static const struct sig {
    const char *name;
    bool filter;
    size_t min, max;
    const char *params[3];
} sigs[] = {
    [B_XCOM_PULL] = {"ti.xcom_pull", false, 1, 1, {"task_ids"}},
    [B_DS_ADD] = {"macros.ds_add", false, 2, 2, {"ds", "days"}},
    [B_DS_FORMAT] = {"macros.ds_format", false, 3, 3, {"ds", "input_format", "output_format"}},
    [F_DEFAULT] = {"default", true, 0, 1, {"default_value"}},
    [F_UPPER] = {"upper", true, 0, 0, {NULL}},
    [F_LOWER] = {"lower", true, 0, 0, {NULL}},
    [F_TOJSON] = {"tojson", true, 0, 0, {NULL}},
};

/* ---- the names dagd provides (docs/dags.md, "Templates") ---- */

/* What dg_tmpl_vars sets, in the order of the documentation's table. `state` is set for
 * notifications only; params, dag_run.conf and conn are looked into at render time,
 * since a run's conf may add to params. */
static const char *const provided[] = {
    "ds", "ds_nodash", "ts", "ts_nodash", "logical_date", "data_interval_start",
    "data_interval_end", "run_id", "dag_id", "task_id", "try_number", "state", "params",
    "dag_run", "conn",
};
static const char *const dag_run_fields[] = {"conf", "run_id", "logical_date"};

/* Names an Airflow template may use that dagd does not set, with what to write instead. */
static const struct absent {
    const char *name, *note;
} absent[] = {
    {"next_ds", "Airflow 2 deprecated it; use data_interval_end, or macros.ds_add(ds, 1) for the next day"},
    {"next_ds_nodash", "Airflow 2 deprecated it; use data_interval_end, or macros.ds_add(ds, 1) for the next day"},
    {"prev_ds", "Airflow 2 deprecated it; use macros.ds_add(ds, -1) for the day before"},
    {"prev_ds_nodash", "Airflow 2 deprecated it; use macros.ds_add(ds, -1) for the day before"},
    {"tomorrow_ds", "Airflow 2 deprecated it; use macros.ds_add(ds, 1)"},
    {"tomorrow_ds_nodash", "Airflow 2 deprecated it; use macros.ds_add(ds, 1)"},
    {"yesterday_ds", "Airflow 2 deprecated it; use macros.ds_add(ds, -1)"},
    {"yesterday_ds_nodash", "Airflow 2 deprecated it; use macros.ds_add(ds, -1)"},
    {"execution_date", "Airflow 2 deprecated it; use logical_date, or ds for the date"},
    {"next_execution_date", "Airflow 2 deprecated it; use data_interval_end"},
    {"prev_execution_date", "Airflow 2 deprecated it; use macros.ds_add(ds, -1) for the day before"},
    {"prev_execution_date_success", "dagd keeps no values of earlier runs for templates"},
    {"prev_start_date_success", "dagd keeps no values of earlier runs for templates"},
    {"prev_end_date_success", "dagd keeps no values of earlier runs for templates"},
    {"prev_data_interval_start_success", "dagd keeps no values of earlier runs for templates"},
    {"prev_data_interval_end_success", "dagd keeps no values of earlier runs for templates"},
    {"ts_nodash_with_tz", "use ts, which carries its offset"},
    {"var", "dagd has no Airflow Variables; use params, dag_run.conf or conn.ID"},
    {"conf", "that is Airflow's own configuration; a run's conf is dag_run.conf"},
    {"dag", "use dag_id"},
    {"task", "use task_id"},
    {"ti", "of ti, only the call ti.xcom_pull('task_id') is; the try is try_number"},
    {"task_instance", "of ti, only the call ti.xcom_pull('task_id') is; the try is try_number"},
    {"task_instance_key_str", "use dag_id, task_id and ds"},
    {"macros", "the macros are macros.ds_add(ds, days) and macros.ds_format(ds, in, out)"},
    {"inlets", "dagd has no datasets or lineage"},
    {"outlets", "dagd has no datasets or lineage"},
    {"triggering_dataset_events", "dagd has no datasets or lineage"},
    {"test_mode", NULL},
    {"expanded_ti_count", "dagd has no mapped tasks"},
    {"map_index_template", "dagd has no mapped tasks"},
};

static const struct absent *find_absent(const char *name) {
    for (size_t i = 0; i < ARRAY_SIZE(absent); i++)
        if (strcmp(absent[i].name, name) == 0) return &absent[i];
    return NULL;
}

/* "a, b and c": the filters, or the functions. */
static char *list_names(bool filters) {
    const char *v[ARRAY_SIZE(sigs)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        if (sigs[i].filter == filters) v[n++] = sigs[i].name;
    dg_buf b = {0};
    for (size_t i = 0; i < n; i++) dg_buf_printf(&b, "%s%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", v[i]);
    return dg_buf_steal(&b);
}

/* " (did you mean 'upper'?)" or the list of filters: always a string, caller frees. */
static char *filter_hint(const char *name) {
    const char *names[ARRAY_SIZE(sigs)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        if (sigs[i].filter) names[n++] = sigs[i].name;
    const char *s = strlen(name) <= 64 ? dg_suggest(name, names, n) : NULL;
    if (s) return xasprintf(" (did you mean '%s'?)", s);
    _cleanup_free_ char *all = list_names(true);
    return xasprintf(" (the filters are %s)", all);
}

/* As filter_hint for a function name; NULL when there is nothing to add. */
static char *function_hint(const char *name) {
    const char *names[ARRAY_SIZE(sigs)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        if (!sigs[i].filter) names[n++] = sigs[i].name;
    const char *s = strlen(name) <= 64 ? dg_suggest(name, names, n) : NULL;
    if (s) return xasprintf(" (did you mean '%s'?)", s);
    _cleanup_free_ char *root = xstrndup(name, strcspn(name, "."));
    const struct absent *a = find_absent(root);
    if (a && a->note && strcmp(root, "ti") && strcmp(root, "task_instance") && strcmp(root, "macros"))
        return xasprintf(" ('%s' is not provided by dagd: %s)", root, a->note);
    _cleanup_free_ char *all = list_names(false);
    return xasprintf(" (the functions are %s)", all);
}

typedef struct node node;
struct node {
    enum node_kind kind;
    size_t start, end; /* source span, for messages */
    char *name;        /* N_NAME, N_ATTR */
    json_t *lit;       /* N_LIT */
    node *base;        /* N_ATTR, N_INDEX: container; N_FILTER: operand */
    node *index;       /* N_INDEX */
    enum builtin fn;   /* N_CALL, N_FILTER */
    node *argv[3];     /* in parameter order; NULL where an optional one was left out */
};

static void node_free(node *n) {
    if (!n) return;
    free(n->name);
    json_decref(n->lit);
    node_free(n->base);
    node_free(n->index);
    for (size_t i = 0; i < ARRAY_SIZE(n->argv); i++) node_free(n->argv[i]);
    free(n);
}

static void node_freep(node **n) { node_free(*n); }
#define _cleanup_node_ _cleanup_(node_freep)

static node *node_new(enum node_kind k, size_t start) {
    node *n = xcalloc(1, sizeof *n);
    n->kind = k;
    n->start = n->end = start;
    return n;
}

static int parse_expr(parser *p, node **ret);

/* Parses "(a, k=b)" after the callee/filter name and puts each argument in its slot. */
static int parse_args(parser *p, enum builtin fn, size_t name_start, node *call) {
    const struct sig *sg = &sigs[fn];
    size_t given = 0;
    bool seen_kw = false;
    int r;
    if ((r = lex(p)) < 0) return r; /* "(" */
    while (p->t.kind != T_RPAREN) {
        if (given > 0 && (r = expect(p, T_COMMA, "',' or ')'")) < 0) return r;
        size_t arg_start = p->t.start;
        _cleanup_free_ char *kw = NULL;
        if (p->t.kind == T_IDENT) {
            /* Look one token past the name for "=" without losing the name. */
            size_t save_pos = p->pos;
            tok save = p->t;
            p->t.s = NULL;
            char *name = save.s;
            if ((r = lex(p)) < 0) {
                free(name);
                return r;
            }
            if (p->t.kind == T_EQ) {
                kw = name;
                if ((r = lex(p)) < 0) return r;
            } else {
                free(p->t.s);
                p->t = save;
                p->pos = save_pos;
            }
        }
        _cleanup_node_ node *val = NULL;
        if ((r = parse_expr(p, &val)) < 0) return r;
        size_t slot;
        if (kw) {
            seen_kw = true;
            for (slot = 0; slot < sg->max && strcmp(sg->params[slot], kw) != 0; slot++)
                ;
            if (slot == sg->max)
                return syntax_error(p, arg_start, "%s has no argument '%s'", sg->name, kw);
            if (call->argv[slot])
                return syntax_error(p, arg_start, "%s got argument '%s' twice", sg->name, kw);
        } else {
            if (seen_kw)
                return syntax_error(p, arg_start, "positional argument after keyword argument");
            slot = given;
        }
        given++;
        if (slot >= sg->max || given > sg->max) {
            if (sg->max == 0) return syntax_error(p, arg_start, "%s takes no arguments", sg->name);
            return syntax_error(p, arg_start, "%s takes %s%zu argument%s", sg->name,
                                sg->min == sg->max ? "" : "at most ", sg->max,
                                sg->max == 1 ? "" : "s");
        }
        call->argv[slot] = TAKE_PTR(val);
    }
    call->end = p->t.end;
    if ((r = lex(p)) < 0) return r; /* ")" */
    for (size_t i = 0; i < sg->min; i++)
        if (!call->argv[i])
            return syntax_error(p, name_start, "%s takes %zu argument%s, got %zu", sg->name,
                                sg->max, sg->max == 1 ? "" : "s", given);
    return 0;
}

/* The dotted name of a NAME/ATTR chain ("macros.ds_add"), or NULL if it has subscripts. */
static char *dotted_name(const node *n) {
    if (n->kind == N_NAME) return xstrdup(n->name);
    if (n->kind != N_ATTR) return NULL;
    _cleanup_free_ char *base = dotted_name(n->base);
    return base ? xasprintf("%s.%s", base, n->name) : NULL;
}

static int parse_postfix(parser *p, node **ret) {
    _cleanup_node_ node *n = node_new(N_NAME, p->t.start);
    n->name = TAKE_PTR(p->t.s);
    n->end = p->t.end;
    int r;
    if ((r = lex(p)) < 0) return r;
    for (;;) {
        if (p->t.kind == T_DOT) {
            if ((r = lex(p)) < 0) return r;
            if (p->t.kind != T_IDENT)
                return syntax_error(p, p->t.start, "expected a name after '.'");
            node *a = node_new(N_ATTR, n->start);
            a->name = TAKE_PTR(p->t.s);
            a->end = p->t.end;
            a->base = TAKE_PTR(n);
            n = a;
            if ((r = lex(p)) < 0) return r;
        } else if (p->t.kind == T_LBRACK) {
            if ((r = lex(p)) < 0) return r;
            node *x = node_new(N_INDEX, n->start);
            x->base = TAKE_PTR(n);
            n = x;
            if ((r = parse_expr(p, &x->index)) < 0) return r;
            x->end = p->t.end;
            if ((r = expect(p, T_RBRACK, "']'")) < 0) return r;
        } else if (p->t.kind == T_LPAREN) {
            _cleanup_free_ char *fname = dotted_name(n);
            size_t i;
            for (i = 0; i < ARRAY_SIZE(sigs); i++)
                if (!sigs[i].filter && fname && strcmp(sigs[i].name, fname) == 0) break;
            if (i == ARRAY_SIZE(sigs)) {
                _cleanup_free_ char *hint = fname ? function_hint(fname) : NULL;
                return syntax_error(p, n->start, "unknown function '%.*s'%s",
                                    (int)(n->end - n->start), p->src + n->start, hint ? hint : "");
            }
            node *c = node_new(N_CALL, n->start);
            c->fn = (enum builtin)i;
            node_free(TAKE_PTR(n));
            n = c;
            if ((r = parse_args(p, c->fn, c->start, c)) < 0) return r;
            break; /* a call's result is a plain value: nothing may follow it */
        } else
            break;
    }
    *ret = TAKE_PTR(n);
    return 0;
}

static int parse_primary(parser *p, node **ret) {
    int r;
    switch (p->t.kind) {
    case T_STR:
    case T_INT: {
        node *n = node_new(N_LIT, p->t.start);
        n->end = p->t.end;
        n->lit = p->t.kind == T_STR ? json_string(p->t.s) : json_integer(p->t.i);
        if ((r = lex(p)) < 0) {
            node_free(n);
            return r;
        }
        *ret = n;
        return 0;
    }
    case T_IDENT: {
        static const char *const consts[] = {"true", "True", "false", "False", "none", "None"};
        for (size_t i = 0; i < ARRAY_SIZE(consts); i++)
            if (strcmp(p->t.s, consts[i]) == 0) {
                node *n = node_new(N_LIT, p->t.start);
                n->end = p->t.end;
                n->lit = i < 2 ? json_true() : i < 4 ? json_false() : json_null();
                if ((r = lex(p)) < 0) {
                    node_free(n);
                    return r;
                }
                *ret = n;
                return 0;
            }
        return parse_postfix(p, ret);
    }
    case T_LPAREN: {
        if ((r = lex(p)) < 0) return r;
        _cleanup_node_ node *n = NULL;
        if ((r = parse_expr(p, &n)) < 0) return r;
        if ((r = expect(p, T_RPAREN, "')'")) < 0) return r;
        *ret = TAKE_PTR(n);
        return 0;
    }
    default:
        return unexpected(p);
    }
}

static int parse_expr(parser *p, node **ret) {
    if (++p->depth > DEPTH_MAX) return syntax_error(p, p->t.start, "expression nested too deeply");
    _cleanup_node_ node *n = NULL;
    int r = parse_primary(p, &n);
    if (r < 0) return r;
    while (p->t.kind == T_PIPE) {
        if ((r = lex(p)) < 0) return r;
        if (p->t.kind != T_IDENT)
            return syntax_error(p, p->t.start, "expected a filter name after '|'");
        size_t i;
        for (i = 0; i < ARRAY_SIZE(sigs); i++)
            if (sigs[i].filter && strcmp(sigs[i].name, p->t.s) == 0) break;
        if (i == ARRAY_SIZE(sigs)) {
            _cleanup_free_ char *hint = filter_hint(p->t.s);
            return syntax_error(p, p->t.start, "unknown filter '%s'%s", p->t.s, hint);
        }
        node *f = node_new(N_FILTER, n->start);
        f->fn = (enum builtin)i;
        f->base = TAKE_PTR(n);
        f->end = p->t.end;
        n = f;
        size_t name_start = p->t.start;
        if ((r = lex(p)) < 0) return r;
        if (p->t.kind == T_LPAREN) {
            if ((r = parse_args(p, f->fn, name_start, f)) < 0) return r;
        } else if (sigs[f->fn].min > 0)
            return syntax_error(p, name_start, "%s needs arguments", sigs[f->fn].name);
    }
    p->depth--;
    *ret = TAKE_PTR(n);
    return 0;
}

static int parse_block(const char *src, const block *b, node **ret, dg_error *err) {
    parser p = {.src = src, .blk = b, .pos = b->expr_start, .err = err};
    int r = lex(&p);
    if (r < 0) return r;
    if (p.t.kind == T_END) return syntax_error(&p, b->start, "empty expression");
    _cleanup_node_ node *n = NULL;
    r = parse_expr(&p, &n);
    if (r >= 0 && p.t.kind != T_END) r = unexpected(&p);
    free(p.t.s);
    if (r < 0) return r;
    *ret = TAKE_PTR(n);
    return 0;
}

/* ---- values and their text ---- */

/* A value is either borrowed (from vars or the tree) or owned (computed). */
typedef struct val {
    const json_t *v;
    json_t *own;
} val;

static void val_done(val *v) {
    json_decref(v->own);
    *v = (val){0};
}

static val val_owned(json_t *j) { return (val){j, j}; }

/* Shortest text that reads back as the same double; integral values print without ".0",
 * so a number that came from YAML as 3.0 still renders as 3. */
static void put_real(dg_buf *b, double d) {
    if (d == trunc(d) && fabs(d) < 1e15) {
        dg_buf_printf(b, "%.0f", d);
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    dg_buf_puts(b, tmp);
}

static void put_json_string(dg_buf *b, const char *s, size_t n) {
    dg_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': dg_buf_puts(b, "\\\""); break;
        case '\\': dg_buf_puts(b, "\\\\"); break;
        case '\n': dg_buf_puts(b, "\\n"); break;
        case '\r': dg_buf_puts(b, "\\r"); break;
        case '\t': dg_buf_puts(b, "\\t"); break;
        case '\b': dg_buf_puts(b, "\\b"); break;
        case '\f': dg_buf_puts(b, "\\f"); break;
        default:
            if (c < 0x20 || c == 0x7f) dg_buf_printf(b, "\\u%04x", c);
            else dg_buf_append(b, &s[i], 1);
        }
    }
    dg_buf_append(b, "\"", 1);
}

/* Compact JSON (no spaces, so a rendered object stays one shell word); UTF-8 is kept. */
static void put_json(dg_buf *b, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        dg_buf_append(b, "{", 1);
        json_object_foreach((json_t *)v, k, x) {
            if (!first) dg_buf_append(b, ",", 1);
            first = false;
            put_json_string(b, k, strlen(k));
            dg_buf_append(b, ":", 1);
            put_json(b, x);
        }
        dg_buf_append(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        dg_buf_append(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) dg_buf_append(b, ",", 1);
            put_json(b, json_array_get(v, i));
        }
        dg_buf_append(b, "]", 1);
        break;
    case JSON_STRING: put_json_string(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: dg_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: put_real(b, json_real_value(v)); break;
    case JSON_TRUE: dg_buf_puts(b, "true"); break;
    case JSON_FALSE: dg_buf_puts(b, "false"); break;
    case JSON_NULL: dg_buf_puts(b, "null"); break;
    }
}

/* How Jinja prints a value: strings bare, booleans and null the Python way. */
static void put_text(dg_buf *b, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_STRING: dg_buf_append(b, json_string_value(v), json_string_length(v)); break;
    case JSON_TRUE: dg_buf_puts(b, "True"); break;
    case JSON_FALSE: dg_buf_puts(b, "False"); break;
    case JSON_NULL: dg_buf_puts(b, "None"); break;
    default: put_json(b, v);
    }
}

/* ---- evaluation ---- */

typedef struct evaler {
    const char *src;
    const block *blk;
    const dg_tmpl_ctx *ctx;
    dg_error *err;
} evaler;

static int eval(evaler *e, const node *n, val *ret);

static int eval_error(evaler *e, const char *fmt, ...) _printf_(2, 3);
static int eval_error(evaler *e, const char *fmt, ...) {
    _cleanup_free_ char *what = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&what, fmt, ap) < 0) abort();
    va_end(ap);
    return block_error(e->err, -EINVAL, e->src, e->blk, "%s", what);
}

static int unknown_name(evaler *e, const node *n) {
    return block_error(e->err, UNKNOWN_NAME, e->src, e->blk, "unknown name '%.*s'",
                       (int)(n->end - n->start), e->src + n->start);
}

static int lookup(evaler *e, const node *n, const json_t **ret) {
    const json_t *v = NULL;
    int r;
    if (n->kind == N_NAME) {
        v = e->ctx && e->ctx->vars ? json_object_get(e->ctx->vars, n->name) : NULL;
    } else if (n->kind == N_ATTR) {
        const json_t *base;
        if ((r = lookup(e, n->base, &base)) < 0) return r;
        v = json_is_object(base) ? json_object_get(base, n->name) : NULL;
    } else {
        const json_t *base;
        if ((r = lookup(e, n->base, &base)) < 0) return r;
        val key = {0};
        if ((r = eval(e, n->index, &key)) < 0) return r;
        if (json_is_object(base) && json_is_string(key.v)) {
            v = json_object_get(base, json_string_value(key.v));
        } else if (json_is_array(base) && json_is_integer(key.v)) {
            json_int_t i = json_integer_value(key.v), len = (json_int_t)json_array_size(base);
            if (i < 0) i += len;
            if (i >= 0 && i < len) v = json_array_get(base, (size_t)i);
        }
        val_done(&key);
    }
    if (!v) return unknown_name(e, n);
    *ret = v;
    return 0;
}

/* Strict YYYY-MM-DD, as Python's strptime(ds, "%Y-%m-%d") accepts it for a ds. */
static bool parse_ymd(const char *s, struct tm *ret) {
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) return false;
    if (atoi(s) < 1) return false;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = 12;
    struct tm chk = tm;
    time_t t = timegm(&chk);
    struct tm back;
    if (!gmtime_r(&t, &back)) return false;
    if (back.tm_year != tm.tm_year || back.tm_mon != tm.tm_mon || back.tm_mday != tm.tm_mday)
        return false;
    *ret = back;
    return true;
}

static int call_ds_add(evaler *e, const val *a, val *ret) {
    struct tm tm;
    if (!json_is_string(a[0].v) || !parse_ymd(json_string_value(a[0].v), &tm)) {
        _cleanup_free_ char *shown = NULL;
        if (json_is_string(a[0].v)) shown = xasprintf("'%s'", json_string_value(a[0].v));
        return eval_error(e, "macros.ds_add: bad date %s (want YYYY-MM-DD)",
                          shown ? shown : "value");
    }
    if (!json_is_integer(a[1].v))
        return eval_error(e, "macros.ds_add: days must be an integer");
    json_int_t days = json_integer_value(a[1].v);
    /* Past this the year leaves 1..9999 anyway; checking first keeps time_t math sane. */
    if (days > 4000000 || days < -4000000)
        return eval_error(e, "macros.ds_add: date out of range");
    time_t t = timegm(&tm) + (time_t)days * 86400;
    struct tm out;
    if (!gmtime_r(&t, &out) || out.tm_year + 1900 < 1 || out.tm_year + 1900 > 9999)
        return eval_error(e, "macros.ds_add: date out of range");
    char buf[40];
    snprintf(buf, sizeof buf, "%04d-%02d-%02d", out.tm_year + 1900, out.tm_mon + 1, out.tm_mday);
    *ret = val_owned(json_string(buf));
    return 0;
}

static int call_ds_format(evaler *e, const val *a, val *ret) {
    for (int i = 0; i < 3; i++)
        if (!json_is_string(a[i].v))
            return eval_error(e, "macros.ds_format: argument %d must be a string", i + 1);
    const char *ds = json_string_value(a[0].v), *in = json_string_value(a[1].v),
               *out = json_string_value(a[2].v);
    struct tm tm = {0};
    tm.tm_mday = 1;
    const char *end = strptime(ds, in, &tm);
    bool ok = end && *end == 0;
    if (ok) {
        /* strptime takes "%d" = 31 in any month; Python's does not. */
        struct tm chk = tm;
        time_t t = timegm(&chk);
        struct tm back;
        ok = t != (time_t)-1 && gmtime_r(&t, &back) && back.tm_year == tm.tm_year &&
             back.tm_mon == tm.tm_mon && back.tm_mday == tm.tm_mday;
        if (ok) tm = back;
    }
    if (!ok)
        return eval_error(e, "macros.ds_format: '%s' does not match format '%s'", ds, in);
    if (!*out) {
        *ret = val_owned(json_string(""));
        return 0;
    }
    size_t cap = 64;
    for (;;) {
        _cleanup_free_ char *buf = xmalloc(cap);
        size_t n = strftime(buf, cap, out, &tm);
        if (n > 0 || cap >= 65536) {
            buf[n] = 0;
            json_t *s = json_string(buf);
            if (!s)
                return eval_error(e, "macros.ds_format: result is not valid UTF-8");
            *ret = val_owned(s);
            return 0;
        }
        cap *= 4;
    }
}

static int call_xcom_pull(evaler *e, const val *a, val *ret) {
    if (!e->ctx || !e->ctx->xcom_pull)
        return dg_error_set(e->err, -EINVAL, "ti.xcom_pull is not available here");
    if (!json_is_string(a[0].v))
        return eval_error(e, "ti.xcom_pull: task id must be a string");
    const char *task = json_string_value(a[0].v);
    char *out = NULL;
    dg_error xe = {0};
    int r = e->ctx->xcom_pull(e->ctx->userdata, task, &out, &xe);
    if (r < 0) {
        if (xe.msg) dg_error_set(e->err, -EINVAL, "%s", xe.msg);
        else dg_error_set(e->err, -EINVAL, "ti.xcom_pull('%s') failed: %s", task, strerror(-r));
        dg_error_clear(&xe);
        return -EINVAL;
    }
    dg_error_clear(&xe);
    /* Task output is whatever the container printed; keep its bytes as they are. */
    *ret = val_owned(json_string_nocheck(out ? out : ""));
    free(out);
    return 0;
}

static int eval_call(evaler *e, const node *n, val *ret) {
    val a[3] = {{0}};
    int r = 0;
    size_t argc = sigs[n->fn].max;
    for (size_t i = 0; i < argc && r >= 0; i++) r = eval(e, n->argv[i], &a[i]);
    if (r >= 0) {
        switch (n->fn) {
        case B_XCOM_PULL: r = call_xcom_pull(e, a, ret); break;
        case B_DS_ADD: r = call_ds_add(e, a, ret); break;
        default: r = call_ds_format(e, a, ret); break;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(a); i++) val_done(&a[i]);
    /* Arguments may name unknown variables, but a call itself is never "undefined". */
    return r < 0 ? -EINVAL : r;
}

static int eval_filter(evaler *e, const node *n, val *ret) {
    val v = {0};
    int r = eval(e, n->base, &v);
    if (n->fn == F_DEFAULT) {
        if (r != UNKNOWN_NAME) {
            if (r >= 0) *ret = v;
            return r;
        }
        dg_error_clear(e->err);
        if (!n->argv[0]) {
            *ret = val_owned(json_string(""));
            return 0;
        }
        return eval(e, n->argv[0], ret);
    }
    if (r < 0) return r;
    dg_buf b = {0};
    if (n->fn == F_TOJSON) put_json(&b, v.v);
    else {
        put_text(&b, v.v);
        for (size_t i = 0; i < b.len; i++)
            b.data[i] = (char)(n->fn == F_UPPER ? toupper((unsigned char)b.data[i])
                                                : tolower((unsigned char)b.data[i]));
    }
    val_done(&v);
    char *s = dg_buf_steal(&b);
    *ret = val_owned(json_string_nocheck(s));
    free(s);
    return 0;
}

static int eval(evaler *e, const node *n, val *ret) {
    switch (n->kind) {
    case N_LIT: *ret = (val){n->lit, NULL}; return 0;
    case N_NAME:
    case N_ATTR:
    case N_INDEX: {
        const json_t *v;
        int r = lookup(e, n, &v);
        if (r < 0) return r;
        *ret = (val){v, NULL};
        return 0;
    }
    case N_CALL: return eval_call(e, n, ret);
    case N_FILTER: return eval_filter(e, n, ret);
    }
    return -EINVAL;
}

/* ---- checks that need no variables ---- */

/* Jinja statements (`{% if %}`, `{% for %}`) are not part of the language; passing one
 * through would hand the container its raw text. Only text outside `{{ }}` is looked at,
 * and a `{%` without a later `%}` (printf's `{%s}`) is left alone. */
static int check_statements(const char *src, size_t from, size_t to, dg_error *err) {
    const char *open = memmem(src + from, to - from, "{%", 2);
    if (!open) return 0;
    const char *close = strstr(open + 2, "%}");
    if (!close) return 0;
    size_t start = (size_t)(open - src);
    _cleanup_free_ char *snip = snippet(src, start, (size_t)(close + 2 - src));
    return dg_error_set(err, -EINVAL,
                        "'{%% ... %%}' statements are not supported (dagd templates have only "
                        "{{ expr }}; for a literal '{%%' write {{ '{%%' }}) at offset %zu in template '%s'",
                        start, snip);
}

typedef struct namecheck {
    const char *src;
    const block *blk;
    dg_tmpl_use use;
    dg_error *err;
} namecheck;

static int name_error(namecheck *nc, const node *n, const char *fmt, ...) _printf_(3, 4);
static int name_error(namecheck *nc, const node *n, const char *fmt, ...) {
    _cleanup_free_ char *what = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&what, fmt, ap) < 0) abort();
    va_end(ap);
    size_t len = n->end - n->start;
    return block_error(nc->err, -EINVAL, nc->src, nc->blk, "'%.*s' %s", (int)(len > 100 ? 100 : len),
                       nc->src + n->start, what);
}

/* A lookup chain (n) read from its first name (root); above is the step after it. */
static int check_lookup(namecheck *nc, const node *n, const node *root, const node *above) {
    const char *name = root->name;
    for (size_t i = 0; i < ARRAY_SIZE(provided); i++) {
        if (strcmp(provided[i], name) != 0) continue;
        if (!strcmp(name, "state") && nc->use != DG_TMPL_NOTIFICATION)
            return name_error(nc, n, "is set only in notifications");
        if (!strcmp(name, "params") || !strcmp(name, "conn")) return 0;
        if (!strcmp(name, "dag_run")) {
            if (!above || above->kind != N_ATTR) return 0;
            for (size_t k = 0; k < ARRAY_SIZE(dag_run_fields); k++)
                if (!strcmp(above->name, dag_run_fields[k])) return 0;
            return name_error(nc, n, "is not provided by dagd (dag_run has conf, run_id and logical_date)");
        }
        if (above)
            return name_error(nc, n, "is not provided by dagd ('%s' is a single value, without parts)", name);
        return 0;
    }
    const struct absent *a = find_absent(name);
    if (a)
        return name_error(nc, n, "is not provided by dagd%s%s%s", a->note ? " (" : "", a->note ? a->note : "",
                          a->note ? ")" : "");
    const char *s = strlen(name) <= 64 ? dg_suggest(name, provided, ARRAY_SIZE(provided)) : NULL;
    if (s) return name_error(nc, n, "is not a name dagd provides (did you mean '%s'?)", s);
    dg_buf b = {0};
    for (size_t i = 0; i < ARRAY_SIZE(provided); i++)
        if (strcmp(provided[i], "state") || nc->use == DG_TMPL_NOTIFICATION)
            dg_buf_printf(&b, "%s%s", b.len ? ", " : "", provided[i]);
    int r = name_error(nc, n, "is not a name dagd provides (the names are %s)", b.data);
    dg_buf_free(&b);
    return r;
}

/* Every name the block reads must be one dagd sets. Under `| default(...)` an unknown
 * name is no error at render time, so it is none here either; a call's arguments are
 * checked even there, since a failing call is not "undefined". */
static int check_names(namecheck *nc, const node *n, bool lenient) {
    int r;
    if (!n) return 0;
    switch (n->kind) {
    case N_LIT: return 0;
    case N_NAME:
    case N_ATTR:
    case N_INDEX: {
        const node *root = n, *above = NULL;
        while (root->kind != N_NAME) {
            if (root->kind == N_INDEX && (r = check_names(nc, root->index, lenient)) < 0) return r;
            above = root;
            root = root->base;
        }
        return lenient ? 0 : check_lookup(nc, n, root, above);
    }
    case N_CALL:
        for (size_t i = 0; i < ARRAY_SIZE(n->argv); i++)
            if ((r = check_names(nc, n->argv[i], false)) < 0) return r;
        return 0;
    case N_FILTER:
        if ((r = check_names(nc, n->base, lenient || n->fn == F_DEFAULT)) < 0) return r;
        for (size_t i = 0; i < ARRAY_SIZE(n->argv); i++)
            if ((r = check_names(nc, n->argv[i], lenient)) < 0) return r;
        return 0;
    }
    return 0;
}

/* ---- public ---- */

static bool node_uses_xcom(const node *n) {
    if (!n) return false;
    if (n->kind == N_CALL && n->fn == B_XCOM_PULL) return true;
    if (node_uses_xcom(n->base) || node_uses_xcom(n->index)) return true;
    for (size_t i = 0; i < ARRAY_SIZE(n->argv); i++)
        if (node_uses_xcom(n->argv[i])) return true;
    return false;
}

static void move_error(dg_error *to, dg_error *from) {
    if (to) {
        dg_error_clear(to);
        to->code = -EINVAL;
        to->msg = TAKE_PTR(from->msg);
    }
    dg_error_clear(from);
}

int dg_tmpl_render(const char *src, const dg_tmpl_ctx *ctx, char **ret, dg_error *err) {
    if (!src) return dg_error_set(err, -EINVAL, "no template");
    dg_buf out = {0};
    dg_error e = {0};
    size_t pos = 0;
    block b;
    int r;
    while ((r = next_block(src, pos, &b, &e)) > 0) {
        if ((r = check_statements(src, pos, b.start, &e)) < 0) break;
        dg_buf_append(&out, src + pos, b.start - pos);
        _cleanup_node_ node *n = NULL;
        if ((r = parse_block(src, &b, &n, &e)) < 0) break;
        evaler ev = {src, &b, ctx, &e};
        val v = {0};
        if ((r = eval(&ev, n, &v)) < 0) break;
        put_text(&out, v.v);
        val_done(&v);
        pos = b.end;
    }
    if (r == 0) r = check_statements(src, pos, strlen(src), &e);
    if (r < 0) {
        dg_buf_free(&out);
        move_error(err, &e);
        return -EINVAL;
    }
    dg_buf_puts(&out, src + pos);
    *ret = dg_buf_steal(&out);
    return 0;
}

int dg_tmpl_check(const char *src, dg_tmpl_use use, dg_error *err) {
    if (!src) return dg_error_set(err, -EINVAL, "no template");
    dg_error e = {0};
    size_t pos = 0;
    block b;
    int r;
    while ((r = next_block(src, pos, &b, &e)) > 0) {
        if ((r = check_statements(src, pos, b.start, &e)) < 0) break;
        _cleanup_node_ node *n = NULL;
        if ((r = parse_block(src, &b, &n, &e)) < 0) break;
        namecheck nc = {src, &b, use, &e};
        if ((r = check_names(&nc, n, false)) < 0) break;
        pos = b.end;
    }
    if (r == 0) r = check_statements(src, pos, strlen(src), &e);
    if (r < 0) {
        move_error(err, &e);
        return -EINVAL;
    }
    return 0;
}

bool dg_tmpl_uses_xcom(const char *src) {
    if (!src) return false;
    size_t pos = 0;
    block b;
    bool found = false;
    while (!found && next_block(src, pos, &b, NULL) > 0) {
        _cleanup_node_ node *n = NULL;
        if (parse_block(src, &b, &n, NULL) < 0) break;
        found = node_uses_xcom(n);
        pos = b.end;
    }
    return found;
}
