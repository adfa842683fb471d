/* exec/notify — notifications (email over SMTP, webhooks) for notify tasks and for
 * on_failure / on_success / on_retry, and the GET of an http sensor. Each is a blocking
 * libcurl transfer, so it runs on libuv's thread pool; the result comes back on the loop.
 * SMTP settings come with the executor's options (the configuration's smtp keys). */
#include <curl/curl.h>
#include <errno.h>
#include <string.h>

#include "dagd/log.h"
#include "dagd/tmpl.h"
#include "exec_internal.h"

typedef struct notify_job {
    uv_work_t work;
    dg_exec *x;
    exec_try *t; /* NULL for event notifications */
    char *name;
    /* rendered */
    char *url, *body, *subject, *from, *user, *password;
    char **to;
    bool email;
    /* an http sensor's GET (dg__exec_http_get) */
    bool get;
    int64_t timeout_ms;
    dg__exec_http_cb cb;
    void *cb_ud;
    /* result */
    char *error;
    long status;
    dg_buf resp;
} notify_job;

typedef struct upload {
    const char *data;
    size_t len, off;
} upload;

static size_t read_cb(char *buf, size_t size, size_t n, void *ud) {
    upload *u = ud;
    size_t want = size * n, left = u->len - u->off;
    if (want > left) want = left;
    memcpy(buf, u->data + u->off, want);
    u->off += want;
    return want;
}

static size_t discard_cb(char *p, size_t s, size_t n, void *ud) { return s * n; }

#define HTTP_BODY_MAX (1024 * 1024) /* an http sensor matches its body against this much */

static size_t keep_cb(char *p, size_t s, size_t n, void *ud) {
    dg_buf *b = ud;
    size_t len = s * n;
    if (b->len < HTTP_BODY_MAX) dg_buf_append(b, p, len < HTTP_BODY_MAX - b->len ? len : HTTP_BODY_MAX - b->len);
    return len;
}

static void deliver(uv_work_t *w) {
    notify_job *j = w->data;
    CURL *c = curl_easy_init();
    if (!c) {
        j->error = xstrdup("cannot initialise libcurl");
        return;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL, *rcpt = NULL;
    dg_buf msg = {0};
    upload up = {0};
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
    if (j->get) {
        curl_easy_setopt(c, CURLOPT_URL, j->url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)j->timeout_ms);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &j->resp);
    } else if (j->email) {
        curl_easy_setopt(c, CURLOPT_URL, j->url);
        curl_easy_setopt(c, CURLOPT_MAIL_FROM, j->from);
        for (size_t i = 0; j->to && j->to[i]; i++) rcpt = curl_slist_append(rcpt, j->to[i]);
        curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
        if (j->user) curl_easy_setopt(c, CURLOPT_USERNAME, j->user);
        if (j->password) curl_easy_setopt(c, CURLOPT_PASSWORD, j->password);
        char date[64];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        dg_buf_printf(&msg, "Date: %s\r\nFrom: %s\r\nTo: ", date, j->from);
        for (size_t i = 0; j->to && j->to[i]; i++) dg_buf_printf(&msg, "%s%s", i ? ", " : "", j->to[i]);
        dg_buf_printf(&msg, "\r\nSubject: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
                      j->subject, j->body);
        up.data = msg.data;
        up.len = msg.len;
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_URL, j->url);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK && j->get)
        j->error = xstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (rc != CURLE_OK)
        j->error = xasprintf("notification '%s': %s", j->name, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    if (rc == CURLE_OK && j->get) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &j->status);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(rcpt);
    dg_buf_free(&msg);
    curl_easy_cleanup(c);
}

static void job_free(notify_job *j) {
    free(j->name);
    free(j->url);
    free(j->body);
    free(j->subject);
    free(j->from);
    free(j->user);
    free(j->password);
    dg_strv_free(j->to);
    free(j->error);
    dg_buf_free(&j->resp);
    free(j);
}

static void delivered(uv_work_t *w, int status) {
    notify_job *j = w->data;
    if (status == UV_ECANCELED && !j->error) j->error = xstrdup(j->get ? "request cancelled" : "notification cancelled");
    if (j->get) {
        j->cb(j->cb_ud, j->status, j->resp.data ? j->resp.data : "", j->resp.len, j->error);
    } else if (j->t) {
        if (j->error) dg__exec_try_fail(j->t, j->error);
        else dg__exec_try_succeed(j->t);
    } else if (j->error) {
        dg_log(DG_LOG_ERR, NULL, "%s", j->error);
    }
    job_free(j);
}

/* ti.xcom_pull in a notification: a task without output (it failed, say, which is what
 * an alert is about) gives "", so that the notification still goes out. */
static int notify_xcom_pull(void *ud, const char *task_id, char **ret, dg_error *err) {
    exec_run *er = ud;
    ssize_t i = dg_dag_task_index(er->run->dag, task_id);
    if (i >= 0 && !er->outputs[i]) {
        *ret = xstrdup("");
        return 0;
    }
    return dg__exec_xcom_pull(ud, task_id, ret, err);
}

/* Render a notification into a job; the caller queues it. */
static int prepare_job(notify_job *j, const dg_notification *n, exec_run *er, const json_t *vars,
                       dg_error *err) {
    dg_tmpl_ctx ctx = {.vars = vars, .xcom_pull = notify_xcom_pull, .userdata = er};
    j->name = xstrdup(n->name);
    if (n->webhook_url) {
        if (dg_tmpl_render(n->webhook_url, &ctx, &j->url, err) < 0) return -EINVAL;
        if (n->webhook_body) {
            if (dg_tmpl_render(n->webhook_body, &ctx, &j->body, err) < 0) return -EINVAL;
        } else {
            json_auto_t *o = json_pack("{s:O?,s:O?,s:O?,s:O?,s:O?}", "dag_id", json_object_get(vars, "dag_id"),
                                       "run_id", json_object_get(vars, "run_id"), "task_id",
                                       json_object_get(vars, "task_id"), "state",
                                       json_object_get(vars, "state"), "ds", json_object_get(vars, "ds"));
            const char *dag = json_string_value(json_object_get(vars, "dag_id"));
            const char *st = json_string_value(json_object_get(vars, "state"));
            json_object_set_new(o, "text", json_sprintf("dagd: %s %s", dag ? dag : "", st ? st : ""));
            j->body = json_dumps(o, JSON_COMPACT);
        }
        return 0;
    }
    j->email = true;
    dg_exec *x = j->x;
    if (!x->smtp_url || !*x->smtp_url)
        return dg_error_set(err, -ENOENT, "notification '%s': email needs an SMTP server (smtp.url / DAGD_SMTP_URL)",
                            n->name);
    j->url = xstrdup(x->smtp_url);
    j->from = xstrdup(x->smtp_from && *x->smtp_from ? x->smtp_from : "dagd@localhost");
    j->user = xstrdup(x->smtp_user);
    j->password = xstrdup(x->smtp_password);
    size_t nto = 0;
    while (n->email_to && n->email_to[nto]) nto++;
    j->to = xcalloc(nto + 1, sizeof *j->to);
    for (size_t i = 0; i < nto; i++)
        if (dg_tmpl_render(n->email_to[i], &ctx, &j->to[i], err) < 0) return -EINVAL;
    const char *subj = n->email_subject ? n->email_subject : "dagd: {{ dag_id }} {{ ds }} {{ state }}";
    const char *body = n->email_body ? n->email_body
                                     : "DAG {{ dag_id }}, run {{ run_id }}: {{ state }}";
    if (dg_tmpl_render(subj, &ctx, &j->subject, err) < 0) return -EINVAL;
    if (dg_tmpl_render(body, &ctx, &j->body, err) < 0) return -EINVAL;
    return 0;
}

static void queue(dg_exec *x, const dg_notification *n, exec_run *er, exec_try *t, json_t *vars) {
    notify_job *j = xcalloc(1, sizeof *j);
    j->x = x;
    j->t = t;
    j->work.data = j;
    dg_error err = {0};
    if (prepare_job(j, n, er, vars, &err) < 0) {
        if (t) dg__exec_try_fail(t, err.msg);
        else dg_log(DG_LOG_ERR, NULL, "%s", err.msg);
        dg_error_clear(&err);
        job_free(j);
        return;
    }
    uv_queue_work(x->loop, &j->work, deliver, delivered);
}

void dg__exec_http_get(dg_exec *x, const char *url, int64_t timeout_ms, dg__exec_http_cb cb, void *ud) {
    notify_job *j = xcalloc(1, sizeof *j);
    j->x = x;
    j->work.data = j;
    j->get = true;
    j->url = xstrdup(url);
    j->timeout_ms = timeout_ms;
    j->cb = cb;
    j->cb_ud = ud;
    uv_queue_work(x->loop, &j->work, deliver, delivered);
}

/* A notify task's `state`: failed when an upstream did not succeed, else success. */
void dg__exec_notify_task(exec_try *t) {
    const dg_dag *dag = t->er->run->dag;
    const dg_task *tk = &dag->tasks[t->task];
    dg_sched_on_started(t->x->sched, t->er->run, t->task, t->try_number, dg_now_ms());
    const dg_notification *n = dg_dag_notification(dag, tk->notify);
    if (!n) {
        dg__exec_try_fail(t, "unknown notification");
        return;
    }
    const char *state = "success";
    for (size_t i = 0; i < tk->n_upstream; i++) {
        dg_ti_state s = t->er->run->ti[tk->upstream[i]].state;
        if (s == DG_TI_FAILED || s == DG_TI_UPSTREAM_FAILED) state = "failed";
    }
    json_auto_t *vars = dg__exec_vars(t);
    json_object_set_new(vars, "state", json_string(state));
    queue(t->x, n, t->er, t, vars);
}

void dg__exec_notify_event(dg_exec *x, dg_run *run, size_t task, dg_notify_event ev) {
    const dg_dag *dag = run->dag;
    exec_run *er = run->userdata;
    char **names;
    const char *state;
    if (task == SIZE_MAX) {
        names = ev == DG_EVENT_SUCCESS ? dag->on_success : dag->on_failure;
        state = ev == DG_EVENT_SUCCESS ? "success" : "failed";
    } else {
        const dg_task *tk = &dag->tasks[task];
        names = ev == DG_EVENT_SUCCESS ? tk->on_success : ev == DG_EVENT_RETRY ? tk->on_retry : tk->on_failure;
        state = ev == DG_EVENT_SUCCESS ? "success" : ev == DG_EVENT_RETRY ? "up_for_retry" : "failed";
    }
    for (size_t i = 0; names && names[i]; i++) {
        const dg_notification *n = dg_dag_notification(dag, names[i]);
        if (!n) continue;
        json_auto_t *vars = dg__exec_run_vars(er, task, task == SIZE_MAX ? 0 : run->ti[task].try_number);
        json_object_set_new(vars, "state", json_string(state));
        queue(x, n, er, NULL, vars);
    }
}
