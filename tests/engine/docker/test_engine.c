/* The Docker client against the real local engine (skipped, saying so, only when no
 * engine answers); the engine-free client tests are in tests/unit/docker/. Every test
 * runs its loop to completion, frees the client and checks the loop closes cleanly. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dagd/docker.h"
#include "support/docker_calls.h"

#define IMAGE "dagd-test/busybox:1"

static char token[64]; /* labels everything this test process creates */

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
    dg_docker_image_ensure(e.d, IMAGE, DG_DOCKER_PULL_NEVER, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_null(r.err.msg, "%s", r.err.msg);
    res_clear(&r);

    dg_docker_image_ensure(e.d, "dagd-test/absent:never", DG_DOCKER_PULL_NEVER, done_cb, &r);
    wait_for(&e.loop, &r.done, 20000);
    cr_assert_eq(r.err.code, -ENOENT);
    cr_assert_str_eq(r.err.msg, "image dagd-test/absent:never not present and pull: never");
    res_clear(&r);

    /* No registry is reachable: the engine's own reason must come back, in bounded time. */
    dg_docker_image_ensure(e.d, "dagd-test/absent:missing", DG_DOCKER_PULL_MISSING, done_cb, &r);
    wait_for(&e.loop, &r.done, 120000);
    cr_assert_lt(r.err.code, 0);
    cr_assert_not_null(r.err.msg);
    cr_assert_gt(strlen(r.err.msg), 10);
    cr_log_info("pull failure as reported: %s", r.err.msg);
    res_clear(&r);

    /* always: pulls even though the image is here, so here it fails the same way. */
    dg_docker_image_ensure(e.d, IMAGE, DG_DOCKER_PULL_ALWAYS, done_cb, &r);
    wait_for(&e.loop, &r.done, 120000);
    cr_assert_lt(r.err.code, 0);
    cr_assert_not_null(r.err.msg);
    res_clear(&r);

    dg_docker_image_ensure(e.d, "bad image name", DG_DOCKER_PULL_MISSING, done_cb, &r);
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
