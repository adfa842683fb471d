/* api/routes — docs/api.md's endpoints: the path table, the bearer-token check, query and body
 * validation, and one handler per (path, method) that calls the matching dg_server_*
 * function and turns its JSON or errno into the reply. Validation here is what makes
 * bad input a 4xx whatever the server does with it: bodies must be JSON objects whose
 * known fields have the right types, lists take limit 1..1000 and offset >= 0. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/server.h"
#include "internal.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

/* ---- auth */

bool dg__api_token_ok(const dg_api *a, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    const char *t = h + 7;
    while (*t == ' ') t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t')) n--;
    return dg__api_const_eq(t, n, a->token, a->token_len);
}

/* ---- paths */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool dg__api_unescape(char *s) {
    char *w = s;
    for (const char *p = s; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
            char ch = (char)(hi * 16 + lo);
            if (ch == '\0') return false;
            *w++ = ch;
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return true;
}

enum { M_GET, M_POST, M_PATCH, M_MAX };
static const char *const method_names[M_MAX] = {"GET", "POST", "PATCH"};

typedef struct dg__api_route {
    /* literal segments, or "{dag}" "{run}" "{task}" "{try}" for parameters */
    const char *seg[10];
    dg__api_handler handler[M_MAX];
    const char *allow;
    bool public;
} route;

static enum MHD_Result h_health(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_metrics(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_list_dags(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_get_dag(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_patch_dag(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_source(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_import_errors(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_list_runs(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_trigger(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_get_run(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_cancel(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_clear(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_list_tasks(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_get_task(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_patch_task(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_log(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_backfill(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_sign_in(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_session(dg_api *a, struct MHD_Connection *c, dg__api_req *r);
static enum MHD_Result h_sign_out(dg_api *a, struct MHD_Connection *c, dg__api_req *r);

#define V1 "api", "v1"
#define GET_(h) {[M_GET] = h}
static const route routes[] = {
    {{V1, "health"}, GET_(h_health), "GET", true},
    {{"metrics"}, GET_(h_metrics), "GET", false},
    {{V1, "dags"}, GET_(h_list_dags), "GET", false},
    {{V1, "dags", "{dag}"}, {[M_GET] = h_get_dag, [M_PATCH] = h_patch_dag}, "GET, PATCH", false},
    {{V1, "dags", "{dag}", "source"}, GET_(h_source), "GET", false},
    {{V1, "import-errors"}, GET_(h_import_errors), "GET", false},
    {{V1, "dags", "{dag}", "runs"}, {[M_GET] = h_list_runs, [M_POST] = h_trigger}, "GET, POST", false},
    {{V1, "dags", "{dag}", "runs", "{run}"}, GET_(h_get_run), "GET", false},
    {{V1, "dags", "{dag}", "runs", "{run}", "cancel"}, {[M_POST] = h_cancel}, "POST", false},
    {{V1, "dags", "{dag}", "runs", "{run}", "clear"}, {[M_POST] = h_clear}, "POST", false},
    {{V1, "dags", "{dag}", "runs", "{run}", "tasks"}, GET_(h_list_tasks), "GET", false},
    {{V1, "dags", "{dag}", "runs", "{run}", "tasks", "{task}"}, {[M_GET] = h_get_task, [M_PATCH] = h_patch_task},
     "GET, PATCH", false},
    {{V1, "dags", "{dag}", "runs", "{run}", "tasks", "{task}", "logs", "{try}"}, GET_(h_log), "GET", false},
    {{V1, "dags", "{dag}", "backfill"}, {[M_POST] = h_backfill}, "POST", false},
    /* the web UI (docs/ui.md): its files are public, the data comes from the API above */
    {{""}, GET_(dg__api_ui_root), "GET", true},
    {{"ui", ""}, GET_(dg__api_ui_index), "GET", true},
    {{"ui", "app.js"}, GET_(dg__api_ui_js), "GET", true},
    {{"ui", "app.css"}, GET_(dg__api_ui_css), "GET", true},
    {{"ui", "sign-in"}, {[M_POST] = h_sign_in}, "POST", true},
    {{"ui", "session"}, GET_(h_session), "GET", false},
    {{"ui", "sign-out"}, {[M_POST] = h_sign_out}, "POST", false},
};

static int param_index(const char *pattern) {
    if (strcmp(pattern, "{dag}") == 0) return DG_API_P_DAG;
    if (strcmp(pattern, "{run}") == 0) return DG_API_P_RUN;
    if (strcmp(pattern, "{task}") == 0) return DG_API_P_TASK;
    if (strcmp(pattern, "{try}") == 0) return DG_API_P_TRY;
    return -1;
}

#define MAX_SEGS 12

int dg__api_route(const char *url, dg__api_req *r, const char **ret_detail) {
    if (!url || url[0] != '/') {
        *ret_detail = "no such endpoint";
        return 404;
    }
    /* Split the still-escaped path; decode each segment on its own so %2F stays inside it. */
    _cleanup_free_ char *copy = xstrdup(url + 1);
    char *q = strchr(copy, '?');
    if (q) *q = '\0';
    char *segs[MAX_SEGS];
    size_t n = 0;
    for (char *p = copy;; n++) {
        if (n == MAX_SEGS) {
            *ret_detail = "no such endpoint";
            return 404;
        }
        segs[n] = p;
        char *slash = strchr(p, '/');
        if (!slash) {
            n++;
            break;
        }
        *slash = '\0';
        p = slash + 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!dg__api_unescape(segs[i])) {
            *ret_detail = "the path holds an encoded NUL byte";
            return 400;
        }
    }
    for (size_t k = 0; k < ARRAY_SIZE(routes); k++) {
        const route *rt = &routes[k];
        size_t len = 0;
        while (len < ARRAY_SIZE(rt->seg) && rt->seg[len]) len++;
        if (len != n) continue;
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
            ok = param_index(rt->seg[i]) >= 0 ? segs[i][0] != '\0' : strcmp(rt->seg[i], segs[i]) == 0;
        if (!ok) continue;
        for (size_t i = 0; i < n; i++) {
            int pi = param_index(rt->seg[i]);
            if (pi >= 0) r->param[pi] = xstrdup(segs[i]);
        }
        r->route = rt;
        return 0;
    }
    *ret_detail = "no such endpoint";
    return 404;
}

const char *dg__api_route_allow(const route *rt) { return rt->allow; }
bool dg__api_route_public(const route *rt) { return rt->public; }

bool dg__api_method_changes_state(const char *method) {
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

dg__api_handler dg__api_route_handler(const route *rt, const char *method) {
    for (int m = 0; m < M_MAX; m++)
        if (strcmp(method, method_names[m]) == 0) return rt->handler[m];
    return NULL;
}

/* ---- query and body */

/* A query value, percent-decoded ('+' is a space there), or NULL when absent. */
static char *query_value(struct MHD_Connection *c, const char *key) {
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (!v) return NULL;
    char *s = xstrdup(v);
    for (char *p = s; *p; p++)
        if (*p == '+') *p = ' ';
    if (!dg__api_unescape(s)) s[0] = '\x01'; /* never a valid number */
    return s;
}

static bool parse_int(const char *s, long min, long max, long *ret) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') {
            if (!(p == s && *p == '-' && p[1])) return false;
        }
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *ret = v;
    return true;
}

/* limit and offset of a list; false after answering 400. */
static bool list_args(struct MHD_Connection *c, int *ret_limit, int *ret_offset, enum MHD_Result *ret) {
    _cleanup_free_ char *l = query_value(c, "limit");
    _cleanup_free_ char *o = query_value(c, "offset");
    long limit = LIST_LIMIT_DEFAULT, offset = 0;
    if (l && !parse_int(l, 1, LIST_LIMIT_MAX, &limit)) {
        *ret = dg__api_reply_error(c, 400, "limit must be an integer from 1 to %d", LIST_LIMIT_MAX);
        return false;
    }
    if (o && !parse_int(o, 0, INT_MAX, &offset)) {
        *ret = dg__api_reply_error(c, 400, "offset must be an integer from 0 to %d", INT_MAX);
        return false;
    }
    *ret_limit = (int)limit;
    *ret_offset = (int)offset;
    return true;
}

typedef enum { F_BOOL, F_STRING, F_OBJECT, F_STRING_ARRAY } ftype;
typedef struct {
    const char *name;
    ftype type;
    bool required;
} field;

static const char *ftype_name(ftype t) {
    switch (t) {
    case F_BOOL: return "a boolean";
    case F_STRING: return "a string";
    case F_OBJECT: return "an object";
    case F_STRING_ARRAY: return "an array of strings";
    }
    return "?";
}

static bool ftype_ok(const json_t *v, ftype t) {
    switch (t) {
    case F_BOOL: return json_is_boolean(v);
    case F_STRING: return json_is_string(v);
    case F_OBJECT: return json_is_object(v);
    case F_STRING_ARRAY: {
        if (!json_is_array(v)) return false;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (!json_is_string(e)) return false;
        return true;
    }
    }
    return false;
}

/* The body as a JSON object with the given fields checked; an empty body is {} when
 * nothing is required. NULL after answering 400. */
static json_t *body_object(struct MHD_Connection *c, dg__api_req *r, const field *fields, size_t nfields,
                           enum MHD_Result *ret) {
    json_t *o;
    if (r->body.len == 0) {
        o = json_object();
    } else {
        json_error_t je;
        o = json_loadb(r->body.data, r->body.len, 0, &je);
        if (!o) {
            *ret = dg__api_reply_error(c, 400, "the body is not valid JSON: %s (line %d, column %d)", je.text,
                                       je.line, je.column);
            return NULL;
        }
        if (!json_is_object(o)) {
            json_decref(o);
            *ret = dg__api_reply_error(c, 400, "the body must be a JSON object");
            return NULL;
        }
    }
    const char *names[8];
    for (size_t i = 0; i < nfields && i < ARRAY_SIZE(names); i++) names[i] = fields[i].name;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        bool known = false;
        for (size_t i = 0; i < nfields && !known; i++) known = strcmp(key, names[i]) == 0;
        if (known) continue;
        const char *near = dg_suggest(key, names, nfields);
        if (near)
            *ret = dg__api_reply_error(c, 400, "unknown field \"%s\" (did you mean \"%s\"?)", key, near);
        else
            *ret = dg__api_reply_error(c, 400, "unknown field \"%s\"", key);
        json_decref(o);
        return NULL;
    }
    for (size_t i = 0; i < nfields; i++) {
        json_t *v = json_object_get(o, fields[i].name);
        if (!v) {
            if (fields[i].required) {
                json_decref(o);
                *ret = dg__api_reply_error(c, 400, "the body needs \"%s\" (%s)", fields[i].name,
                                           ftype_name(fields[i].type));
                return NULL;
            }
            continue;
        }
        if (!ftype_ok(v, fields[i].type)) {
            json_decref(o);
            *ret = dg__api_reply_error(c, 400, "\"%s\" must be %s", fields[i].name, ftype_name(fields[i].type));
            return NULL;
        }
    }
    return o;
}

static enum MHD_Result reply_result(struct MHD_Connection *c, int rc, json_t *out, dg_error *err,
                                    unsigned ok_status) {
    enum MHD_Result ret;
    if (rc < 0)
        ret = dg__api_reply_errno(c, rc, err);
    else if (!out)
        ret = dg__api_reply_error(c, 500, "the server returned nothing");
    else
        ret = dg__api_reply_json(c, ok_status, out);
    dg_error_clear(err);
    return ret;
}

#define P(i) (r->param[i])

/* ---- handlers */

static enum MHD_Result h_health(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    json_t *o = dg_server_health(a->server);
    if (!o) return dg__api_reply_error(c, 503, "the server is not ready");
    return dg__api_reply_json(c, 200, o);
}

static enum MHD_Result h_metrics(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    char *text = dg_server_metrics(a->server);
    if (!text) text = xstrdup("");
    return dg__api_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
}

static enum MHD_Result h_list_dags(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    int limit, offset;
    enum MHD_Result ret;
    if (!list_args(c, &limit, &offset, &ret)) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_list_dags(a->server, limit, offset, &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_get_dag(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_get_dag(a->server, P(DG_API_P_DAG), &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_patch_dag(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {{"is_paused", F_BOOL, true}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_patch_dag(a->server, P(DG_API_P_DAG), body, &out, &err);
    json_decref(body);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_source(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    char *text = NULL;
    size_t len = 0;
    int rc = dg_server_dag_source(a->server, P(DG_API_P_DAG), &text, &len, &err);
    if (rc < 0) {
        enum MHD_Result ret = dg__api_reply_errno(c, rc, &err);
        dg_error_clear(&err);
        return ret;
    }
    if (!text) {
        text = xstrdup("");
        len = 0;
    }
    return dg__api_reply(c, 200, "text/plain; charset=utf-8", text, len);
}

static enum MHD_Result h_import_errors(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    json_t *o = dg_server_import_errors(a->server);
    if (!o) o = json_pack("{s:[], s:i}", "import_errors", "total_entries", 0);
    return dg__api_reply_json(c, 200, o);
}

static enum MHD_Result h_list_runs(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    int limit, offset;
    enum MHD_Result ret;
    if (!list_args(c, &limit, &offset, &ret)) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_list_runs(a->server, P(DG_API_P_DAG), limit, offset, &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_trigger(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {{"conf", F_OBJECT, false}, {"logical_date", F_STRING, false}, {"rerun", F_BOOL, false}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_trigger(a->server, P(DG_API_P_DAG), body, &out, &err);
    json_decref(body);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_get_run(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_get_run(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_cancel(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_cancel_run(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_clear(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {
        {"tasks", F_STRING_ARRAY, false}, {"downstream", F_BOOL, false}, {"only_failed", F_BOOL, false}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_clear(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), body, &out, &err);
    json_decref(body);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_list_tasks(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_list_tasks(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_get_task(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_get_task(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), P(DG_API_P_TASK), &out, &err);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_patch_task(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {{"state", F_STRING, true}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_patch_task(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), P(DG_API_P_TASK), body, &out,
                                  &err);
    json_decref(body);
    return reply_result(c, rc, out, &err, 200);
}

static enum MHD_Result h_log(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    long try_number;
    if (!parse_int(P(DG_API_P_TRY), 1, INT_MAX, &try_number))
        return dg__api_reply_error(c, 400, "the try number must be an integer >= 1");
    _cleanup_free_ char *f = query_value(c, "follow");
    bool follow = false;
    if (f) {
        if (strcmp(f, "1") == 0 || strcmp(f, "true") == 0)
            follow = true;
        else if (!(strcmp(f, "0") == 0 || strcmp(f, "false") == 0))
            return dg__api_reply_error(c, 400, "follow must be 1, true, 0 or false");
    }
    _cleanup_free_ char *hv = query_value(c, "header");
    bool header = false;
    if (hv) {
        if (strcmp(hv, "1") == 0 || strcmp(hv, "true") == 0)
            header = true;
        else if (!(strcmp(hv, "0") == 0 || strcmp(hv, "false") == 0))
            return dg__api_reply_error(c, 400, "header must be 1, true, 0 or false");
    }
    _cleanup_free_ char *sv = query_value(c, "streams");
    if (sv && !(strcmp(sv, "0") == 0 || strcmp(sv, "false") == 0)) {
        if (!(strcmp(sv, "1") == 0 || strcmp(sv, "true") == 0))
            return dg__api_reply_error(c, 400, "streams must be 1, true, 0 or false");
        if (follow) return dg__api_reply_error(c, 400, "streams=1 cannot be combined with follow=1");
        dg_error err = {0};
        char *text = NULL;
        size_t len = 0;
        int rc = dg_server_log_streams(a->server, P(DG_API_P_DAG), P(DG_API_P_RUN), P(DG_API_P_TASK),
                                       (int)try_number, header, &text, &len, &err);
        if (rc < 0) {
            enum MHD_Result ret = dg__api_reply_errno(c, rc, &err);
            dg_error_clear(&err);
            return ret;
        }
        return dg__api_reply(c, 200, "text/plain; charset=utf-8", text, len);
    }
    return dg__api_serve_log(a, c, P(DG_API_P_DAG), P(DG_API_P_RUN), P(DG_API_P_TASK), (int)try_number, follow, header);
}

static enum MHD_Result h_backfill(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {
        {"from", F_STRING, true}, {"to", F_STRING, true}, {"conf", F_OBJECT, false}, {"rerun", F_BOOL, false}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    dg_error err = {0};
    json_t *out = NULL;
    int rc = dg_server_backfill(a->server, P(DG_API_P_DAG), body, &out, &err);
    json_decref(body);
    return reply_result(c, rc, out, &err, 200);
}

/* ---- web UI sessions (docs/ui.md, Sessions) */

static enum MHD_Result reply_session(struct MHD_Connection *c, unsigned status, json_t *body,
                                     const dg__api_session *s, bool set_cookie) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (set_cookie) {
        _cleanup_free_ char *cookie = dg__api_session_cookie(s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, cookie);
    }
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static json_t *session_json(const dg__api_session *s) {
    return json_pack("{s:s, s:I}", "csrf_token", s->csrf, "expires_in", (json_int_t)((s->expires_ms - dg_now_ms()) / 1000));
}

static enum MHD_Result h_sign_in(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    static const field f[] = {{"token", F_STRING, true}};
    enum MHD_Result ret;
    json_t *body = body_object(c, r, f, ARRAY_SIZE(f), &ret);
    if (!body) return ret;
    const char *t = json_string_value(json_object_get(body, "token"));
    bool ok = dg__api_const_eq(t, strlen(t), a->token, a->token_len);
    json_decref(body);
    if (!ok) return dg__api_reply_error(c, 401, "that is not the API token");
    dg__api_session *s = dg__api_session_new(a);
    if (!s) return dg__api_reply_error(c, 503, "no random bytes for a session id");
    return reply_session(c, 200, session_json(s), s, true);
}

static enum MHD_Result h_session(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg__api_session *s = dg__api_session_find(a, c);
    if (!s) return dg__api_reply_error(c, 401, "this request is not signed in with a session cookie");
    return reply_session(c, 200, session_json(s), s, false);
}

static enum MHD_Result h_sign_out(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    dg__api_session *s = dg__api_session_find(a, c);
    if (s) dg__api_session_end(s);
    return reply_session(c, 200, json_pack("{s:b}", "signed_out", s != NULL), NULL, true);
}
