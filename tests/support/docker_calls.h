/* What the Docker client tests (tests/unit/docker, tests/engine/docker) share: a call's
 * result, the callbacks that record it, and running a loop until one arrived. */
#pragma once

#include <criterion/criterion.h>
#include <stdlib.h>

#include "dagd/docker.h"

static uv_loop_t *cur_loop;

/* A callback that ran in libuv's timer phase would otherwise leave UV_RUN_ONCE blocked in
 * poll until the next unrelated event. */
static inline void wake(void) {
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

static inline void res_clear(res *r) {
    json_decref(r->body);
    dg_error_clear(&r->err);
    free(r->id);
    free(r->content);
    *r = (res){0};
}

static inline void keep_err(res *r, const dg_error *err) {
    wake();
    if (!err) return;
    r->err.code = err->code;
    r->err.msg = xstrdup(err->msg);
}

static inline void done_cb(void *ud, const dg_error *err) {
    res *r = ud;
    cr_assert_not(r->done, "callback ran twice");
    r->done = true;
    keep_err(r, err);
}

static inline void call_cb(void *ud, int status, json_t *body, const dg_error *err) {
    res *r = ud;
    cr_assert_not(r->done, "callback ran twice");
    r->done = true;
    r->status = status;
    r->body = json_incref(body);
    keep_err(r, err);
}

static inline void on_guard(uv_timer_t *t) {
    *(bool *)t->data = true;
    wake();
}

/* Runs the loop until *flag or timeout_ms passed (then the test fails). */
static inline void wait_for(uv_loop_t *loop, bool *flag, int timeout_ms) {
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
