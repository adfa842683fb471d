/* cli client — the verbs of docs/cli.md that talk to a running `dagd serve` over its REST API
 * (docs/api.md): listings, import errors, logs, trigger, pause/unpause, cancel, clear, mark and
 * backfill (docs/cli.md, Client verbs).
 * Blocking libcurl easy calls on one handle (connections are reused while polling).
 * This file owns the argument parsing of those verbs, token resolution and the human
 * tables; the JSON printed with --json is the API's own object, untouched.
 * Exit status: 0 ok, 1 a waited-for run failed, 2 usage or input error, 3 the server
 * could not be reached or answered an error. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dagd/cli.h"
#include "dagd/config.h"
#include "dagd/server.h"
#include "dagd/util.h"
#include "cli_internal.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_SERVER 3
#define DEFAULT_SERVER "http://127.0.0.1:8080"
#define POLL_MS 500
#define PAGE 1000
/* how long `cancel` waits for the run to end: the engine's stop grace (10 s) and then some */
#define CANCEL_WAIT_MS 30000

/* ---- options ---- */

enum {
    O_JSON = 1 << 0,
    O_TRY = 1 << 1,
    O_FOLLOW = 1 << 2,
    O_CONF = 1 << 3,
    O_DATE = 1 << 4,
    O_WAIT = 1 << 5,
    O_DOWNSTREAM = 1 << 6,
    O_FAILED = 1 << 7,
    O_FROM = 1 << 8,
    O_TO = 1 << 9,
    O_RERUN = 1 << 10,
    O_RESET = 1 << 11,
    O_HEADER = 1 << 12,
};

typedef struct opts {
    char **pos;
    size_t n_pos;
    const char *server, *token_file, *state, *conf, *date, *from, *to, *try_s;
    bool json, follow, wait, downstream, failed, rerun, header, help;
} opts;

typedef struct client {
    CURL *h;
    char *base;       /* server URL without a trailing '/' */
    char *token;      /* NULL: none found */
    char *token_from; /* where the token came from (or was looked for), for the 401 hint */
    bool json;
    char errbuf[CURL_ERROR_SIZE];
} client;

typedef struct verb {
    const char *name;
    int (*fn)(client *c, opts *o);
    size_t min_pos, max_pos; /* positional arguments after the verb (SIZE_MAX = any) */
    unsigned allowed;
    const char *usage;
} verb;

static const struct {
    const char *name;
    unsigned flag;      /* 0: common to every verb */
    size_t off;         /* value options: where the value goes */
    size_t bool_off;    /* flags: which bool */
    bool takes_value;
    char short_name;
} option_table[] = {
    {"server", 0, offsetof(opts, server), 0, true, 0},
    {"token-file", 0, offsetof(opts, token_file), 0, true, 0},
    {"state", 0, offsetof(opts, state), 0, true, 0},
    {"json", O_JSON, 0, offsetof(opts, json), false, 0},
    {"try", O_TRY, offsetof(opts, try_s), 0, true, 0},
    {"follow", O_FOLLOW, 0, offsetof(opts, follow), false, 'f'},
    {"header", O_HEADER, 0, offsetof(opts, header), false, 0},
    {"conf", O_CONF, offsetof(opts, conf), 0, true, 0},
    {"date", O_DATE, offsetof(opts, date), 0, true, 0},
    {"wait", O_WAIT, 0, offsetof(opts, wait), false, 0},
    {"downstream", O_DOWNSTREAM, 0, offsetof(opts, downstream), false, 0},
    {"failed", O_FAILED, 0, offsetof(opts, failed), false, 0},
    {"from", O_FROM, offsetof(opts, from), 0, true, 0},
    {"to", O_TO, offsetof(opts, to), 0, true, 0},
    {"rerun", O_RERUN, 0, offsetof(opts, rerun), false, 0},
    {"reset-dagruns", O_RESET, 0, offsetof(opts, rerun), false, 0}, /* Airflow's name */
};

/* Options may come anywhere, as --opt VALUE or --opt=VALUE; only those the verb knows
 * are accepted, so a misplaced flag is an error instead of being ignored. */
static int parse_opts(const verb *v, int argc, char **argv, opts *o) {
    o->pos = xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--") == 0) {
            while (++i < argc) o->pos[o->n_pos++] = argv[i];
            break;
        }
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            o->help = true;
            continue;
        }
        bool is_short = s[0] == '-' && s[1] && s[1] != '-' && !s[2];
        if (!is_short && (!dg_str_has_prefix(s, "--") || !s[2])) {
            o->pos[o->n_pos++] = argv[i];
            continue;
        }
        const char *name = is_short ? s + 1 : s + 2, *eq = is_short ? NULL : strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        size_t k;
        for (k = 0; k < ARRAY_SIZE(option_table); k++) {
            if (option_table[k].flag && !(v->allowed & option_table[k].flag)) continue;
            if (is_short ? option_table[k].short_name == name[0]
                         : strlen(option_table[k].name) == nl && strncmp(option_table[k].name, name, nl) == 0)
                break;
        }
        if (k == ARRAY_SIZE(option_table)) {
            fprintf(stderr, "dagd %s: unknown option %s\n%s", v->name, s, v->usage);
            return -EINVAL;
        }
        if (!option_table[k].takes_value) {
            if (eq) {
                fprintf(stderr, "dagd %s: option --%s takes no value\n", v->name, option_table[k].name);
                return -EINVAL;
            }
            *(bool *)((char *)o + option_table[k].bool_off) = true;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "dagd %s: option --%s needs a value\n", v->name, option_table[k].name);
            return -EINVAL;
        }
        *(const char **)((char *)o + option_table[k].off) = val;
    }
    return 0;
}

/* ---- connection setup ---- */

static char *trim_token(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    size_t lead = strspn(s, " \t\r\n");
    if (lead) memmove(s, s + lead, n - lead + 1);
    return s;
}

/* DAGD_TOKEN, else --token-file, else <state>/token (docs/cli.md). The server's own
 * DAGD_TOKEN_FILE and DAGD_STATE_DIR (docs/daemon.md) are honoured too, so a shell set up for the
 * server finds its token. A named token file that cannot be read is an input error; the
 * default one may simply not exist, in which case the request goes without a token and a
 * 401 explains where the token was looked for. */
static int resolve_token(client *c, const opts *o) {
    const char *env = getenv("DAGD_TOKEN");
    if (env && *env) {
        c->token = trim_token(xstrdup(env));
        c->token_from = xstrdup("DAGD_TOKEN");
        return 0;
    }
    const char *path = o->token_file, *env_path = getenv("DAGD_TOKEN_FILE");
    if (!path && env_path && *env_path) path = env_path;
    if (path) {
        c->token_from = xstrdup(path);
    } else {
        const char *env_state = getenv("DAGD_STATE_DIR");
        _cleanup_free_ char *state = o->state                  ? xstrdup(o->state)
                                     : env_state && *env_state ? xstrdup(env_state)
                                                               : dg_config_default_state_dir();
        c->token_from = xasprintf("%s/token", state);
    }
    char *text = NULL;
    size_t len;
    int r = dg_read_file(c->token_from, &text, &len);
    if (r < 0) {
        if (path) {
            fprintf(stderr, "dagd: token file %s: %s\n", path, strerror(-r));
            return -EINVAL;
        }
        return 0;
    }
    trim_token(text);
    if (!*text) {
        free(text);
        return 0;
    }
    c->token = text;
    return 0;
}

static void client_free(client *c) {
    if (c->h) curl_easy_cleanup(c->h);
    free(c->base);
    free(c->token);
    free(c->token_from);
}

static int client_init(client *c, const opts *o) {
    const char *server = o->server;
    if (!server || !*server) server = getenv("DAGD_SERVER");
    if (!server || !*server) server = DEFAULT_SERVER;
    c->base = xstrdup(server);
    size_t n = strlen(c->base);
    while (n && c->base[n - 1] == '/') c->base[--n] = '\0';
    if (!n) {
        fprintf(stderr, "dagd: --server needs a URL, like %s\n", DEFAULT_SERVER);
        return -EINVAL;
    }
    c->json = o->json;
    if (resolve_token(c, o) < 0) return -EINVAL;
    c->h = curl_easy_init();
    if (!c->h) {
        fprintf(stderr, "dagd: cannot initialise libcurl\n");
        return -ENOMEM;
    }
    return 0;
}

/* A path segment, percent-encoded (run ids carry ':' and '+'). Caller frees. */
static char *seg(client *c, const char *s) {
    char *e = curl_easy_escape(c->h, s, 0);
    if (!e) abort();
    char *r = xstrdup(e);
    curl_free(e);
    return r;
}

/* ---- HTTP ---- */

typedef struct xfer {
    client *c;
    dg_buf body;
    FILE *stream;       /* 2xx bodies go here as they come when set (log follow) */
    bool stream_failed; /* writing to stream failed (stdout closed) */
} xfer;

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
    xfer *x = ud;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(x->c->h, CURLINFO_RESPONSE_CODE, &status);
    if (x->stream && status >= 200 && status < 300) {
        if (fwrite(p, 1, len, x->stream) != len || fflush(x->stream) != 0) {
            x->stream_failed = true;
            return 0;
        }
        return len;
    }
    dg_buf_append(&x->body, p, len);
    return len;
}

/* One request. Returns the HTTP status, or -EIO (message printed) when there was no
 * answer. The body (unless streamed) is left in x->body. */
static long perform(client *c, const char *method, const char *path, const json_t *body, xfer *x) {
    CURL *h = c->h;
    curl_easy_reset(h);
    _cleanup_free_ char *url = xasprintf("%s%s", c->base, path);
    _cleanup_free_ char *auth = c->token ? xasprintf("Authorization: Bearer %s", c->token) : NULL;
    _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (auth) hdrs = curl_slist_append(hdrs, auth);
    if (payload) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    c->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "dagd/" DAGD_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    if (strcmp(method, "GET") != 0) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    x->c = c;
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_WRITE_ERROR && x->stream_failed) return status;
    if (rc != CURLE_OK) {
        if (status > 0 && rc == CURLE_PARTIAL_FILE) {
            fprintf(stderr, "dagd: the server at %s closed the connection early: %s\n", c->base,
                    c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
        } else {
            fprintf(stderr, "dagd: cannot reach the server at %s: %s\n", c->base,
                    c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
            fprintf(stderr, "dagd: hint: is `dagd serve` running there? Point to it with --server URL or "
                            "DAGD_SERVER.\n");
        }
        return -EIO;
    }
    return status;
}

/* The server's {"error","detail"} as "dagd: <status>: <error>: <detail>", plus a hint
 * for 401 about where the token comes from. */
static void report_error(client *c, long status, const dg_buf *body) {
    json_t *j = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    const char *error = json_string_value(json_object_get(j, "error"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    if (error) {
        fprintf(stderr, "dagd: %ld: %s%s%s\n", status, error, detail && *detail ? ": " : "",
                detail ? detail : "");
    } else {
        size_t n = body->len ? strcspn(body->data, "\r\n") : 0;
        fprintf(stderr, "dagd: %ld: %.*s\n", status, (int)(n > 300 ? 300 : n),
                n ? body->data : "the server answered an error without a message");
    }
    if (status == 401) {
        if (c->token)
            fprintf(stderr, "dagd: hint: the token from %s was refused; it must match the server's token "
                            "(the server writes it to <state_dir>/token)\n", c->token_from);
        else
            fprintf(stderr, "dagd: hint: no token: set DAGD_TOKEN, or pass --token-file FILE, or --state DIR "
                            "of the server (it writes DIR/token); looked in %s\n", c->token_from);
    }
    json_decref(j);
}

static void hint_unknown_dag(client *c, const dg_buf *body);

/* A JSON request: on a 2xx the parsed answer in *ret; anything else is reported and
 * returns < 0 (which the verbs turn into exit status 3). */
static int call_ex(client *c, const char *method, const char *path, const json_t *body, json_t **ret,
                   bool quiet_404) {
    xfer x = {0};
    long status = perform(c, method, path, body, &x);
    if (status < 0) {
        dg_buf_free(&x.body);
        return (int)status;
    }
    if (status == 404 && quiet_404) {
        dg_buf_free(&x.body);
        return -ENOENT;
    }
    if (status < 200 || status >= 300) {
        report_error(c, status, &x.body);
        if (status == 404) hint_unknown_dag(c, &x.body);
        dg_buf_free(&x.body);
        return -EPROTO;
    }
    json_error_t je;
    json_t *j = json_loadb(x.body.data ? x.body.data : "", x.body.len, 0, &je);
    dg_buf_free(&x.body);
    if (!j) {
        fprintf(stderr, "dagd: %ld: the server's answer to %s %s is not JSON: %s\n", status, method, path, je.text);
        return -EPROTO;
    }
    *ret = j;
    return 0;
}

static int call(client *c, const char *method, const char *path, const json_t *body, json_t **ret) {
    return call_ex(c, method, path, body, ret, false);
}

/* Every page of a list ({"<key>": [...], "total_entries": N}) merged into one object of
 * the same shape, so --json still prints one document of the API's own form. */
static int call_list(client *c, const char *path, const char *key, json_t **ret) {
    json_t *all = NULL;
    for (size_t offset = 0;;) {
        _cleanup_free_ char *p = xasprintf("%s%slimit=%d&offset=%zu", path, strchr(path, '?') ? "&" : "?", PAGE,
                                           offset);
        json_t *page = NULL;
        if (call(c, "GET", p, NULL, &page) < 0) {
            json_decref(all);
            return -EPROTO;
        }
        json_t *items = json_object_get(page, key);
        if (!json_is_array(items)) {
            fprintf(stderr, "dagd: the server's answer to GET %s has no \"%s\" list\n", path, key);
            json_decref(page);
            json_decref(all);
            return -EPROTO;
        }
        size_t got = json_array_size(items);
        json_int_t total = json_integer_value(json_object_get(page, "total_entries"));
        if (!all) {
            all = page;
        } else {
            json_array_extend(json_object_get(all, key), items);
            json_decref(page);
        }
        offset += got;
        if (got == 0 || (json_int_t)offset >= total) break;
    }
    *ret = all;
    return 0;
}

/* The server's import errors and the number of files they are in. */
static int fetch_import_errors(client *c, json_t **ret, size_t *ret_files) {
    json_t *j = NULL;
    if (call(c, "GET", "/api/v1/import-errors", NULL, &j) < 0) return -EPROTO;
    json_t *items = json_object_get(j, "import_errors"), *e;
    size_t i, files = 0;
    json_array_foreach(items, i, e) {
        const char *f = json_string_value(json_object_get(e, "filename"));
        bool seen = false;
        for (size_t k = 0; k < i && f && !seen; k++) {
            const char *g = json_string_value(json_object_get(json_array_get(items, k), "filename"));
            seen = g && strcmp(f, g) == 0;
        }
        files += !seen;
    }
    *ret = j;
    *ret_files = files;
    return 0;
}

/* A DAG the server does not know may be in a file that did not load: say where to look
 * (the server names the file itself when the file declares that id). */
static void hint_unknown_dag(client *c, const dg_buf *body) {
    json_t *j = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    const char *detail = json_string_value(json_object_get(j, "detail"));
    bool named = detail && strstr(detail, "is not loaded: its file");
    bool about_dag = detail && dg_str_has_prefix(detail, "no DAG '");
    json_decref(j);
    if (named) {
        fprintf(stderr, "dagd: hint: dagd import-errors lists the errors\n");
        return;
    }
    json_t *errs = NULL;
    size_t files = 0;
    if (!about_dag || fetch_import_errors(c, &errs, &files) < 0) return;
    json_decref(errs);
    if (files)
        fprintf(stderr, "dagd: hint: %zu file%s of the server's DAGs folder %s errors and %s not loaded; "
                        "dagd import-errors lists them\n",
                files, files == 1 ? "" : "s", files == 1 ? "has" : "have", files == 1 ? "is" : "are");
}

/* ---- output ---- */

static void print_json(const json_t *j) {
    char *s = dg_server_json_text(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    fflush(stdout);
}

/* A field as table text: strings as they are, null/missing as "-", anything else as JSON. */
static char *field_text(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return xstrdup("-");
    if (json_is_string(v)) return xstrdup(*json_string_value(v) ? json_string_value(v) : "-");
    if (json_is_true(v)) return xstrdup("yes");
    if (json_is_false(v)) return xstrdup("no");
    if (json_is_integer(v)) return xasprintf("%lld", (long long)json_integer_value(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return s ? s : xstrdup("?");
}

/* Seconds as people read them: "0.4s", "12.0s", "3m12s". */
static char *duration_text(const json_t *obj) {
    const json_t *v = json_object_get(obj, "duration");
    if (!json_is_number(v)) return xstrdup("-");
    double s = json_number_value(v);
    if (s < 60) return xasprintf("%.1fs", s < 0 ? 0 : s);
    return dg_format_duration((int64_t)(s + 0.5) * 1000);
}

typedef char *(*cell_fn)(const json_t *obj, const char *key);

typedef struct column {
    const char *title;
    const char *key;
    cell_fn fn; /* NULL: field_text */
} column;

static char *duration_cell(const json_t *obj, const char *key) { return duration_text(obj); }

/* An import error's place as validate prints it, file:line:col (line 0: the whole file). */
static char *location_cell(const json_t *obj, const char *key) {
    _cleanup_free_ char *file = field_text(obj, key);
    json_int_t line = json_integer_value(json_object_get(obj, "line"));
    json_int_t col = json_integer_value(json_object_get(obj, "col"));
    if (line <= 0) return TAKE_PTR(file);
    return xasprintf("%s:%lld:%lld", file, (long long)line, (long long)col);
}

/* Free text on one line: a message may hold newlines (an engine's error, say). */
static char *one_line_cell(const json_t *obj, const char *key) {
    char *s = field_text(obj, key);
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    return s;
}

/* An image id as `docker images` shows it: the first 12 hex digits (the full one in --json). */
static char *image_id_cell(const json_t *obj, const char *key) {
    const char *id = json_string_value(json_object_get(obj, key));
    if (!id || !*id) return xstrdup("-");
    if (dg_str_has_prefix(id, "sha256:")) id += strlen("sha256:");
    return xstrndup(id, 12);
}

/* Aligned columns, two spaces apart, no trailing blanks. */
static void print_table(const json_t *items, const column *cols, size_t ncols) {
    size_t rows = json_array_size(items);
    char **cells = xcalloc((rows + 1) * ncols, sizeof(char *));
    size_t *width = xcalloc(ncols, sizeof(size_t));
    for (size_t k = 0; k < ncols; k++) cells[k] = xstrdup(cols[k].title);
    for (size_t r = 0; r < rows; r++) {
        const json_t *it = json_array_get(items, r);
        for (size_t k = 0; k < ncols; k++)
            cells[(r + 1) * ncols + k] = cols[k].fn ? cols[k].fn(it, cols[k].key) : field_text(it, cols[k].key);
    }
    for (size_t i = 0; i < (rows + 1) * ncols; i++) {
        size_t l = strlen(cells[i]);
        if (l > width[i % ncols]) width[i % ncols] = l;
    }
    for (size_t r = 0; r <= rows; r++) {
        for (size_t k = 0; k < ncols; k++) {
            const char *s = cells[r * ncols + k];
            if (k + 1 < ncols) printf("%-*s  ", (int)width[k], s);
            else printf("%s\n", s);
        }
    }
    for (size_t i = 0; i < (rows + 1) * ncols; i++) free(cells[i]);
    free(cells);
    free(width);
    fflush(stdout);
}

static const column dag_cols[] = {
    {"DAG_ID", "dag_id", NULL},
    {"PAUSED", "is_paused", NULL},
    {"SCHEDULE", "schedule", NULL},
    {"NEXT_RUN", "next_run_logical_date", NULL},
};
static const column run_cols[] = {
    {"RUN_ID", "dag_run_id", NULL},
    {"STATE", "state", NULL},
    {"LOGICAL_DATE", "logical_date", NULL},
    {"START", "start_date", NULL},
    {"END", "end_date", NULL},
};
static const column task_cols[] = {
    {"TASK", "task_id", NULL},
    {"STATE", "state", NULL},
    {"TRY", "try_number", NULL},
    {"EXIT", "exit_code", NULL},
    {"DURATION", "duration", duration_cell},
    {"IMAGE_ID", "image_id", image_id_cell},
    {"MESSAGE", "message", one_line_cell},
};
static const column import_error_cols[] = {
    {"FILE", "filename", location_cell},
    {"ERROR", "message", one_line_cell},
};

/* ---- input checks ---- */


/* A date or RFC 3339 time, sent on as RFC 3339 UTC so the server sees one form. */
static int parse_when(const char *opt, const char *s, char **ret) {
    int64_t ms;
    if (dg_parse_time(s, &ms) < 0) {
        fprintf(stderr, "dagd: --%s %s: expected a date (2025-01-31) or an RFC 3339 time\n", opt, s);
        return -EINVAL;
    }
    *ret = dg_format_time(ms, true);
    return 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* ---- verbs ---- */

/* The DAGs, then (on stderr, as Airflow's `dags list` does) how many files did not load:
 * a DAG missing from the table is most often in one of them. */
static int cmd_dags(client *c, opts *o) {
    json_t *j = NULL;
    if (call_list(c, "/api/v1/dags", "dags", &j) < 0) return EXIT_SERVER;
    if (c->json) print_json(j);
    else print_table(json_object_get(j, "dags"), dag_cols, ARRAY_SIZE(dag_cols));
    json_decref(j);
    json_t *errs = NULL;
    size_t files = 0;
    if (fetch_import_errors(c, &errs, &files) < 0) return EXIT_SERVER;
    json_decref(errs);
    if (files)
        fprintf(stderr, "%zu file%s errors: dagd import-errors\n", files, files == 1 ? " has" : "s have");
    return 0;
}

static int cmd_import_errors(client *c, opts *o) {
    json_t *j = NULL;
    size_t files = 0;
    if (fetch_import_errors(c, &j, &files) < 0) return EXIT_SERVER;
    if (c->json) print_json(j);
    else print_table(json_object_get(j, "import_errors"), import_error_cols, ARRAY_SIZE(import_error_cols));
    json_decref(j);
    return 0;
}

static int cmd_runs(client *c, opts *o) {
    _cleanup_free_ char *dag = seg(c, o->pos[0]);
    _cleanup_free_ char *path = xasprintf("/api/v1/dags/%s/runs", dag);
    json_t *j = NULL;
    if (call_list(c, path, "dag_runs", &j) < 0) return EXIT_SERVER;
    if (c->json) print_json(j);
    else print_table(json_object_get(j, "dag_runs"), run_cols, ARRAY_SIZE(run_cols));
    json_decref(j);
    return 0;
}

static char *run_path(client *c, const char *dag, const char *run) {
    _cleanup_free_ char *d = seg(c, dag), *r = seg(c, run);
    return xasprintf("/api/v1/dags/%s/runs/%s", d, r);
}

static char *task_path(client *c, const char *dag, const char *run, const char *task) {
    _cleanup_free_ char *rp = run_path(c, dag, run), *t = seg(c, task);
    return xasprintf("%s/tasks/%s", rp, t);
}

static int cmd_tasks(client *c, opts *o) {
    _cleanup_free_ char *rp = run_path(c, o->pos[0], o->pos[1]);
    _cleanup_free_ char *path = xasprintf("%s/tasks", rp);
    json_t *j = NULL;
    if (call(c, "GET", path, NULL, &j) < 0) return EXIT_SERVER;
    if (c->json) print_json(j);
    else print_table(json_object_get(j, "task_instances"), task_cols, ARRAY_SIZE(task_cols));
    json_decref(j);
    return 0;
}

static bool state_is(const json_t *obj, const char *state) {
    const char *s = json_string_value(json_object_get(obj, "state"));
    return s && strcmp(s, state) == 0;
}

static bool task_finished(const json_t *ti) {
    static const char *const done[] = {"success", "failed", "upstream_failed", "skipped"};
    for (size_t i = 0; i < ARRAY_SIZE(done); i++)
        if (state_is(ti, done[i])) return true;
    return false;
}

/* 1 when the DAG has the task, 0 when not, < 0 (reported) when the DAG cannot be read. */
static int dag_has_task(client *c, const char *dag, const char *task) {
    _cleanup_free_ char *d = seg(c, dag);
    _cleanup_free_ char *path = xasprintf("/api/v1/dags/%s", d);
    json_t *j = NULL;
    if (call(c, "GET", path, NULL, &j) < 0) return -EPROTO;
    json_t *ids = json_object_get(j, "task_ids"), *id;
    size_t i;
    int found = !json_is_array(ids); /* a server that does not list them: assume it has it */
    json_array_foreach(ids, i, id) {
        if (json_is_string(id) && strcmp(json_string_value(id), task) == 0) found = 1;
    }
    json_decref(j);
    return found;
}

/* The try to show: --try, else the task instance's current try. With -f a task that has
 * not started yet is waited for, so `trigger` followed by `logs -f` just works. */
static int pick_try(client *c, opts *o, long *ret) {
    if (o->try_s) {
        char *end;
        errno = 0;
        long n = strtol(o->try_s, &end, 10);
        if (errno || end == o->try_s || *end || n < 1 || n > 1000000) {
            fprintf(stderr, "dagd: --try %s: expected a try number (1, 2, ...)\n", o->try_s);
            return -EINVAL;
        }
        *ret = n;
        return 0;
    }
    _cleanup_free_ char *tp = task_path(c, o->pos[0], o->pos[1], o->pos[2]);
    _cleanup_free_ char *rp = run_path(c, o->pos[0], o->pos[1]);
    for (;;) {
        json_t *ti = NULL;
        int r = call_ex(c, "GET", tp, NULL, &ti, true);
        if (r == -ENOENT) {
            /* the server makes a task instance when the task is first scheduled */
            r = dag_has_task(c, o->pos[0], o->pos[2]);
            if (r < 0) return r;
            if (!r) {
                fprintf(stderr, "dagd: DAG '%s' has no task '%s'\n", o->pos[0], o->pos[2]);
                return -ENOENT;
            }
            ti = json_pack("{s:s,s:i}", "state", "none", "try_number", 0);
        } else if (r < 0) {
            return -EPROTO;
        }
        json_int_t n = json_integer_value(json_object_get(ti, "try_number"));
        bool finished = task_finished(ti);
        _cleanup_free_ char *state = field_text(ti, "state");
        json_decref(ti);
        if (n >= 1) {
            *ret = (long)n;
            return 0;
        }
        if (o->follow && !finished) {
            /* a run that ended (cancelled, say) leaves tasks that will never start */
            json_t *run = NULL;
            if (call(c, "GET", rp, NULL, &run) < 0) return -EPROTO;
            finished = state_is(run, "success") || state_is(run, "failed");
            json_decref(run);
        }
        if (!o->follow || finished) {
            fprintf(stderr, "dagd: task '%s' of run %s has not run (state %s), so it has no log\n", o->pos[2],
                    o->pos[1], state);
            return -ENOENT;
        }
        sleep_ms(POLL_MS);
    }
}

static int cmd_logs(client *c, opts *o) {
    long try_number;
    int r = pick_try(c, o, &try_number);
    if (r < 0) return r == -EINVAL ? EXIT_USAGE : EXIT_SERVER;
    _cleanup_free_ char *tp = task_path(c, o->pos[0], o->pos[1], o->pos[2]);
    _cleanup_free_ char *path = xasprintf("%s/logs/%ld%s%s", tp, try_number, o->follow ? "?follow=1" : "",
                                          o->header ? (o->follow ? "&header=1" : "?header=1") : "");
    xfer x = {.stream = stdout};
    long status = perform(c, "GET", path, NULL, &x);
    int rc = 0;
    if (status < 0) {
        rc = EXIT_SERVER;
    } else if (status < 200 || status >= 300) {
        report_error(c, status, &x.body);
        rc = EXIT_SERVER;
    }
    dg_buf_free(&x.body);
    return rc;
}

/* Failed tasks of a run on stderr, so `trigger --wait` says what went wrong. */
static void report_failed_tasks(client *c, const char *run_path_s) {
    _cleanup_free_ char *path = xasprintf("%s/tasks", run_path_s);
    json_t *j = NULL;
    if (call(c, "GET", path, NULL, &j) < 0) return;
    json_t *items = json_object_get(j, "task_instances"), *ti;
    size_t i;
    json_array_foreach(items, i, ti) {
        if (!state_is(ti, "failed") && !state_is(ti, "upstream_failed")) continue;
        const char *id = json_string_value(json_object_get(ti, "task_id"));
        const json_t *ec = json_object_get(ti, "exit_code");
        const char *msg = json_string_value(json_object_get(ti, "message"));
        fprintf(stderr, "dagd: task %s %s", id ? id : "?", json_string_value(json_object_get(ti, "state")));
        if (json_is_integer(ec))
            fprintf(stderr, " (try %lld, exit %lld)", (long long)json_integer_value(json_object_get(ti, "try_number")),
                    (long long)json_integer_value(ec));
        if (msg && *msg) fprintf(stderr, ": %s", msg);
        fputc('\n', stderr);
    }
    json_decref(j);
}

static int cmd_trigger(client *c, opts *o) {
    json_t *conf = NULL;
    _cleanup_free_ char *date = NULL;
    if (o->conf && dg__cli_parse_conf(o->conf, &conf) < 0) return EXIT_USAGE;
    if (o->date && parse_when("date", o->date, &date) < 0) {
        json_decref(conf);
        return EXIT_USAGE;
    }
    json_t *body = json_object();
    if (conf) json_object_set_new(body, "conf", conf);
    if (date) json_object_set_new(body, "logical_date", json_string(date));
    if (o->rerun) json_object_set_new(body, "rerun", json_true());
    _cleanup_free_ char *dag = seg(c, o->pos[0]);
    _cleanup_free_ char *path = xasprintf("/api/v1/dags/%s/runs", dag);
    json_t *run = NULL;
    int r = call(c, "POST", path, body, &run);
    json_decref(body);
    if (r < 0) return EXIT_SERVER;
    const char *run_id = json_string_value(json_object_get(run, "dag_run_id"));
    if (!run_id) {
        fprintf(stderr, "dagd: the server's answer to the trigger has no dag_run_id\n");
        json_decref(run);
        return EXIT_SERVER;
    }
    if (!o->wait) {
        if (c->json) print_json(run);
        else printf("%s\n", run_id);
        fflush(stdout);
        json_decref(run);
        return 0;
    }
    if (!c->json) {
        printf("%s\n", run_id);
        fflush(stdout);
    }
    _cleanup_free_ char *rp = run_path(c, o->pos[0], run_id);
    while (!state_is(run, "success") && !state_is(run, "failed")) {
        sleep_ms(POLL_MS);
        json_decref(run);
        run = NULL;
        if (call(c, "GET", rp, NULL, &run) < 0) return EXIT_SERVER;
    }
    bool ok = state_is(run, "success");
    if (c->json) print_json(run);
    else printf("%s %s\n", json_string_value(json_object_get(run, "dag_run_id")), ok ? "success" : "failed");
    fflush(stdout);
    if (!ok) report_failed_tasks(c, rp);
    json_decref(run);
    return ok ? 0 : EXIT_FAILED;
}

static int set_paused(client *c, opts *o, bool paused) {
    _cleanup_free_ char *dag = seg(c, o->pos[0]);
    _cleanup_free_ char *path = xasprintf("/api/v1/dags/%s", dag);
    json_t *body = json_pack("{s:b}", "is_paused", paused);
    json_t *j = NULL;
    int r = call(c, "PATCH", path, body, &j);
    json_decref(body);
    if (r < 0) return EXIT_SERVER;
    if (c->json) print_json(j);
    else printf("%s %s\n", o->pos[0], json_is_true(json_object_get(j, "is_paused")) ? "paused" : "unpaused");
    fflush(stdout);
    json_decref(j);
    return 0;
}

/* The server's health (GET /api/v1/health, no token needed): exit 0 when it answers
 * "ok", 3 otherwise; what a container HEALTHCHECK runs (docs/cli.md, docs/images.md). */
static int cmd_health(client *c, opts *o) {
    json_t *j = NULL;
    if (call(c, "GET", "/api/v1/health", NULL, &j) < 0) return EXIT_SERVER;
    _cleanup_free_ char *status = field_text(j, "status"), *version = field_text(j, "version");
    if (c->json) print_json(j);
    else printf("%s %s\n", status, version);
    bool ok = json_is_string(json_object_get(j, "status")) && strcmp(status, "ok") == 0;
    json_decref(j);
    return ok ? 0 : EXIT_SERVER;
}

static int cmd_pause(client *c, opts *o) { return set_paused(c, o, true); }
static int cmd_unpause(client *c, opts *o) { return set_paused(c, o, false); }

/* A run-shaped answer as "<run_id> <state>", or the JSON. */
static void print_run_line(client *c, const json_t *j) {
    if (c->json) {
        print_json(j);
        return;
    }
    _cleanup_free_ char *id = field_text(j, "dag_run_id"), *state = field_text(j, "state");
    printf("%s %s\n", id, state);
    fflush(stdout);
}

static bool run_ended(const json_t *run) { return state_is(run, "success") || state_is(run, "failed"); }

/* The server stops the run's containers (SIGTERM, then SIGKILL after the grace) and ends
 * the run once they are gone: wait for that, within a bound, so what is printed is the
 * state the run ends in. `dagd tasks` says why each task ended. */
static int cmd_cancel(client *c, opts *o) {
    _cleanup_free_ char *rp = run_path(c, o->pos[0], o->pos[1]);
    _cleanup_free_ char *path = xasprintf("%s/cancel", rp);
    json_t *j = NULL;
    if (call(c, "POST", path, NULL, &j) < 0) return EXIT_SERVER;
    for (long waited = 0; !run_ended(j) && waited < CANCEL_WAIT_MS; waited += POLL_MS) {
        sleep_ms(POLL_MS);
        json_t *now = NULL;
        if (call(c, "GET", rp, NULL, &now) < 0) {
            json_decref(j);
            return EXIT_SERVER;
        }
        json_decref(j);
        j = now;
    }
    if (c->json || run_ended(j)) {
        print_run_line(c, j);
    } else {
        _cleanup_free_ char *id = field_text(j, "dag_run_id"), *state = field_text(j, "state");
        printf("%s %s\n", id, state);
        fflush(stdout);
        fprintf(stderr, "dagd: cancelled; the run's containers are still stopping, and it ends failed when they "
                        "have stopped\n");
    }
    json_decref(j);
    return 0;
}

/* The clear answer lists {dag_id, dag_run_id, task_id} of what was cleared, no states:
 * say which tasks of which run. */
static void print_cleared(client *c, const json_t *j, const char *run_id) {
    if (c->json) {
        print_json(j);
        return;
    }
    const json_t *tis = json_object_get(j, "task_instances"), *ti;
    size_t n = json_array_size(tis), i;
    if (!n) {
        printf("nothing cleared in run %s: no task matched\n", run_id);
        fflush(stdout);
        return;
    }
    printf("cleared %zu task%s of run %s:", n, n == 1 ? "" : "s", run_id);
    json_array_foreach(tis, i, ti) {
        _cleanup_free_ char *id = field_text(ti, "task_id");
        printf("%s %s", i ? "," : "", id);
    }
    putchar('\n');
    fflush(stdout);
}

static int cmd_clear(client *c, opts *o) {
    json_t *body = json_object();
    if (o->n_pos > 2) {
        json_t *tasks = json_array();
        for (size_t i = 2; i < o->n_pos; i++) json_array_append_new(tasks, json_string(o->pos[i]));
        json_object_set_new(body, "tasks", tasks);
    }
    json_object_set_new(body, "downstream", json_boolean(o->downstream));
    json_object_set_new(body, "only_failed", json_boolean(o->failed));
    _cleanup_free_ char *rp = run_path(c, o->pos[0], o->pos[1]);
    _cleanup_free_ char *path = xasprintf("%s/clear", rp);
    json_t *j = NULL;
    int r = call(c, "POST", path, body, &j);
    json_decref(body);
    if (r < 0) return EXIT_SERVER;
    print_cleared(c, j, o->pos[1]);
    json_decref(j);
    return 0;
}

static int cmd_mark(client *c, opts *o) {
    const char *state = o->pos[3];
    if (strcmp(state, "success") != 0 && strcmp(state, "failed") != 0) {
        fprintf(stderr, "dagd mark: state must be success or failed, not '%s'\n", state);
        return EXIT_USAGE;
    }
    _cleanup_free_ char *tp = task_path(c, o->pos[0], o->pos[1], o->pos[2]);
    json_t *body = json_pack("{s:s}", "state", state);
    json_t *j = NULL;
    int r = call(c, "PATCH", tp, body, &j);
    json_decref(body);
    if (r < 0) return EXIT_SERVER;
    if (c->json) {
        print_json(j);
    } else {
        _cleanup_free_ char *id = field_text(j, "task_id"), *st = field_text(j, "state");
        printf("%s %s\n", id, st);
        fflush(stdout);
    }
    json_decref(j);
    return 0;
}

static const column backfill_cols[] = {
    {"RUN_ID", "dag_run_id", NULL},
    {"STATE", "state", NULL},
    {"LOGICAL_DATE", "logical_date", NULL},
    {"START", "start_date", NULL},
    {"END", "end_date", NULL},
    {"BACKFILL", "backfill", NULL},
};

static bool listed(const json_t *ids, const char *id) {
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (json_is_string(v) && id && strcmp(json_string_value(v), id) == 0) return true;
    }
    return false;
}

/* The range's runs, each with what the backfill did about it: created, left as it was
 * (existing) or cleared to run again (--rerun). */
static int cmd_backfill(client *c, opts *o) {
    if (!o->from || !o->to) {
        fprintf(stderr, "dagd backfill: --from and --to are both needed\n");
        return EXIT_USAGE;
    }
    _cleanup_free_ char *from = NULL, *to = NULL;
    if (parse_when("from", o->from, &from) < 0 || parse_when("to", o->to, &to) < 0) return EXIT_USAGE;
    json_t *conf = NULL;
    if (o->conf && dg__cli_parse_conf(o->conf, &conf) < 0) return EXIT_USAGE;
    _cleanup_free_ char *dag = seg(c, o->pos[0]);
    _cleanup_free_ char *path = xasprintf("/api/v1/dags/%s/backfill", dag);
    json_t *body = json_pack("{s:s,s:s}", "from", from, "to", to);
    if (conf) json_object_set_new(body, "conf", conf);
    if (o->rerun) json_object_set_new(body, "rerun", json_true());
    json_t *j = NULL;
    int r = call(c, "POST", path, body, &j);
    json_decref(body);
    if (r < 0) return EXIT_SERVER;
    if (c->json) {
        print_json(j);
        json_decref(j);
        return 0;
    }
    json_t *runs = json_object_get(j, "dag_runs"), *run;
    size_t i, kept = 0;
    json_array_foreach(runs, i, run) {
        const char *id = json_string_value(json_object_get(run, "dag_run_id"));
        const char *what = listed(json_object_get(j, "created"), id)    ? "created"
                           : listed(json_object_get(j, "cleared"), id)  ? "cleared"
                           : listed(json_object_get(j, "existing"), id) ? "existing"
                                                                        : NULL;
        kept += what && !strcmp(what, "existing");
        json_object_set_new(run, "backfill", what ? json_string(what) : json_null());
    }
    print_table(runs, backfill_cols, ARRAY_SIZE(backfill_cols));
    if (kept)
        fprintf(stderr, "dagd: %zu run%s existed already and %s left as %s; --rerun clears %s to run again\n", kept,
                kept == 1 ? "" : "s", kept == 1 ? "was" : "were", kept == 1 ? "it was" : "they were",
                kept == 1 ? "it" : "them");
    json_decref(j);
    return 0;
}

#define COMMON " [--server URL] [--token-file F] [--state DIR]"

static const verb verbs[] = {
    {"dags", cmd_dags, 0, 0, O_JSON, "usage: dagd dags [--json]" COMMON "\n"},
    {"health", cmd_health, 0, 0, O_JSON,
     "usage: dagd health [--json]" COMMON "\n  exit 0 when the server answers that it is ok, 3 otherwise\n"},
    {"import-errors", cmd_import_errors, 0, 0, O_JSON,
     "usage: dagd import-errors [--json]" COMMON "\n  the DAG files the server could not load, and why\n"},
    {"runs", cmd_runs, 1, 1, O_JSON, "usage: dagd runs DAG [--json]" COMMON "\n"},
    {"tasks", cmd_tasks, 2, 2, O_JSON, "usage: dagd tasks DAG RUN [--json]" COMMON "\n"},
    {"logs", cmd_logs, 3, 3, O_TRY | O_FOLLOW | O_HEADER, "usage: dagd logs DAG RUN TASK [--try N] [-f] [--header]" COMMON "\n"},
    {"trigger", cmd_trigger, 1, 1, O_JSON | O_CONF | O_DATE | O_WAIT | O_RERUN,
     "usage: dagd trigger DAG [--conf JSON] [--date D] [--rerun] [--wait] [--json]" COMMON "\n"},
    {"pause", cmd_pause, 1, 1, O_JSON, "usage: dagd pause DAG [--json]" COMMON "\n"},
    {"unpause", cmd_unpause, 1, 1, O_JSON, "usage: dagd unpause DAG [--json]" COMMON "\n"},
    {"cancel", cmd_cancel, 2, 2, O_JSON, "usage: dagd cancel DAG RUN [--json]" COMMON "\n"},
    {"clear", cmd_clear, 2, SIZE_MAX, O_JSON | O_DOWNSTREAM | O_FAILED,
     "usage: dagd clear DAG RUN [TASK...] [--downstream] [--failed] [--json]" COMMON "\n"},
    {"mark", cmd_mark, 4, 4, O_JSON, "usage: dagd mark DAG RUN TASK success|failed [--json]" COMMON "\n"},
    {"backfill", cmd_backfill, 1, 1, O_JSON | O_FROM | O_TO | O_CONF | O_RERUN | O_RESET,
     "usage: dagd backfill DAG --from D --to D [--conf JSON] [--rerun|--reset-dagruns] [--json]" COMMON "\n"},
};

int dg__cli_client(int argc, char **argv) {
    if (argc < 1) return -1;
    const verb *v = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(argv[0], verbs[i].name) == 0) v = &verbs[i];
    if (!v) return -1;
    opts o = {0};
    int rc;
    if (parse_opts(v, argc - 1, argv + 1, &o) < 0) {
        rc = EXIT_USAGE;
    } else if (o.help) {
        fputs(v->usage, stdout);
        rc = 0;
    } else if (o.n_pos < v->min_pos || o.n_pos > v->max_pos) {
        fputs(v->usage, stderr);
        rc = EXIT_USAGE;
    } else {
        signal(SIGPIPE, SIG_IGN); /* `dagd logs -f | head` ends quietly on EPIPE */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        client c = {0};
        int r = client_init(&c, &o);
        rc = r == -EINVAL ? EXIT_USAGE : r < 0 ? EXIT_SERVER : v->fn(&c, &o);
        client_free(&c);
        curl_global_cleanup();
    }
    free(o.pos);
    return rc;
}
