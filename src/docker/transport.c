/* docker/transport — libcurl's multi interface driven by the libuv loop: one uv_timer
 * for libcurl's timeout and one uv_poll per socket libcurl wants watched. Owns the
 * request objects (see internal.h), the dispatch of buffered body bytes to their
 * consumers, and completion. libcurl callbacks only record what happened; consumers run
 * after curl_multi_socket_action returns. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct dg__sock {
    uv_poll_t poll;
    dg_docker *d;
    curl_socket_t fd;
    dg__sock *next;
};

static void after_drive(dg_docker *d);

/* ---- the libuv side ---- */

static void drive(dg_docker *d, curl_socket_t fd, int flags) {
    int running;
    d->in_curl++;
    curl_multi_socket_action(d->multi, fd, flags, &running);
    d->in_curl--;
    after_drive(d);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    dg__sock *s = h->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    drive(s->d, s->fd, flags);
}

static void on_timer(uv_timer_t *t) { drive(t->data, CURL_SOCKET_TIMEOUT, 0); }

static void sock_closed(uv_handle_t *h) { free(h->data); }

static void sock_release(dg_docker *d, dg__sock *s) {
    for (dg__sock **p = &d->socks; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static int socket_fn(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
    dg_docker *d = userp;
    dg__sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(d->multi, fd, NULL);
            sock_release(d, s);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->d = d;
        s->fd = fd;
        if (uv_poll_init_socket(d->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        s->next = d->socks;
        d->socks = s;
        curl_multi_assign(d->multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

/* A 0 timeout is not acted on here (we may be deep inside libcurl): the uv timer fires
 * on the next loop iteration instead. */
static int timer_fn(CURLM *m, long timeout_ms, void *userp) {
    dg_docker *d = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&d->timer);
    else
        uv_timer_start(&d->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- requests ---- */

static void reqs_link(dg_docker *d, dg__req *r) {
    if (r->linked) return;
    r->linked = true;
    r->prev = NULL;
    r->next = d->reqs;
    if (d->reqs) d->reqs->prev = r;
    d->reqs = r;
}

static void reqs_unlink(dg_docker *d, dg__req *r) {
    if (!r->linked) return;
    r->linked = false;
    if (r->prev) r->prev->next = r->next;
    else if (d->reqs == r) d->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

void dg__req_ref(dg__req *r) { r->refs++; }

void dg__req_unref(dg__req *r) {
    if (!r || --r->refs > 0) return;
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->method);
    free(r->path);
    free(r->req_body);
    dg_buf_free(&r->body);
    dg_error_clear(&r->fail);
    free(r);
}

dg__req *dg__req_new(dg_docker *d, const char *method, const char *path, const char *body,
                     dg__done_fn on_done, void *ctx) {
    dg__req *r = xcalloc(1, sizeof *r);
    r->d = d;
    r->refs = 1;
    r->state = REQ_NEW;
    r->versioned = true;
    r->method = xstrdup(method);
    r->path = xstrdup(path);
    r->req_body = xstrdup(body);
    r->on_done = on_done;
    r->ctx = ctx;
    return r;
}

static void queue_dispatch(dg__req *r) {
    dg_docker *d = r->d;
    if (r->queued) return;
    r->queued = true;
    dg__req_ref(r);
    r->qnext = NULL;
    *d->dispatch_tail = r;
    d->dispatch_tail = &r->qnext;
}

static size_t write_fn(char *p, size_t size, size_t n, void *ud) {
    dg__req *r = ud;
    size_t len = size * n;
    if (r->cancelled) return 0;
    if (r->max_body && r->body.len + len > r->max_body) {
        dg_buf_append(&r->body, p, r->max_body - r->body.len);
        r->capped = true;
        return 0;
    }
    dg_buf_append(&r->body, p, len);
    if (r->on_data && r->status < 400) queue_dispatch(r);
    return len;
}

static size_t header_fn(char *p, size_t size, size_t n, void *ud) {
    dg__req *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->api_version[0] = 0;
        r->headers_done = false;
    } else if (len > 12 && strncasecmp(p, "Api-Version:", 12) == 0) {
        size_t i = 12, j;
        while (i < len && (p[i] == ' ' || p[i] == '\t')) i++;
        for (j = i; j < len && p[j] != '\r' && p[j] != '\n'; j++)
            ;
        size_t vl = j - i < sizeof r->api_version - 1 ? j - i : sizeof r->api_version - 1;
        memcpy(r->api_version, p + i, vl);
        r->api_version[vl] = 0;
    } else if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n')) {
        /* 1xx interim responses are followed by the real one. */
        if (r->status >= 200) {
            r->headers_done = true;
            if (r->on_headers) queue_dispatch(r);
        }
    }
    return len;
}

static void start_transfer(dg__req *r) {
    dg_docker *d = r->d;
    _cleanup_free_ char *url = NULL;
    if (r->versioned)
        url = xasprintf("%s/v%s%s", d->ep.base_url, d->version, r->path);
    else
        url = xasprintf("%s%s", d->ep.base_url, r->path);

    CURL *e = curl_easy_init();
    if (!e) {
        dg__req_fail_later(r, -ENOMEM, "cannot create a transfer");
        return;
    }
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (d->ep.unix_path) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, d->ep.unix_path);
    if (d->ep.tls) {
        curl_easy_setopt(e, CURLOPT_CAINFO, d->ep.ca);
        curl_easy_setopt(e, CURLOPT_SSLCERT, d->ep.cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, d->ep.key);
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 15000L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
    /* Streams (and pulls, which stream progress) may last as long as the container. */
    if (!r->stream) curl_easy_setopt(e, CURLOPT_TIMEOUT, 600L);
    r->hdrs = curl_slist_append(r->hdrs, "Expect:");
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(r->method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        if (r->req_body) {
            r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->req_body));
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->req_body);
        } else if (strcmp(r->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        }
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    r->state = REQ_ACTIVE;
    if (curl_multi_add_handle(d->multi, e) != CURLM_OK) {
        r->state = REQ_NEW;
        dg__req_fail_later(r, -EIO, "cannot start a transfer");
    }
}

void dg__req_submit(dg__req *r) {
    dg_docker *d = r->d;
    reqs_link(d, r);
    if (d->closing) {
        dg__req_fail_later(r, -ECANCELED, "the Docker client is shutting down");
        return;
    }
    if (r->versioned && !d->version) {
        r->state = REQ_WAITING;
        r->qnext = NULL;
        *d->waiting_tail = r;
        d->waiting_tail = &r->qnext;
        dg__negotiate(d);
        return;
    }
    start_transfer(r);
}

static void finish(dg__req *r, const dg_error *err) {
    dg_docker *d = r->d;
    r->state = REQ_FINISHED;
    reqs_unlink(d, r);
    if (!r->cancelled && r->on_done) r->on_done(r, err);
    dg__req_unref(r);
}

static void on_defer(uv_timer_t *t) {
    dg_docker *d = t->data;
    while (d->failing && !d->closing) {
        dg__req *r = d->failing;
        d->failing = r->qnext;
        finish(r, &r->fail);
    }
}

void dg__req_fail_later(dg__req *r, int code, const char *fmt, ...) {
    dg_docker *d = r->d;
    va_list ap;
    va_start(ap, fmt);
    char *msg;
    if (vasprintf(&msg, fmt, ap) < 0) abort();
    va_end(ap);
    dg_error_clear(&r->fail);
    r->fail.code = code;
    r->fail.msg = msg;
    reqs_link(d, r);
    if (d->closing) {
        /* Shutdown is running callbacks synchronously already; join it. */
        finish(r, &r->fail);
        return;
    }
    r->state = REQ_FAILING;
    dg__req **p = &d->failing;
    while (*p) p = &(*p)->qnext;
    r->qnext = NULL;
    *p = r;
    uv_timer_start(&d->defer, on_defer, 0, 0);
}

void dg__req_cancel(dg__req *r) {
    if (!r || r->cancelled) return;
    dg_docker *d = r->d;
    r->cancelled = true;
    switch (r->state) {
    case REQ_WAITING:
        for (dg__req **p = &d->waiting; *p; p = &(*p)->qnext)
            if (*p == r) {
                *p = r->qnext;
                if (!*p) d->waiting_tail = p;
                break;
            }
        r->state = REQ_FINISHED;
        reqs_unlink(d, r);
        dg__req_unref(r);
        break;
    case REQ_ACTIVE:
        /* Outside libcurl (always true for consumer code) the handle can go now;
         * inside, write_fn aborts the transfer at the next chunk. */
        if (d->in_curl) break;
        curl_multi_remove_handle(d->multi, r->easy);
        r->state = REQ_FINISHED;
        reqs_unlink(d, r);
        dg__req_unref(r);
        break;
    default:
        break; /* FAILING: skipped when its turn comes; FINISHED: nothing left */
    }
}

void dg__version_settled(dg_docker *d, const dg_error *err) {
    dg__req *list = d->waiting;
    d->waiting = NULL;
    d->waiting_tail = &d->waiting;
    /* A callback may free the client: shutdown then owns (and completes) the rest. */
    while (list && !d->closing) {
        dg__req *r = list;
        list = r->qnext;
        r->qnext = NULL;
        if (err) {
            r->state = REQ_NEW;
            finish(r, err);
        } else if (d->version) {
            start_transfer(r);
        }
    }
}

json_t *dg__req_json(dg__req *r) {
    if (r->body.len == 0) return NULL;
    return json_loadb(r->body.data, r->body.len, 0, NULL);
}

int dg__status_errno(long status) {
    switch (status) {
    case 404: return -ENOENT;
    case 409: return -EEXIST;
    default: return -EIO;
    }
}

/* Docker answers errors as {"message": "..."}; fall back to the raw text. */
static void status_error(dg__req *r, dg_error *err) {
    json_t *j = dg__req_json(r);
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (m && *m) {
        dg_error_set(err, dg__status_errno(r->status), "%s", m);
    } else if (r->body.len > 0) {
        size_t n = r->body.len;
        while (n > 0 && (r->body.data[n - 1] == '\n' || r->body.data[n - 1] == '\r')) n--;
        dg_error_set(err, dg__status_errno(r->status), "%.*s", (int)n, r->body.data);
    } else {
        dg_error_set(err, dg__status_errno(r->status), "Docker engine answered HTTP %ld to %s %s",
                     r->status, r->method, r->path);
    }
    json_decref(j);
}

static void transport_error(dg__req *r, CURLcode res, dg_error *err) {
    dg_docker *d = r->d;
    const char *why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(res);
    /* libcurl describes a unix socket it could not connect to as "localhost port 80":
     * name the socket and the system's reason instead */
    long os_errno = 0;
    if (res == CURLE_COULDNT_CONNECT && d->ep.unix_path && r->easy &&
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno > 0) {
        dg_error_set(err, -ECONNREFUSED, "the Docker engine at %s could not be reached: socket %s: %s", d->host,
                     d->ep.unix_path, strerror((int)os_errno));
        return;
    }
    switch (res) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_PEER_FAILED_VERIFICATION:
        dg_error_set(err, -ECONNREFUSED, "the Docker engine at %s could not be reached: %s",
                     d->host, why);
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        /* the engine went away mid-request (a restart, a proxy cut): it may or may not
         * have acted on it */
        dg_error_set(err, -ECONNRESET, "the connection to the Docker engine at %s broke (%s %s): %s",
                     d->host, r->method, r->path, why);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        dg_error_set(err, -ETIMEDOUT, "the Docker engine at %s did not answer %s %s in time: %s",
                     d->host, r->method, r->path, why);
        break;
    default:
        dg_error_set(err, -EIO, "talking to the Docker engine at %s failed (%s %s): %s", d->host,
                     r->method, r->path, why);
        break;
    }
}

static void dispatch_one(dg__req *r) {
    if (r->cancelled) return;
    if (r->headers_done && !r->headers_seen) {
        r->headers_seen = true;
        if (r->on_headers) r->on_headers(r);
        if (r->cancelled || r->d->closing) return;
    }
    if (r->on_data && r->status < 400 && r->body.len > 0) {
        dg_buf chunk = r->body;
        r->body = (dg_buf){0};
        r->on_data(r, chunk.data, chunk.len);
        dg_buf_free(&chunk);
    }
}

static void run_dispatch(dg_docker *d) {
    while (d->dispatch && !d->closing) {
        dg__req *r = d->dispatch;
        d->dispatch = r->qnext;
        if (!d->dispatch) d->dispatch_tail = &d->dispatch;
        r->queued = false;
        dispatch_one(r);
        dg__req_unref(r);
    }
}

static void after_drive(dg_docker *d) {
    run_dispatch(d);
    CURLMsg *msg;
    int left;
    while (!d->closing && (msg = curl_multi_info_read(d->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *e = msg->easy_handle;
        CURLcode res = msg->data.result;
        dg__req *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(d->multi, e);
        if (r->cancelled) {
            r->state = REQ_FINISHED;
            reqs_unlink(d, r);
            dg__req_unref(r);
            continue;
        }
        /* Bytes that came with the final read are delivered before completion. */
        dg__req_ref(r);
        dispatch_one(r);
        dg_error err = {0};
        if (res != CURLE_OK && !r->capped)
            transport_error(r, res, &err);
        else if (r->status >= 400)
            status_error(r, &err);
        else if (r->status == 0)
            dg_error_set(&err, -EPROTO, "the Docker engine at %s sent no HTTP response", d->host);
        if (d->closing) {
            dg_error_clear(&err);
            dg__req_unref(r);
            break;
        }
        finish(r, err.code ? &err : NULL);
        dg_error_clear(&err);
        dg__req_unref(r);
    }
}

/* ---- client lifetime ---- */

void dg__transport_init(dg_docker *d) {
    d->multi = curl_multi_init();
    if (!d->multi) abort();
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    uv_timer_init(d->loop, &d->timer);
    uv_timer_init(d->loop, &d->defer);
    d->timer.data = d->defer.data = d;
    d->waiting_tail = &d->waiting;
    d->dispatch_tail = &d->dispatch;
}

static void stream_closed(uv_handle_t *h) {
    dg_docker_stream *s = h->data;
    s->on_free(s);
}

void dg__stream_link(dg_docker *d, dg_docker_stream *s) {
    s->d = d;
    uv_timer_init(d->loop, &s->timer);
    s->timer.data = s;
    s->next = d->streams;
    if (d->streams) d->streams->prev = s;
    d->streams = s;
}

void dg__stream_finish(dg_docker_stream *s) {
    if (s->finished) return;
    s->finished = true;
    dg_docker *d = s->d;
    if (s->prev) s->prev->next = s->next;
    else if (d->streams == s) d->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    if (s->req) {
        dg__req_cancel(s->req);
        dg__req_unref(s->req);
        s->req = NULL;
    }
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, stream_closed);
}

void dg_docker_stream_cancel(dg_docker_stream *s) {
    if (!s || s->cancelled) return;
    s->cancelled = true;
    dg__stream_finish(s);
}

void dg__transport_shutdown(dg_docker *d) {
    dg_error cancelled = {.code = -ECANCELED, .msg = (char *)"the Docker client was shut down"};
    while (d->dispatch) {
        dg__req *r = d->dispatch;
        d->dispatch = r->qnext;
        r->queued = false;
        dg__req_unref(r);
    }
    d->dispatch_tail = &d->dispatch;
    d->waiting = NULL;
    d->waiting_tail = &d->waiting;
    d->failing = NULL;
    /* Completion callbacks may cancel or start requests; always take the current head. */
    while (d->reqs) {
        dg__req *r = d->reqs;
        if (r->state == REQ_ACTIVE) curl_multi_remove_handle(d->multi, r->easy);
        finish(r, &cancelled);
    }
    while (d->streams) {
        dg_docker_stream *s = d->streams;
        s->cancelled = true;
        dg__stream_finish(s);
    }
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    while (d->socks) sock_release(d, d->socks);
}
