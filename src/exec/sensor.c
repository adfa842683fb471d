/* exec/sensor — sensor tasks (docs/dags.md, "Sensor tasks"): a check repeated until it
 * holds or the sensor's timeout passes. A check is a glob on the dagd host (file), a look
 * at another DAG's run in the state database (dag), a GET on the thread pool (http) or a
 * probe container run through the backend (command). In poke mode one try checks again
 * every interval; in reschedule mode each try checks once and answers DG_RES_NOT_YET, and
 * the scheduler starts the next try after the interval. */
#include <errno.h>
#include <glob.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dagd/tmpl.h"
#include "exec_internal.h"

static const dg_sensor *sensor_of(const exec_try *t) { return &t->er->run->dag->tasks[t->task].sensor; }

/* A line of the sensor's own in the try's log (stdout), redacted as a job's are. */
static void sensor_log(exec_try *t, const char *fmt, ...) _printf_(2, 3);
static void sensor_log(exec_try *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) abort();
    va_end(ap);
    dg__exec_job_line(t, 1, msg, strlen(msg));
    free(msg);
}

static int render(exec_try *t, const char *field, const char *src, char **ret, dg_error *err) {
    json_auto_t *vars = dg__exec_vars(t);
    dg_tmpl_ctx ctx = {.vars = vars, .xcom_pull = dg__exec_xcom_pull, .userdata = t->er};
    dg_error e = {0};
    int r = dg_tmpl_render(src, &ctx, ret, &e);
    if (r < 0) {
        dg_error_set(err, r, "sensor %s: %s", field, e.msg ? e.msg : "template error");
        dg_error_clear(&e);
    }
    return r;
}

static void begin_check(exec_try *t);

static void poke_cb(uv_timer_t *h) { begin_check(h->data); }

/* The outcome of one check: found (1), not yet (0), or err: the try fails. */
static void check_done(exec_try *t, int found, const char *err) {
    /* stopped while the check was in flight, or the executor is going: nothing more */
    if (t->reported || t->released || t->x->closing) return;
    const dg_sensor *se = sensor_of(t);
    if (err) {
        dg__exec_try_fail(t, err);
        return;
    }
    if (found) {
        dg__exec_try_succeed(t);
        return;
    }
    if (se->reschedule) {
        dg_result res = {.type = DG_RES_NOT_YET};
        dg__exec_report(t, &res);
        dg__exec_try_release(t);
        return;
    }
    if (dg_now_ms() - t->sensor_start_ms >= se->timeout_ms) {
        dg_result res = {.type = DG_RES_SENSOR_TIMEOUT};
        dg__exec_report(t, &res);
        dg__exec_try_release(t);
        return;
    }
    if (!t->timer) {
        t->timer = xmalloc(sizeof *t->timer);
        uv_timer_init(t->x->loop, t->timer);
        t->timer->data = t;
    }
    uv_timer_start(t->timer, poke_cb, (uint64_t)se->interval_ms, 0);
}

static bool in_states(char *const *v, const char *s) {
    for (size_t i = 0; v && v[i]; i++)
        if (strcmp(v[i], s) == 0) return true;
    return false;
}

/* ---- file: a glob on the dagd host ---- */

static void check_file(exec_try *t) {
    _cleanup_free_ char *pat = NULL;
    _cleanup_error_ dg_error err = {0};
    if (render(t, "file", sensor_of(t)->file, &pat, &err) < 0) {
        check_done(t, 0, err.msg);
        return;
    }
    glob_t g;
    int r = glob(pat, 0, NULL, &g);
    bool found = r == 0 && g.gl_pathc > 0;
    if (r == 0) globfree(&g);
    check_done(t, found, NULL);
}

/* ---- dag: another DAG's run at this run's logical date minus delta ---- */

static void check_dag(exec_try *t) {
    const dg_sensor *se = sensor_of(t);
    dg_store *st = t->x->store;
    if (!st) {
        check_done(t, 0, "a dag sensor reads other DAGs' runs from the state database, which `dagd test` does not open");
        return;
    }
    int64_t at = t->er->logical_ms - se->delta_ms;
    _cleanup_free_ char *when = dg_format_time(at, false);
    dg_run_rec *run = NULL;
    int r = dg_store_run_at(st, se->dag_id, at, &run);
    if (r == -ENOENT) {
        sensor_log(t, "no run of DAG '%s' at %s yet", se->dag_id, when);
        check_done(t, 0, NULL);
        return;
    }
    if (r < 0) {
        _cleanup_free_ char *m = xasprintf("reading DAG '%s' runs: %s", se->dag_id, dg_store_errmsg(st));
        check_done(t, 0, m);
        return;
    }
    const char *state = run->state;
    _cleanup_free_ char *what = NULL;
    dg_ti_rec *ti = NULL;
    if (se->task_id) {
        r = dg_store_get_ti(st, se->dag_id, run->run_id, se->task_id, &ti);
        state = r == 0 ? ti->state : "none";
        what = xasprintf("task '%s' of DAG '%s' run '%s'", se->task_id, se->dag_id, run->run_id);
    } else {
        what = xasprintf("DAG '%s' run '%s'", se->dag_id, run->run_id);
    }
    if (in_states(se->failed_states, state)) {
        _cleanup_free_ char *m = xasprintf("%s is %s (one of the sensor's failed_states)", what, state);
        sensor_log(t, "%s", m);
        check_done(t, 0, m);
    } else {
        sensor_log(t, "%s is %s", what, state);
        check_done(t, in_states(se->allowed_states, state), NULL);
    }
    dg_ti_rec_free(ti);
    dg_run_rec_free(run);
}

/* ---- http: a GET answering the expected status (and body) ---- */

static void http_cb(void *ud, long status, const char *body, size_t len, const char *error) {
    exec_try *t = ud;
    const dg_sensor *se = sensor_of(t);
    if (t->reported || t->released || t->x->closing) {
        dg__exec_try_unref(t);
        return;
    }
    if (error) {
        /* nothing answering yet is what a sensor waits out */
        sensor_log(t, "GET: %s", error);
        check_done(t, 0, NULL);
    } else if (status != se->status) {
        sensor_log(t, "GET: status %ld, waiting for %d", status, se->status);
        check_done(t, 0, NULL);
    } else if (se->body) {
        _cleanup_free_ char *pat = NULL;
        _cleanup_error_ dg_error err = {0};
        regex_t re;
        int r;
        if (render(t, "body", se->body, &pat, &err) < 0) {
            check_done(t, 0, err.msg);
        } else if ((r = regcomp(&re, pat, REG_EXTENDED | REG_NOSUB | REG_NEWLINE)) != 0) {
            char msg[128];
            regerror(r, &re, msg, sizeof msg);
            _cleanup_free_ char *m = xasprintf("sensor body: not a valid regular expression: %s", msg);
            check_done(t, 0, m);
        } else {
            bool match = regexec(&re, body, 0, NULL, 0) == 0;
            regfree(&re);
            if (!match) sensor_log(t, "GET: status %ld, the body (%zu bytes) does not match yet", status, len);
            check_done(t, match, NULL);
        }
    } else {
        check_done(t, 1, NULL);
    }
    dg__exec_try_unref(t);
}

static void check_http(exec_try *t) {
    const dg_sensor *se = sensor_of(t);
    _cleanup_free_ char *url = NULL;
    _cleanup_error_ dg_error err = {0};
    if (render(t, "http", se->url, &url, &err) < 0) {
        check_done(t, 0, err.msg);
        return;
    }
    dg__exec_http_get(t->x, url, se->request_timeout_ms, http_cb, dg__exec_try_ref(t));
}

/* ---- command: a probe container exiting 0 ---- */

static void probe_created(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) check_done(t, 0, err->msg);
    else dg_job_start(t->job);
}

static void probe_started(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) check_done(t, 0, err->msg);
}

static void probe_exited(void *ud, int exit_code, bool vanished) {
    exec_try *t = ud;
    dg__exec_try_drop_job(t, true);
    if (vanished) {
        check_done(t, 0, "the probe container vanished (removed outside dagd?)");
        return;
    }
    if (exit_code != 0) sensor_log(t, "probe exited with code %d", exit_code);
    check_done(t, exit_code == 0, NULL);
}

static const dg_job_events probe_events = {
    .created = probe_created,
    .started = probe_started,
    .line = dg__exec_job_line,
    .exited = probe_exited,
};

static void check_command(exec_try *t) {
    exec_spec sp;
    _cleanup_error_ dg_error err = {0};
    if (dg__exec_build_spec(t, &sp, &err) < 0) {
        check_done(t, 0, err.msg);
        return;
    }
    free(t->image);
    t->image = xstrdup(sp.s.image);
    free(t->name);
    t->name = xstrdup(sp.s.name);
    t->job = dg_job_create(t->x->backend, &sp.s, &probe_events, dg__exec_try_ref(t));
    dg__exec_spec_free(&sp);
}

static void begin_check(exec_try *t) {
    switch (sensor_of(t)->kind) {
    case DG_SENSOR_FILE: check_file(t); break;
    case DG_SENSOR_DAG: check_dag(t); break;
    case DG_SENSOR_HTTP: check_http(t); break;
    case DG_SENSOR_COMMAND: check_command(t); break;
    }
}

void dg__exec_start_sensor(exec_try *t) {
    const dg_ti *ti = &t->er->run->ti[t->task];
    dg_sched_on_started(t->x->sched, t->er->run, t->task, t->try_number, dg_now_ms());
    t->sensor_start_ms = ti->first_start_ms ? ti->first_start_ms : dg_now_ms();
    dg__exec_open_log(t, false);
    begin_check(t);
}

void dg__exec_stop_sensor(exec_try *t) {
    if (t->timer) uv_timer_stop(t->timer);
    dg__exec_try_fail(t, "sensor stopped"); /* a probe container goes with its job */
}
