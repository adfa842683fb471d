/* The Docker client against the real local engine (skipped, saying so, only when no
 * engine answers), plus the transport's failure paths, which need no engine. Every test
 * runs its loop to completion, frees the client and checks the loop closes cleanly. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dagd/dag.h"
#include "dagd/docker.h"

#define IMAGE "dagd-test/busybox:1"

static char token[64]; /* labels everything this test process creates */
static uv_loop_t *cur_loop;

/* A callback that ran in libuv's timer phase would otherwise leave UV_RUN_ONCE blocked in
 * poll until the next unrelated event. */
static void wake(void) {
    if (cur_loop) uv_stop(cur_loop);
}

typedef struct res {
    bool done;
    int status;
    json_t *body;
    dg_error err;
    char *id;
    char *content;
    size_t len;
    bool truncated;
} res;

static void res_clear(res *r) {
    json_decref(r->body);
    dg_error_clear(&r->err);
    free(r->id);
    free(r->content);
    *r = (res){0};
}

static void keep_err(res *r, const dg_error *err) {
    wake();
    if (!err) return;
    r->err.code = err->code;
    r->err.msg = xstrdup(err->msg);
}

static void done_cb(void *ud, const dg_error *err) {
    res *r = ud;
    cr_assert_not(r->done, "callback ran twice");
    r->done = true;
    keep_err(r, err);
}

static void call_cb(void *ud, int status, json_t *body, const dg_error *err) {
    res *r = ud;
    cr_assert_not(r->done, "callback ran twice");
    r->done = true;
    r->status = status;
    r->body = json_incref(body);
    keep_err(r, err);
}

static void id_cb(void *ud, const char *id, const dg_error *err) {
    res *r = ud;
    r->done = true;
    r->id = xstrdup(id);
    keep_err(r, err);
}

static void file_cb(void *ud, const char *content, size_t len, bool truncated,
                    const dg_error *err) {
    res *r = ud;
    r->done = true;
    if (content) {
        cr_assert_eq(content[len], 0);
        r->content = xstrndup(content, len);
    }
    r->len = len;
    r->truncated = truncated;
    keep_err(r, err);
}

static void on_guard(uv_timer_t *t) {
    *(bool *)t->data = true;
    wake();
}

/* Runs the loop until *flag or timeout_ms passed (then the test fails). */
static void wait_for(uv_loop_t *loop, bool *flag, int timeout_ms) {
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, (uint64_t)timeout_ms, 0);
    cur_loop = loop;
    while (!*flag && !expired) uv_run(loop, UV_RUN_DEFAULT);
    cur_loop = NULL;
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    cr_assert(*flag, "timed out after %d ms", timeout_ms);
}

typedef struct env {
    uv_loop_t loop;
    dg_docker *d;
} env;

static void env_close(env *e) {
    dg_docker_free(e->d);
    e->d = NULL;
    uv_run(&e->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&e->loop), 0, "handles left open on the loop");
}

/* Opens a client on the engine; skips the test when no engine answers at all. */
static void env_open(env *e) {
    uv_loop_init(&e->loop);
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&e->loop, NULL, &e->d, &err), 0, "%s", err.msg);
    res r = {0};
    dg_docker_ping(e->d, done_cb, &r);
    wait_for(&e->loop, &r.done, 20000);
    if (r.err.code == -ECONNREFUSED) {
        char msg[512];
        snprintf(msg, sizeof msg, "no Docker engine reachable: %s", r.err.msg);
        res_clear(&r);
        env_close(e);
        cr_skip_test("%s", msg);
    }
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    res_clear(&r);
}

static void build_image(void) {
    if (system("docker image inspect " IMAGE " >/dev/null 2>&1") == 0) return;
    char dir[] = "/tmp/dagd-img-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cp /bin/busybox %s/busybox && printf 'FROM scratch\\nCOPY busybox /bin/busybox\\n"
             "RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\\n' > %s/Dockerfile && "
             "docker build -q -t " IMAGE " %s >/dev/null 2>&1; rc=$?; rm -rf %s; exit $rc",
             dir, dir, dir, dir);
    cr_assert_eq(system(cmd), 0, "building the test image failed");
}

static void setup(void) {
    snprintf(token, sizeof token, "t%d-%ld", (int)getpid(), (long)dg_now_ms() % 100000);
    build_image();
}

/* Last resort for a failed assertion that skipped the test's own removal. */
static void teardown(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "docker ps -aq --filter label=io.dagd.test=%s | xargs -r docker rm -f >/dev/null 2>&1",
             token);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of test containers failed\n");
}

TestSuite(docker, .init = setup, .fini = teardown, .timeout = 180);

static json_t *config(const char *script, const char *extra_label) {
    json_t *c = json_pack("{s:s, s:[s,s,s], s:{s:s}, s:b}", "Image", IMAGE, "Cmd", "sh", "-c",
                          script, "Labels", "io.dagd.test", token, "Tty", 0);
    if (extra_label) json_object_set_new(json_object_get(c, "Labels"), "io.dagd.instance",
                                         json_string(extra_label));
    return c;
}

static char *create(env *e, const char *script, const char *extra_label) {
    res r = {0};
    json_t *c = config(script, extra_label);
    dg_docker_container_create(e->d, NULL, c, id_cb, &r);
    json_decref(c);
    wait_for(&e->loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "create: %s", r.err.msg);
    cr_assert_not_null(r.id);
    char *id = TAKE_PTR(r.id);
    res_clear(&r);
    return id;
}

static void start(env *e, const char *id) {
    res r = {0};
    dg_docker_container_start(e->d, id, done_cb, &r);
    wait_for(&e->loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "start: %s", r.err.msg);
}

static void removec(env *e, const char *id) {
    res r = {0};
    dg_docker_container_remove(e->d, id, done_cb, &r);
    wait_for(&e->loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "remove: %s", r.err.msg);
}

static void wait_exited(env *e, const char *id) {
    for (int i = 0; i < 200; i++) {
        res r = {0};
        dg_docker_container_inspect(e->d, id, call_cb, &r);
        wait_for(&e->loop, &r.done, 20000);
        cr_assert_eq(r.status, 200);
        const char *st = json_string_value(json_object_get(json_object_get(r.body, "State"), "Status"));
        bool exited = st && strcmp(st, "exited") == 0;
        res_clear(&r);
        if (exited) return;
        usleep(50000);
    }
    cr_assert_fail("container did not exit");
}

typedef struct logs_seen {
    res done; /* first: done_cb gets this struct as its res */
    dg_buf out, err; /* lines joined with \n */
    size_t n_out, n_err;
} logs_seen;

static void on_line(void *ud, int stream, const char *line, size_t len) {
    logs_seen *s = ud;
    cr_assert(stream == 1 || stream == 2);
    wake();
    cr_assert_null(memchr(line, '\n', len));
    dg_buf *b = stream == 1 ? &s->out : &s->err;
    dg_buf_append(b, line, len);
    dg_buf_puts(b, "\n");
    if (stream == 1) s->n_out++;
    else s->n_err++;
}

static void logs_seen_free(logs_seen *s) {
    dg_buf_free(&s->out);
    dg_buf_free(&s->err);
    res_clear(&s->done);
}

Test(docker, ping_negotiates_141) {
    env e;
    env_open(&e);
    cr_assert_str_eq(dg_docker_api_version(e.d), "1.41");
    env_close(&e);
}

/* No ping first: the calls queue behind the implicit negotiation. */
Test(docker, logs_follow_collects_every_line) {
    env e;
    uv_loop_init(&e.loop);
    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&e.loop, NULL, &e.d, &err), 0);
    cr_assert_null(dg_docker_api_version(e.d));
    res r = {0};
    json_t *c = config("echo one; echo two >&2; echo three; printf tail", NULL);
    dg_docker_container_create(e.d, NULL, c, id_cb, &r);
    json_decref(c);
    wait_for(&e.loop, &r.done, 20000);
    if (r.err.code == -ECONNREFUSED) {
        res_clear(&r);
        env_close(&e);
        cr_skip_test("no Docker engine reachable");
    }
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    cr_assert_str_eq(dg_docker_api_version(e.d), "1.41");
    char *id = TAKE_PTR(r.id);
    res_clear(&r);
    start(&e, id);
    logs_seen s = {0};
    dg_docker_logs_follow(e.d, id, on_line, done_cb, &s);
    wait_for(&e.loop, &s.done.done, 30000);
    cr_assert_null(s.done.err.msg, "%s", s.done.err.msg);
    /* The engine keeps order within a stream, not across stdout and stderr. */
    cr_assert_str_eq(s.out.data, "one\nthree\ntail\n");
    cr_assert_str_eq(s.err.data, "two\n");
    logs_seen_free(&s);
    removec(&e, id);
    free(id);
    env_close(&e);
}

Test(docker, logs_follow_loses_nothing) {
    env e;
    env_open(&e);
    char *id = create(&e,
                      "awk 'BEGIN{for(i=0;i<20000;i++){print \"out \" i; print \"err \" i > "
                      "\"/dev/stderr\"}; s=\"\"; for(i=0;i<40000;i++) s=s \"x\"; print s}'",
                      NULL);
    start(&e, id);
    logs_seen s = {0};
    dg_docker_logs_follow(e.d, id, on_line, done_cb, &s);
    wait_for(&e.loop, &s.done.done, 120000);
    cr_assert_null(s.done.err.msg, "%s", s.done.err.msg);
    cr_assert_eq(s.n_out, 20001);
    cr_assert_eq(s.n_err, 20000);
    dg_buf want_out = {0}, want_err = {0};
    for (int i = 0; i < 20000; i++) {
        dg_buf_printf(&want_out, "out %d\n", i);
        dg_buf_printf(&want_err, "err %d\n", i);
    }
    for (int i = 0; i < 40000; i++) dg_buf_puts(&want_out, "x");
    dg_buf_puts(&want_out, "\n");
    cr_assert_eq(s.out.len, want_out.len);
    cr_assert(memcmp(s.out.data, want_out.data, want_out.len) == 0, "stdout differs");
    cr_assert_str_eq(s.err.data, want_err.data);
    dg_buf_free(&want_out);
    dg_buf_free(&want_err);
    logs_seen_free(&s);
    removec(&e, id);
    free(id);
    env_close(&e);
}

Test(docker, logs_of_exited_container_keep_first_line) {
    env e;
    env_open(&e);
    char *id = create(&e, "echo only-line", NULL);
    start(&e, id);
    wait_exited(&e, id);
    logs_seen s = {0};
    dg_docker_logs_follow(e.d, id, on_line, done_cb, &s);
    wait_for(&e.loop, &s.done.done, 20000);
    cr_assert_null(s.done.err.msg, "%s", s.done.err.msg);
    cr_assert_str_eq(s.out.data, "only-line\n");
    cr_assert_eq(s.n_err, 0);
    logs_seen_free(&s);
    removec(&e, id);
    free(id);
    env_close(&e);
}

typedef struct ev_seen {
    env *e;
    int connected;
    bool is_connected;
    bool died;
    char *exit_code;
    char *actor;
    dg_docker_stream *stream;
} ev_seen;

static void on_connected(void *ud, const dg_error *err) {
    ev_seen *s = ud;
    wake();
    cr_assert_null(err, "%s", err ? err->msg : "");
    s->connected++;
    s->is_connected = true;
}

static void on_event(void *ud, json_t *ev) {
    ev_seen *s = ud;
    wake();
    cr_assert_not(s->died, "event after cancel");
    const char *action = json_string_value(json_object_get(ev, "Action"));
    if (!action || strcmp(action, "die") != 0) return;
    json_t *actor = json_object_get(ev, "Actor");
    s->actor = xstrdup(json_string_value(json_object_get(actor, "ID")));
    s->exit_code =
        xstrdup(json_string_value(json_object_get(json_object_get(actor, "Attributes"), "exitCode")));
    s->died = true;
    /* Cancelling from inside the stream's own callback must be safe. */
    dg_docker_stream_cancel(s->stream);
}

Test(docker, events_deliver_die_with_exit_code) {
    env e;
    env_open(&e);
    char label[128];
    snprintf(label, sizeof label, "io.dagd.instance=%s-ev", token);
    const char *labels[] = {label, NULL};
    ev_seen s = {.e = &e};
    s.stream = dg_docker_events(e.d, labels, on_event, on_connected, &s);
    cr_assert_not_null(s.stream);
    wait_for(&e.loop, &s.is_connected, 10000);
    char inst[128];
    snprintf(inst, sizeof inst, "%s-ev", token);
    char *other = create(&e, "exit 5", NULL); /* not matching the label filter */
    char *id = create(&e, "exit 3", inst);
    start(&e, other);
    start(&e, id);
    wait_for(&e.loop, &s.died, 30000);
    cr_assert_str_eq(s.actor, id);
    cr_assert_str_eq(s.exit_code, "3");
    cr_assert_eq(s.connected, 1);
    free(s.actor);
    free(s.exit_code);
    removec(&e, id);
    removec(&e, other);
    free(id);
    free(other);
    env_close(&e);
}

Test(docker, archive_file_reads_what_the_container_wrote) {
    env e;
    env_open(&e);
    char *id = create(&e,
                      "echo hello > /out.txt; head -c 100000 /dev/zero | tr '\\0' a > /big; "
                      "mkdir /d",
                      NULL);
    start(&e, id);
    wait_exited(&e, id);

    res r = {0};
    dg_docker_archive_file(e.d, id, "/out.txt", 1024, file_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    cr_assert_str_eq(r.content, "hello\n");
    cr_assert_not(r.truncated);
    res_clear(&r);

    dg_docker_archive_file(e.d, id, "/big", 1000, file_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    cr_assert_eq(r.len, 1000);
    cr_assert(r.truncated);
    cr_assert_eq(strspn(r.content, "a"), 1000);
    res_clear(&r);

    dg_docker_archive_file(e.d, id, "/big", 100000, file_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.len, 100000);
    cr_assert_not(r.truncated);
    res_clear(&r);

    dg_docker_archive_file(e.d, id, "/nope.txt", 1024, file_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT);
    cr_assert_not_null(strstr(r.err.msg, "Could not find the file /nope.txt in container"), "%s",
                       r.err.msg);
    res_clear(&r);

    dg_docker_archive_file(e.d, id, "/d", 1024, file_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT, "%s", r.err.msg);
    res_clear(&r);

    removec(&e, id);
    free(id);
    env_close(&e);
}

Test(docker, image_ensure_policies) {
    env e;
    env_open(&e);
    res r = {0};
    dg_docker_image_ensure(e.d, IMAGE, DG_PULL_NEVER, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    res_clear(&r);

    dg_docker_image_ensure(e.d, "dagd-test/absent:never", DG_PULL_NEVER, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT);
    cr_assert_str_eq(r.err.msg, "image dagd-test/absent:never not present and pull: never");
    res_clear(&r);

    /* No registry is reachable: the engine's own reason must come back, in bounded time. */
    dg_docker_image_ensure(e.d, "dagd-test/absent:missing", DG_PULL_MISSING, done_cb, &r);
    wait_for(&e.loop, &r.done, 120000);
    cr_assert_lt(r.err.code, 0);
    cr_assert_not_null(r.err.msg);
    cr_assert_gt(strlen(r.err.msg), 10);
    cr_log_info("pull failure as reported: %s", r.err.msg);
    res_clear(&r);

    /* always: pulls even though the image is here, so here it fails the same way. */
    dg_docker_image_ensure(e.d, IMAGE, DG_PULL_ALWAYS, done_cb, &r);
    wait_for(&e.loop, &r.done, 120000);
    cr_assert_lt(r.err.code, 0);
    cr_assert_not_null(r.err.msg);
    res_clear(&r);

    dg_docker_image_ensure(e.d, "bad image name", DG_PULL_MISSING, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -EINVAL);
    res_clear(&r);
    env_close(&e);
}

Test(docker, network_ensure_creates_once) {
    env e;
    env_open(&e);
    char name[96], path[128];
    snprintf(name, sizeof name, "dagd-test-net-%s", token);
    snprintf(path, sizeof path, "/networks/%s", name);
    for (int i = 0; i < 2; i++) {
        res r = {0};
        dg_docker_network_ensure(e.d, name, done_cb, &r);
        wait_for(&e.loop, &r.done, 20000);
        cr_assert_null(r.err.msg, "%s", r.err.msg);
    }
    res r = {0};
    dg_docker_call(e.d, "GET", path, NULL, call_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.body, "Driver")), "bridge");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.body, "Labels"), "io.dagd.managed")),
        "true");
    res_clear(&r);
    dg_docker_call(e.d, "GET", "/networks", NULL, call_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    int same = 0;
    for (size_t i = 0; i < json_array_size(r.body); i++)
        same += strcmp(json_string_value(json_object_get(json_array_get(r.body, i), "Name")),
                       name) == 0;
    cr_assert_eq(same, 1);
    res_clear(&r);
    dg_docker_call(e.d, "DELETE", path, NULL, call_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.status, 204, "%s", r.err.msg);
    res_clear(&r);
    dg_docker_network_ensure(e.d, "", done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -EINVAL);
    res_clear(&r);
    env_close(&e);
}

Test(docker, errors_carry_the_engine_message) {
    env e;
    env_open(&e);
    res r = {0};
    dg_docker_container_inspect(e.d, "dagd-no-such-container", call_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.status, 404);
    cr_assert_eq(r.err.code, -ENOENT);
    cr_assert_str_eq(r.err.msg, "No such container: dagd-no-such-container");
    res_clear(&r);

    dg_docker_container_start(e.d, "dagd-no-such-container", done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT);
    cr_assert_str_eq(r.err.msg, "No such container: dagd-no-such-container");
    res_clear(&r);

    dg_docker_container_stop(e.d, "dagd-no-such-container", 1, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT);
    res_clear(&r);

    dg_docker_container_remove(e.d, "dagd-no-such-container", done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "a missing container counts as removed: %s", r.err.msg);
    res_clear(&r);

    /* Name conflict: 409 → -EEXIST with the engine's words. */
    char name[96];
    snprintf(name, sizeof name, "dagd-test-%s", token);
    json_t *c = config("true", NULL);
    dg_docker_container_create(e.d, name, c, id_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    char *id = TAKE_PTR(r.id);
    res_clear(&r);
    dg_docker_container_create(e.d, name, c, id_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -EEXIST);
    cr_assert_not_null(strstr(r.err.msg, "is already in use"), "%s", r.err.msg);
    res_clear(&r);
    json_decref(c);

    /* Stop of a created (never started) container: 304, success. */
    dg_docker_container_stop(e.d, id, 1, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    res_clear(&r);
    removec(&e, id);
    free(id);
    env_close(&e);
}

Test(docker, stop_running_container_and_free_cancels) {
    env e;
    env_open(&e);
    char *id = create(&e, "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done", NULL);
    start(&e, id);
    logs_seen s = {0};
    dg_docker_logs_follow(e.d, id, on_line, done_cb, &s);
    cur_loop = &e.loop;
    while (s.n_out == 0) uv_run(&e.loop, UV_RUN_DEFAULT);
    cur_loop = NULL;
    cr_assert_str_eq(s.out.data, "up\n");
    res ins = {0};
    dg_docker_container_inspect(e.d, id, call_cb, &ins);
    dg_docker_free(e.d); /* both in flight: each completes with -ECANCELED, once */
    cr_assert(ins.done);
    cr_assert_eq(ins.err.code, -ECANCELED);
    cr_assert(s.done.done);
    cr_assert_eq(s.done.err.code, -ECANCELED);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    res_clear(&ins);
    logs_seen_free(&s);

    dg_error err = {0};
    cr_assert_eq(dg_docker_new(&e.loop, NULL, &e.d, &err), 0);
    res r = {0};
    dg_docker_container_stop(e.d, id, 10, done_cb, &r);
    wait_for(&e.loop, &r.done, 30000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    res_clear(&r);
    dg_docker_container_inspect(e.d, id, call_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    json_t *state = json_object_get(r.body, "State");
    cr_assert_str_eq(json_string_value(json_object_get(state, "Status")), "exited");
    cr_assert_eq(json_integer_value(json_object_get(state, "ExitCode")), 0);
    res_clear(&r);
    removec(&e, id);
    free(id);
    env_close(&e);
}

typedef struct cancel_seen {
    res done;
    int lines;
    dg_docker_stream *stream;
} cancel_seen;

static void cancel_on_first(void *ud, int stream, const char *line, size_t len) {
    cancel_seen *c = ud;
    c->lines++;
    dg_docker_stream_cancel(c->stream);
    wake();
}

Test(docker, logs_cancel_inside_line_callback) {
    env e;
    env_open(&e);
    char *id = create(&e, "echo a; echo b; echo c", NULL);
    start(&e, id);
    wait_exited(&e, id);
    cancel_seen c = {0};
    c.stream = dg_docker_logs_follow(e.d, id, cancel_on_first, done_cb, &c);
    bool never = false;
    cur_loop = &e.loop;
    uv_timer_t t;
    uv_timer_init(&e.loop, &t);
    t.data = &never;
    uv_timer_start(&t, on_guard, 500, 0);
    while (!never) uv_run(&e.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    cur_loop = NULL;
    cr_assert_eq(c.lines, 1);
    cr_assert_not(c.done.done, "done must not run after cancel");
    removec(&e, id);
    free(id);
    env_close(&e);
}

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
    cr_assert_str_eq(b.err.msg, a.err.msg);
    cr_assert_null(dg_docker_api_version(d));
    res_clear(&a);
    res_clear(&b);
    dg_docker_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
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
    dg_docker_stream *s = dg_docker_events(d, labels, on_event, on_connected, NULL);
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
