/* The Docker client without an engine: the transport's failure paths, and a scripted
 * fake engine for what the real one cannot show. Every test runs its loop to completion,
 * frees the client and checks the loop closes cleanly. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dagd/docker.h"
#include "support/docker_calls.h"

/* No engine needed: a socket nobody listens on. */
Test(docker_transport, unreachable_engine_fails_queued_calls) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    dg_docker *d;
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&loop, "unix:///nonexistent/docker.sock", &d, &err), 0);
    res a = {0}, b = {0};
    dg_docker_container_inspect(d, "x", call_cb, &a);
    dg_docker_container_start(d, "x", done_cb, &b);
    cr_assert_not(a.done, "callbacks never run synchronously");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(a.done && b.done);
    cr_assert_eq(a.status, 0);
    cr_assert_eq(a.err.code, -ECONNREFUSED);
    cr_assert_not_null(strstr(a.err.msg, "Docker engine at unix:///nonexistent/docker.sock could "
                                         "not be reached"),
                       "%s", a.err.msg);
    /* the socket and the system's reason, not libcurl's "localhost port 80" */
    cr_assert_not_null(strstr(a.err.msg, "socket /nonexistent/docker.sock: No such file or directory"), "%s",
                       a.err.msg);
    cr_assert_null(strstr(a.err.msg, "port 80"), "%s", a.err.msg);
    cr_assert_str_eq(b.err.msg, a.err.msg);
    cr_assert_null(dg_docker_api_version(d));
    res_clear(&a);
    res_clear(&b);
    dg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* The events stream below is freed before it ever ran. */
static void never_connected(void *ud, const dg_error *err) {
    cr_assert_fail("connected after free");
}

static void never_event(void *ud, json_t *ev) {
    cr_assert_fail("event after free");
}

Test(docker_transport, free_before_anything_ran) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    dg_docker *d;
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&loop, "unix:///nonexistent/docker.sock", &d, &err), 0);
    res a = {0}, b = {0};
    dg_docker_ping(d, done_cb, &a);
    dg_docker_network_ensure(d, "", done_cb, &b);
    const char *labels[] = {"io.dagd.instance=x", NULL};
    dg_docker_stream *s = dg_docker_events(d, labels, never_event, never_connected, NULL);
    cr_assert_not_null(s);
    dg_docker_free(d);
    cr_assert(a.done && b.done);
    cr_assert_eq(a.err.code, -ECANCELED);
    cr_assert_eq(b.err.code, -ECANCELED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    res_clear(&a);
    res_clear(&b);
    dg_docker_free(NULL);
}

/* ---- a scripted fake engine on a unix socket, for what the real one cannot show:
 * other API versions, and the event stream dropping and coming back. ---- */
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct fake {
    int lfd;
    char path[108];
    const char *api_version;
    int conns;
    int net_creates;       /* POST /networks/create seen */
    char requests[8][512]; /* request lines, in order */
    pthread_t th;
    pthread_mutex_t mu;
} fake;

static void send_all(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static size_t fake_event(char *buf, size_t size, int id, int code, long long ns) {
    int r = snprintf(buf, size,
                     "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"c%d\","
                     "\"Attributes\":{\"exitCode\":\"%d\"}},\"time\":1700000000,"
                     "\"timeNano\":%lld}\n",
                     id, code, ns);
    return r > 0 ? (size_t)r : 0;
}

static void *fake_main(void *arg) {
    fake *f = arg;
    for (;;) {
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0) return NULL;
        char req[4096];
        size_t len = 0;
        while (len < sizeof req - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
            ssize_t r = read(c, req + len, sizeof req - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
        }
        req[len] = 0;
        pthread_mutex_lock(&f->mu);
        int n = f->conns++;
        if (n < 8) snprintf(f->requests[n], sizeof f->requests[n], "%.*s",
                            (int)strcspn(req, "\r"), req);
        pthread_mutex_unlock(&f->mu);
        char resp[1024];
        if (strstr(req, " /_ping ")) {
            snprintf(resp, sizeof resp,
                     "HTTP/1.1 200 OK\r\nApi-Version: %s\r\nContent-Length: 2\r\n"
                     "Connection: close\r\n\r\nOK",
                     f->api_version);
            send_all(c, resp);
        } else if (strstr(req, "/events?")) {
            /* Event n, split across writes, then the connection drops. A reconnect first
             * gets the event before it again (since= is inclusive, and dagd asks from a
             * little earlier); the first connection also sends, after event 1, one
             * stamped earlier (the engine publishes out of timeNano order). */
            size_t k = 0;
            if (n > 1) k += fake_event(resp + k, sizeof resp - k, n - 1, n - 1, 1700000000123456789LL + n - 1);
            k += fake_event(resp + k, sizeof resp - k, n, n, 1700000000123456789LL + n);
            if (n == 1) fake_event(resp + k, sizeof resp - k, 0, 0, 1700000000123456789LL - 5);
            send_all(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Connection: close\r\n\r\n");
            size_t half = strlen(resp) / 2;
            char first[512];
            snprintf(first, sizeof first, "%.*s", (int)half, resp);
            send_all(c, first);
            usleep(20000);
            send_all(c, resp + half);
        } else if (strstr(req, "POST ") == req && strstr(req, "/networks/create ")) {
            /* the create fails as when another client made the network meanwhile (a
             * swarm manager answers 500 with its own words): only a look-up tells */
            pthread_mutex_lock(&f->mu);
            f->net_creates++;
            pthread_mutex_unlock(&f->mu);
            send_all(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                        "Content-Length: 28\r\nConnection: close\r\n\r\n{\"message\":\"create refused\"}\n");
        } else if (strstr(req, "GET ") == req && strstr(req, "/networks/racy ") && f->net_creates > 0) {
            const char *body = "{\"Name\":\"racy\",\"Driver\":\"bridge\"}";
            snprintf(resp, sizeof resp,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     strlen(body), body);
            send_all(c, resp);
        } else {
            send_all(c, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                        "Content-Length: 24\r\nConnection: close\r\n\r\n{\"message\":\"not faked\"}\n");
        }
        close(c);
    }
}

static void fake_start(fake *f, const char *api_version) {
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->api_version = api_version;
    snprintf(f->path, sizeof f->path, "/tmp/dagd-fake-%d.sock", (int)getpid());
    unlink(f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(f->lfd, 8), 0);
    pthread_create(&f->th, NULL, fake_main, f);
}

static void fake_stop(fake *f) {
    shutdown(f->lfd, SHUT_RDWR);
    close(f->lfd);
    pthread_join(f->th, NULL);
    unlink(f->path);
}

static dg_docker *fake_client(uv_loop_t *loop, fake *f) {
    char host[160];
    snprintf(host, sizeof host, "unix://%s", f->path);
    dg_docker *d;
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(loop, host, &d, &err), 0);
    return d;
}

Test(docker_fake, old_engine_refused_newer_capped) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake f;
    fake_start(&f, "1.40");
    dg_docker *d = fake_client(&loop, &f);
    res r = {0}, q = {0};
    dg_docker_container_inspect(d, "x", call_cb, &q); /* queued behind negotiation */
    dg_docker_ping(d, done_cb, &r);
    wait_for(&loop, &r.done, 10000);
    wait_for(&loop, &q.done, 10000);
    cr_assert_eq(r.err.code, -EPROTONOSUPPORT);
    cr_assert_not_null(strstr(r.err.msg, "speaks API 1.40, older than the minimum 1.41"), "%s",
                       r.err.msg);
    cr_assert_str_eq(q.err.msg, r.err.msg);
    cr_assert_null(dg_docker_api_version(d));
    res_clear(&r);
    res_clear(&q);

    f.api_version = "1.47";
    dg_docker_ping(d, done_cb, &r);
    wait_for(&loop, &r.done, 10000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    cr_assert_str_eq(dg_docker_api_version(d), DG_DOCKER_API_MAX);
    res_clear(&r);
    dg_docker_container_inspect(d, "x", call_cb, &q);
    wait_for(&loop, &q.done, 10000);
    cr_assert_eq(q.status, 404);
    cr_assert_str_eq(q.err.msg, "not faked");
    res_clear(&q);
    pthread_mutex_lock(&f.mu);
    cr_assert_str_eq(f.requests[f.conns - 1], "GET /v1.45/containers/x/json HTTP/1.1");
    pthread_mutex_unlock(&f.mu);
    dg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    fake_stop(&f);
}

typedef struct recon {
    int connected, events;
    bool enough;
    char exit_codes[16];
} recon;

static void recon_connected(void *ud, const dg_error *err) {
    recon *r = ud;
    cr_assert_null(err, "%s", err ? err->msg : "");
    r->connected++;
}

static void recon_event(void *ud, json_t *ev) {
    recon *r = ud;
    const char *code =
        json_string_value(json_object_get(json_object_get(json_object_get(ev, "Actor"), "Attributes"),
                                          "exitCode"));
    size_t n = strlen(r->exit_codes);
    if (code && n + 1 < sizeof r->exit_codes) r->exit_codes[n] = code[0];
    if (++r->events == 4) {
        r->enough = true;
        wake();
    }
}

Test(docker_fake, events_reconnect_with_since) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake f;
    fake_start(&f, "1.41");
    dg_docker *d = fake_client(&loop, &f);
    recon rc = {0};
    const char *labels[] = {"io.dagd.instance=abc", NULL};
    dg_docker_stream *s = dg_docker_events(d, labels, recon_event, recon_connected, &rc);
    int64_t t0 = dg_now_ms();
    wait_for(&loop, &rc.enough, 10000);
    int64_t took = dg_now_ms() - t0;
    dg_docker_stream_cancel(s);
    /* ping, then three event connections with events 1 (and the older 0), 2, 3, each
     * delivered once; each clean end waits the 100 ms backoff (reset by every successful
     * connect). */
    cr_assert_str_eq(rc.exit_codes, "1023");
    cr_assert_eq(rc.connected, 3);
    cr_assert_geq(took, 200);
    pthread_mutex_lock(&f.mu);
    cr_assert_str_eq(f.requests[0], "GET /_ping HTTP/1.1");
    cr_assert(dg_str_has_prefix(f.requests[1],
                                "GET /v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C"
                                "%22label%22%3A%5B%22io.dagd.instance%3Dabc%22%5D%7D HTTP"),
              "%s", f.requests[1]);
    cr_assert_not_null(strstr(f.requests[2], "&since=1699999999.123456790 "), "%s", f.requests[2]);
    cr_assert_not_null(strstr(f.requests[3], "&since=1699999999.123456791 "), "%s", f.requests[3]);
    pthread_mutex_unlock(&f.mu);
    dg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    fake_stop(&f);
}

typedef struct free_inside {
    dg_docker *d;
    res first, second;
} free_inside;

static void free_in_cb(void *ud, int status, json_t *body, const dg_error *err) {
    free_inside *f = ud;
    call_cb(&f->first, status, body, err);
    dg_docker_free(f->d);
    cr_assert(f->second.done, "free completes the other calls at once");
}

static void second_cb(void *ud, const dg_error *err) {
    free_inside *f = ud;
    done_cb(&f->second, err);
}

Test(docker_transport, free_from_inside_a_callback) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    free_inside f = {0};
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&loop, "unix:///nonexistent/docker.sock", &f.d, &err), 0);
    dg_docker_container_inspect(f.d, "x", free_in_cb, &f);
    dg_docker_container_start(f.d, "x", second_cb, &f);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(f.first.err.code, -ECONNREFUSED);
    cr_assert_eq(f.second.err.code, -ECANCELED);
    cr_assert_eq(uv_loop_close(&loop), 0);
    res_clear(&f.first);
    res_clear(&f.second);
}

/* A failed network create is followed by a second look-up, whatever the engine's words:
 * a network made meanwhile by someone else is taken; when there is none, the create's
 * error stands (and no second create is tried). */
Test(docker_fake, network_create_failure_looks_again) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake f;
    fake_start(&f, "1.41");
    dg_docker *d = fake_client(&loop, &f);
    res made = {0}, gone = {0};
    dg_docker_network_ensure(d, "racy", done_cb, &made);
    wait_for(&loop, &made.done, 10000);
    cr_assert_null(made.err.msg, "%s", made.err.msg);
    dg_docker_network_ensure(d, "gone", done_cb, &gone);
    wait_for(&loop, &gone.done, 10000);
    cr_assert_not_null(gone.err.msg);
    cr_assert_not_null(strstr(gone.err.msg, "create refused"), "%s", gone.err.msg);
    pthread_mutex_lock(&f.mu);
    cr_assert_eq(f.net_creates, 2, "one create per ensure, got %d", f.net_creates);
    pthread_mutex_unlock(&f.mu);
    res_clear(&made);
    res_clear(&gone);
    dg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    fake_stop(&f);
}
