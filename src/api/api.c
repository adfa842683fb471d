/* api — the HTTP side of the REST API: the listening socket, libmicrohttpd driven from the
 * libuv loop (MHD's epoll fd on a uv_poll, MHD's next timeout on a uv_timer, no threads),
 * the per-request state (auth, routing, the body up to its cap) and the JSON replies.
 * What each endpoint does lives in routes.c; log files and follow streams in logs.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dagd/log.h"
#include "internal.h"

#define CONNECTION_TIMEOUT_S 60
#define CONNECTION_MEMORY_LIMIT (128 * 1024)
/* descriptors kept out of the API's reach, for the engine, the store and the logs */
#define FD_RESERVE 256
#define LISTEN_BACKLOG 512
/* how much of an oversized chunked body is read and dropped before the connection is cut */
#define DROP_MAX (16 * 1024 * 1024)

/* ---- replies */

static const char *status_reason(unsigned status) {
    switch (status) {
    case 400: return "bad request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 409: return "conflict";
    case 413: return "payload too large";
    case 422: return "unprocessable entity";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal error" : "error";
    }
}

enum MHD_Result dg__api_reply(struct MHD_Connection *c, unsigned status, const char *ctype, char *data,
                              size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result dg__api_reply_json(struct MHD_Connection *c, unsigned status, json_t *body) {
    char *text = dg_server_json_text(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) return dg__api_reply_error(c, 500, "response could not be encoded");
    size_t n = strlen(text);
    char *data = xrealloc(text, n + 2);
    data[n] = '\n';
    data[n + 1] = '\0';
    return dg__api_reply(c, status, "application/json", data, n + 1);
}

enum MHD_Result dg__api_reply_error(struct MHD_Connection *c, unsigned status, const char *detail_fmt, ...) {
    va_list ap;
    va_start(ap, detail_fmt);
    _cleanup_free_ char *detail = NULL;
    if (vasprintf(&detail, detail_fmt, ap) < 0) abort();
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s}", "error", status_reason(status), "detail", detail);
    if (!o) o = json_pack("{s:s, s:s}", "error", status_reason(status), "detail", "(detail not UTF-8)");
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t n = strlen(text);
    char *data = xrealloc(text, n + 2);
    data[n] = '\n';
    data[n + 1] = '\0';
    return dg__api_reply(c, status, "application/json", data, n + 1);
}

enum MHD_Result dg__api_reply_errno(struct MHD_Connection *c, int rc, const dg_error *err) {
    unsigned status;
    switch (rc) {
    case -ENOENT: status = 404; break;
    case -EINVAL: status = 400; break;
    case -EDOM: status = 422; break;
    case -EEXIST:
    case -EBUSY: status = 409; break;
    case -EAGAIN: status = 503; break;
    default: status = 500; break;
    }
    const char *msg = err && err->msg ? err->msg : strerror(rc < 0 ? -rc : rc);
    return dg__api_reply_error(c, status, "%s", msg);
}

/* ---- MHD on the loop */

static void on_timer(uv_timer_t *t);

static void rearm(dg_api *a) {
    if (a->stopping || !a->mhd) return;
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(a->mhd, &ms) == MHD_YES)
        uv_timer_start(&a->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&a->timer);
}

void dg__api_kick(dg_api *a) {
    if (a->stopping || !a->mhd) return;
    MHD_run(a->mhd);
    rearm(a);
}

static void on_timer(uv_timer_t *t) { dg__api_kick(t->data); }

static void on_poll(uv_poll_t *p, int status, int events) { dg__api_kick(p->data); }

/* ---- the request-head deadline (docs/api.md, "Limits")
 * MHD's connection timeout counts idle time, which a client sending a header line every
 * few seconds never runs up. So the head of each request must be in within head_timeout_ms
 * of the accept, or of the end of the connection's previous request; a connection still
 * waiting then is shut down, and MHD, seeing its end, closes it. */

static void on_head_timer(uv_timer_t *t);

static void waiting_unlink(dg_api *a, dg__api_conn *w) {
    if (!w || !w->waiting) return;
    if (w->prev) w->prev->next = w->next;
    else a->waiting_first = w->next;
    if (w->next) w->next->prev = w->prev;
    else a->waiting_last = w->prev;
    w->prev = w->next = NULL;
    w->waiting = false;
}

static void arm_head_timer(dg_api *a) {
    if (a->stopping || !a->waiting_first) return;
    uint64_t due = a->waiting_first->since + a->head_timeout_ms, now = uv_now(a->loop);
    uv_timer_start(&a->head_timer, on_head_timer, due > now ? due - now : 0, 0);
}

/* The list stays oldest first: every wait begins now. */
static void waiting_append(dg_api *a, dg__api_conn *w) {
    if (!w || a->stopping) return;
    waiting_unlink(a, w);
    w->since = uv_now(a->loop);
    w->prev = a->waiting_last;
    if (a->waiting_last) a->waiting_last->next = w;
    else a->waiting_first = w;
    a->waiting_last = w;
    w->waiting = true;
    if (!uv_is_active((uv_handle_t *)&a->head_timer)) arm_head_timer(a);
}

static dg__api_conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void on_head_timer(uv_timer_t *t) {
    dg_api *a = t->data;
    uint64_t now = uv_now(a->loop);
    bool cut = false;
    while (a->waiting_first && a->waiting_first->since + a->head_timeout_ms <= now) {
        dg__api_conn *w = a->waiting_first;
        waiting_unlink(a, w);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(w->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
        cut = true;
    }
    arm_head_timer(a);
    if (cut) dg__api_kick(a);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    dg_api *a = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        dg__api_conn *w = xcalloc(1, sizeof(*w));
        w->conn = c;
        *socket_context = w;
        waiting_append(a, w);
    } else if (*socket_context) {
        waiting_unlink(a, *socket_context);
        free(*socket_context);
        *socket_context = NULL;
    }
}

/* ---- requests */

/* Declared lengths over the cap are refused before any of the body is read. */
static bool declared_too_large(struct MHD_Connection *c) {
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!v) return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    return errno == ERANGE || n > DG_API_BODY_MAX;
}

static enum MHD_Result reply_405(struct MHD_Connection *c, const char *method, const char *allow) {
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string("method not allowed"));
    _cleanup_free_ char *d = xasprintf("%s is not allowed here; allowed: %s", method, allow);
    json_t *ds = json_string(d);
    json_object_set_new(o, "detail", ds ? ds : json_string("wrong method"));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = MHD_queue_response(c, 405, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_headers(dg_api *a, struct MHD_Connection *c, const char *url, const char *method,
                                  dg__api_req *r) {
    const char *detail = NULL;
    int st = dg__api_route(url, r, &detail);
    /* Only health is public: anything else, even a path that does not exist, needs the token
     * so that probing reveals nothing. */
    if (!(r->route && dg__api_route_public(r->route)) && !dg__api_token_ok(a, c)) {
        /* or the web UI's session cookie, and with it the CSRF token on anything that
         * changes state (docs/ui.md, Sessions) */
        const dg__api_session *s = dg__api_session_find(a, c);
        if (!s) {
            r->answered = true;
            return dg__api_reply_error(c, 401, "a valid 'Authorization: Bearer <token>' header is required");
        }
        if (dg__api_method_changes_state(method) && !dg__api_session_csrf_ok(s, c)) {
            r->answered = true;
            return dg__api_reply_error(c, 403, "a request signed in by a session cookie that changes state needs "
                                               "the session's X-CSRF-Token header");
        }
    }
    if (st) {
        r->answered = true;
        return dg__api_reply_error(c, st, "%s", detail);
    }
    if (!dg__api_route_handler(r->route, method)) {
        r->answered = true;
        return reply_405(c, method, dg__api_route_allow(r->route));
    }
    if (declared_too_large(c)) {
        r->answered = true;
        return dg__api_reply_error(c, 413, "request bodies are limited to %d bytes", DG_API_BODY_MAX);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    dg_api *a = cls;
    dg__api_req *r = *con_cls;
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        *con_cls = r;
    }
    if (!r->headers_seen) {
        r->headers_seen = true;
        waiting_unlink(a, conn_of(c));
        return on_headers(a, c, url, method, r);
    }
    if (r->answered) {
        /* The reply is queued; what remains of the body is dropped unread. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->body.len + n > DG_API_BODY_MAX) {
            /* A body of undeclared length (chunked) over the cap: MHD only lets a reply be
             * queued once the body is in, so the rest is read and dropped, up to a point. */
            r->too_large = true;
            r->dropped += n;
            dg_buf_free(&r->body);
            return r->dropped > DROP_MAX ? MHD_NO : MHD_YES;
        }
        dg_buf_append(&r->body, upload_data, n);
        return MHD_YES;
    }
    r->answered = true;
    if (r->too_large)
        return dg__api_reply_error(c, 413, "request bodies are limited to %d bytes", DG_API_BODY_MAX);
    enum MHD_Result res = dg__api_route_handler(r->route, method)(a, c, r);
    /* what the answer reports is on disk before it goes out */
    if (dg__api_method_changes_state(method)) dg_server_flush(a->server);
    return res;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    /* a connection kept alive waits for its next request's head */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) waiting_append(cls, conn_of(c));
    dg__api_req *r = *con_cls;
    if (!r) return;
    for (int i = 0; i < DG_API_P_MAX; i++) free(r->param[i]);
    dg_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

/* MHD's own unescaping would turn %2F into a separator before routing; the path is split
 * first and each segment decoded in routes.c, and query values are decoded where read. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

/* ---- listening socket */

static int parse_listen(const char *listen, char **ret_host, char **ret_port, dg_error *err) {
    const char *colon;
    _cleanup_free_ char *host = NULL;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return dg_error_set(err, -EINVAL, "listen address '%s': expected [ADDRESS]:PORT", listen);
        host = xstrndup(listen + 1, (size_t)(close - listen - 1));
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon) return dg_error_set(err, -EINVAL, "listen address '%s': expected HOST:PORT or :PORT", listen);
        if (memchr(listen, ':', (size_t)(colon - listen)))
            return dg_error_set(err, -EINVAL, "listen address '%s': write IPv6 addresses as [ADDRESS]:PORT",
                                listen);
        host = xstrndup(listen, (size_t)(colon - listen));
    }
    const char *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535 || port[0] == '-' || port[0] == '+')
        return dg_error_set(err, -EINVAL, "listen address '%s': bad port '%s'", listen, port);
    *ret_host = TAKE_PTR(host);
    *ret_port = xstrdup(port);
    return 0;
}

static int bind_one(const struct sockaddr *sa, socklen_t len, int family) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* ":PORT" means every address: one IPv6 socket that takes IPv4 too. */
    if (family == AF_INET6 && sa && IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr))
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, sa, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static int open_listener(const char *listen, int *ret_port, dg_error *err) {
    _cleanup_free_ char *host = NULL, *port = NULL;
    int r = parse_listen(listen, &host, &port, err);
    if (r < 0) return r;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (!*host) {
        /* Prefer the dual-stack IPv6 wildcard, fall back to IPv4 when IPv6 is absent. */
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_any,
                                  .sin6_port = htons((uint16_t)atoi(port))};
        int fd = bind_one((struct sockaddr *)&s6, sizeof(s6), AF_INET6);
        if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL) {
            struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY),
                                     .sin_port = htons((uint16_t)atoi(port))};
            fd = bind_one((struct sockaddr *)&s4, sizeof(s4), AF_INET);
        }
        if (fd < 0) return dg_error_set(err, fd, "listen on '%s': %s", listen, strerror(-fd));
        r = fd;
    } else {
        int g = getaddrinfo(host, port, &hints, &res);
        if (g != 0)
            return dg_error_set(err, -EINVAL, "listen address '%s': %s", listen, gai_strerror(g));
        r = -EADDRNOTAVAIL;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            r = bind_one(ai->ai_addr, ai->ai_addrlen, ai->ai_family);
            if (r >= 0) break;
        }
        freeaddrinfo(res);
        if (r < 0) return dg_error_set(err, r, "listen on '%s': %s", listen, strerror(-r));
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int port_no = 0;
    if (getsockname(r, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            port_no = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        else if (ss.ss_family == AF_INET)
            port_no = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    *ret_port = port_no;
    return r;
}

/* ---- lifecycle */

int dg_api_token(const dg_config *cfg, char **ret, bool *ret_made, dg_error *err) {
    *ret_made = false;
    if (cfg->token_file) {
        _cleanup_free_ char *text = NULL;
        int r = dg_read_file(cfg->token_file, &text, NULL);
        if (r < 0) return dg_error_set(err, r, "token_file %s: %s", cfg->token_file, strerror(-r));
        text[strcspn(text, "\r\n")] = 0;
        if (!*text) return dg_error_set(err, -EINVAL, "token_file %s is empty", cfg->token_file);
        *ret = TAKE_PTR(text);
        return 0;
    }
    if (cfg->token && *cfg->token) {
        *ret = xstrdup(cfg->token);
        return 0;
    }
    _cleanup_free_ char *path = xasprintf("%s/token", cfg->state_dir);
    int r = dg_state_value(path, 24, 0600, ret, err);
    if (r < 0) return r;
    *ret_made = r > 0;
    return 0;
}

int dg_api_check_listen(const char *listen, dg_error *err) {
    if (!listen || !*listen) return dg_error_set(err, -EINVAL, "the API needs a listen address");
    _cleanup_free_ char *host = NULL, *port = NULL;
    return parse_listen(listen, &host, &port, err);
}

/* The connection limit, lowered to leave FD_RESERVE descriptors free under the process's
 * limit (serve raises the soft limit to the hard one first; docs/operations.md). */
static unsigned connection_limit(int wanted) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur >= (rlim_t)wanted + FD_RESERVE)
        return (unsigned)wanted;
    unsigned n = rl.rlim_cur > FD_RESERVE + 16 ? (unsigned)(rl.rlim_cur - FD_RESERVE) : 16;
    dg_log(DG_LOG_WARNING, NULL,
           "api.max_connections lowered from %d to %u: the descriptor limit is %llu (ulimit -n)", wanted, n,
           (unsigned long long)rl.rlim_cur);
    return n;
}

int dg_api_start(uv_loop_t *loop, dg_server *s, const dg_config *cfg, const char *token, dg_api **ret,
                 dg_error *err) {
    const char *listen = cfg->listen;
    if (!token || !*token) return dg_error_set(err, -EINVAL, "the API needs a non-empty token");
    if (!listen || !*listen) return dg_error_set(err, -EINVAL, "the API needs a listen address");
    int port = 0;
    int fd = open_listener(listen, &port, err);
    if (fd < 0) return fd;

    dg_api *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->server = s;
    a->port = port;
    a->token = xstrdup(token);
    a->token_len = strlen(token);
    a->head_timeout_ms = (uint64_t)cfg->api_request_head_timeout * 1000;
    a->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, a,
                              MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_LIMIT,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_LIMIT, connection_limit(cfg->api_max_connections),
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->api_max_connections_per_address,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                              MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, a,
                              MHD_OPTION_END);
    if (!a->mhd) {
        close(fd);
        free(a->token);
        free(a);
        return dg_error_set(err, -EIO, "the HTTP server could not start on '%s'", listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int r = info ? uv_poll_init(loop, &a->poll, info->epoll_fd) : -EIO;
    if (r < 0) {
        MHD_stop_daemon(a->mhd);
        free(a->token);
        free(a);
        return dg_error_set(err, r, "the HTTP server's poll handle: %s", uv_strerror(r));
    }
    uv_timer_init(loop, &a->timer);
    uv_timer_init(loop, &a->head_timer);
    a->poll.data = a;
    a->timer.data = a;
    a->head_timer.data = a;
    a->open_handles = 3;
    uv_poll_start(&a->poll, UV_READABLE, on_poll);
    rearm(a);
    *ret = a;
    return 0;
}

int dg_api_port(const dg_api *a) { return a ? a->port : -1; }

static void on_handle_closed(uv_handle_t *h) {
    dg_api *a = h->data;
    if (--a->open_handles == 0) {
        free(a->token);
        free(a);
    }
}

void dg_api_stop(dg_api *a) {
    if (!a || a->stopping) return;
    /* MHD must not be stopped with suspended connections: end the streams first, let MHD
     * close them, then stop (which closes the listening socket too). */
    dg__api_streams_abort(a);
    MHD_run(a->mhd);
    a->stopping = true;
    uv_close((uv_handle_t *)&a->poll, on_handle_closed);
    uv_close((uv_handle_t *)&a->timer, on_handle_closed);
    uv_close((uv_handle_t *)&a->head_timer, on_handle_closed);
    MHD_stop_daemon(a->mhd);
    a->mhd = NULL;
}
