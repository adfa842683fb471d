/* exec — the scheduler's commands carried out through a backend (see include/dagd/exec.h).
 *
 * Ownership: dg_exec owns one exec_run per scheduler run (run->userdata) and one exec_try
 * per try it started or prepared. An exec_try is reference counted: the executor holds one
 * reference while the try is live, the backend job one until the job is released (no job
 * callback comes after that), and every other call in flight (a file read, a notification)
 * one; it is freed when the last goes, so callbacks never see freed memory. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/log.h"
#include "dagd/tmpl.h"
#include "exec_internal.h"

/* Scheduler commands handled in one turn of the loop before the rest waits for the next. */
#define PUMP_BUDGET 2000

static void pump(dg_exec *x);
static void defer_pump(dg_exec *x);
static void wake_cb(uv_timer_t *h);
static void check_stalled(dg_exec *x);
static void try_unref(exec_try *t);
static void exec_release(dg_exec *x);

static int64_t now_ms(void) { return dg_now_ms(); }

static dg_log_ctx try_ctx(const exec_try *t) {
    const dg_run *run = t->er->run;
    return (dg_log_ctx){.dag = run->dag->dag_id, .run = run->run_id, .task = run->dag->tasks[t->task].id,
                        .try_number = t->try_number};
}

/* ---- try lifecycle ---- */

static exec_try *try_new(exec_run *er, size_t task, int try_number) {
    exec_try *t = xcalloc(1, sizeof *t);
    t->x = er->x;
    t->er = er;
    t->task = task;
    t->try_number = try_number;
    t->refs = 1; /* the executor's own */
    t->next = er->x->tries;
    er->x->tries = t;
    er->x->outstanding++;
    er->refs++;
    return t;
}

static exec_try *try_ref(exec_try *t) {
    t->refs++;
    return t;
}

static void timer_free_cb(uv_handle_t *h) { free(h); }

static void run_unref(exec_run *er) {
    if (--er->refs > 0) return;
    json_decref(er->conf);
    json_decref(er->params);
    for (size_t i = 0; i < er->n_tasks; i++) free(er->outputs[i]);
    free(er->outputs);
    free(er->cur);
    free(er->prepared);
    free(er->ti_unsaved);
    free(er->run_type);
    dg_strv_free(er->secrets);
    free(er);
}

static void try_unref(exec_try *t) {
    if (!t || --t->refs > 0) return;
    dg_exec *x = t->x;
    for (exec_try **p = &x->tries; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            break;
        }
    if (t->er->cur[t->task] == t) t->er->cur[t->task] = NULL;
    if (t->er->prepared[t->task] == t) t->er->prepared[t->task] = NULL;
    if (t->timer) uv_close((uv_handle_t *)t->timer, timer_free_cb);
    dg_tasklog_close(t->log);
    dg_buf_free(&t->last_line);
    free(t->name);
    free(t->job_id);
    free(t->image);
    free(t->image_id);
    free(t->image_digest);
    free(t->rendered);
    free(t->message);
    free(t->output_error);
    exec_run *er = t->er;
    free(t);
    x->outstanding--;
    run_unref(er);
    if (x->outstanding == 0) {
        check_stalled(x);
        /* records still to be written keep a foreground run going */
        if (x->hooks.idle && !x->store_err) x->hooks.idle(x->hooks.ud);
        if (x->closing && x->wake_closed && x->retry_closed && x->flush_closed) exec_release(x);
    }
}

static void job_gone(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) {
        dg_log_ctx c = try_ctx(t);
        dg_log(DG_LOG_WARNING, &c, "%s", err->msg);
    }
    try_unref(t); /* the job's reference */
}

/* The try lets go of its backend job (removing it or not); no job event comes after, and
 * the try stays outstanding until the job is gone. */
static void try_drop_job(exec_try *t, bool remove) {
    if (!t->job) return;
    dg_job *j = t->job;
    t->job = NULL;
    dg_job_release(j, remove, job_gone, t);
}

/* The executor lets go of a try: it is finished from the scheduler's point of view and
 * nothing more will be started for it (calls in flight keep it alive until they return). */
static void try_release(exec_try *t) {
    if (t->released) return;
    t->released = true;
    try_unref(t);
}

exec_try *dg__exec_try_ref(exec_try *t) { return try_ref(t); }
void dg__exec_try_unref(exec_try *t) { try_unref(t); }
void dg__exec_try_drop_job(exec_try *t, bool remove) { try_drop_job(t, remove); }
void dg__exec_try_release(exec_try *t) { try_release(t); }

/* ---- persistence ---- */

static void retry_cb(uv_timer_t *h);

/* A write failed: state writes are failing until every record not written is (see
 * docs/operations.md, "A full disk"). Said once, when it begins. */
static void store_failed(dg_exec *x, const dg_run *run, const char *what) {
    _cleanup_free_ char *reason = xasprintf("saving %s failed: %s", what, dg_store_errmsg(x->store));
    if (x->store_err) {
        free(x->store_err);
        x->store_err = xstrdup(reason);
        return;
    }
    x->store_err = xstrdup(reason);
    dg_log_ctx c = {.dag = run ? run->dag->dag_id : NULL, .run = run ? run->run_id : NULL};
    dg_log(DG_LOG_ERR, &c,
           "state writes are failing (%s): no task starts and no run is made until they work again; "
           "retrying every second",
           reason);
    dg_notify_status("degraded: %s", reason);
    if (!x->closing) uv_timer_start(&x->retry, retry_cb, 1000, 1000);
}

static bool try_rec_same(const dg_try_rec *a, const dg_try_rec *b) {
    return !strcmp(a->dag_id, b->dag_id) && !strcmp(a->run_id, b->run_id) && !strcmp(a->task_id, b->task_id) &&
           a->try_number == b->try_number;
}

/* Keeps c (owned) to be written again, in place of an older copy of the same try. */
static void keep_unsaved_try(dg_exec *x, dg_try_rec *c) {
    for (size_t i = 0; i < x->n_unsaved_tries; i++) {
        if (try_rec_same(x->unsaved_tries[i], c)) {
            dg_try_rec_free(x->unsaved_tries[i]);
            x->unsaved_tries[i] = c;
            return;
        }
    }
    x->unsaved_tries = xrealloc(x->unsaved_tries, (x->n_unsaved_tries + 1) * sizeof *x->unsaved_tries);
    x->unsaved_tries[x->n_unsaved_tries++] = c;
}

/* ---- one transaction per loop iteration ----
 *
 * While state writes work, the records written in one turn of the loop go in one store
 * transaction, committed by flush_cb before the loop waits again and by batch_flush
 * wherever a record must be on disk before something outside follows from it (a
 * container starts or is removed, a run is forgotten). Should the transaction fail, every
 * record it held is marked to be written again, as a single failed write would be. */

/* The puts that follow for er's run join the iteration's transaction: false when they
 * are to go one by one (state writes failing, or no transaction could be opened). */
static bool batch_join(dg_exec *x, exec_run *er) {
    if (x->store_err || x->closing) return false;
    if (!dg_store_in_tx(x->store) && dg_store_begin(x->store) < 0) return false;
    if (!er->in_batch) {
        er->in_batch = true;
        er->refs++;
        if (x->n_batch_runs == x->cap_batch_runs) {
            x->cap_batch_runs = x->cap_batch_runs ? 2 * x->cap_batch_runs : 16;
            x->batch_runs = xrealloc(x->batch_runs, x->cap_batch_runs * sizeof *x->batch_runs);
        }
        x->batch_runs[x->n_batch_runs++] = er;
    }
    return true;
}

static void batch_keep_try(dg_exec *x, const dg_try_rec *tr) {
    if (x->n_batch_tries == x->cap_batch_tries) {
        x->cap_batch_tries = x->cap_batch_tries ? 2 * x->cap_batch_tries : 16;
        x->batch_tries = xrealloc(x->batch_tries, x->cap_batch_tries * sizeof *x->batch_tries);
    }
    x->batch_tries[x->n_batch_tries++] = dg_try_rec_dup(tr);
}

/* The transaction is over: written (lost false) or not, in which case everything it held
 * is to be written again from the retry timer. */
static void batch_end(dg_exec *x, bool lost) {
    for (size_t i = 0; i < x->n_batch_runs; i++) {
        exec_run *er = x->batch_runs[i];
        er->in_batch = false;
        if (lost) {
            er->run_unsaved = true;
            for (size_t k = 0; k < er->n_tasks; k++) er->ti_unsaved[k] = true;
        }
        run_unref(er);
    }
    x->n_batch_runs = 0;
    for (size_t i = 0; i < x->n_batch_tries; i++) {
        if (lost) keep_unsaved_try(x, x->batch_tries[i]);
        else dg_try_rec_free(x->batch_tries[i]);
    }
    x->n_batch_tries = 0;
}

/* Commits the iteration's transaction; on failure state writes are failing. */
static void batch_flush(dg_exec *x) {
    if (!x->store) return;
    if (!dg_store_in_tx(x->store)) {
        batch_end(x, false); /* nothing held (or already ended by a failed put) */
        return;
    }
    if (dg_store_commit(x->store) == 0) {
        batch_end(x, false);
        return;
    }
    const dg_run *run = x->n_batch_runs ? x->batch_runs[0]->run : NULL;
    batch_end(x, true);
    store_failed(x, run, "the records of a loop iteration");
}

/* Before the loop waits: the turn's writes are committed, and a pump deferred by its
 * budget goes on at once in the next turn (a timer of 0 started here lets the loop
 * poll without waiting). */
static void flush_cb(uv_prepare_t *h) {
    dg_exec *x = h->data;
    batch_flush(x);
    x->turn_handled = 0;
    if (x->pump_deferred) {
        x->pump_deferred = false;
        uv_unref((uv_handle_t *)&x->flush);
        if (!x->closing) uv_timer_start(&x->wake, wake_cb, 0, 0);
    }
}

static void defer_pump(dg_exec *x) {
    if (x->pump_deferred) return;
    x->pump_deferred = true;
    uv_ref((uv_handle_t *)&x->flush); /* the loop turns once more for it */
}

void dg_exec_flush(dg_exec *x) {
    if (x) batch_flush(x);
}

/* Writes a try record; one not written is kept (a copy) to be written again, replacing
 * an older copy of the same try, so that every finished try is recorded once space
 * returns even when its instance has moved on to another try. */
static void put_try(dg_exec *x, const dg_run *run, const dg_try_rec *tr) {
    bool batched = dg_store_in_tx(x->store);
    if (dg_store_put_try(x->store, tr) == 0) {
        for (size_t i = 0; i < x->n_unsaved_tries; i++) {
            if (try_rec_same(x->unsaved_tries[i], tr)) {
                dg_try_rec_free(x->unsaved_tries[i]);
                x->unsaved_tries[i] = x->unsaved_tries[--x->n_unsaved_tries];
                break;
            }
        }
        if (batched) batch_keep_try(x, tr);
        return;
    }
    if (batched) batch_end(x, true); /* the failed put ended the transaction */
    store_failed(x, run, "a try");
    keep_unsaved_try(x, dg_try_rec_dup(tr));
}

static void persist_ti(dg_exec *x, dg_run *run, size_t task) {
    if (!x->store) return;
    exec_run *er = run->userdata;
    const dg_ti *ti = &run->ti[task];
    const dg_task *tk = &run->dag->tasks[task];
    exec_try *t = er->cur[task];
    /* a rendered image may hold what a template took from a connection */
    _cleanup_free_ char *image = t && t->image ? dg_redact(er->secrets, t->image, strlen(t->image)) : NULL;
    dg_ti_rec r = {
        .dag_id = run->dag->dag_id,
        .run_id = run->run_id,
        .task_id = tk->id,
        .state = (char *)dg_ti_state_name(ti->state),
        .try_number = ti->try_number,
        .max_tries = ti->max_tries,
        .start_ms = ti->start_ms,
        .end_ms = ti->end_ms,
        .has_exit_code = ti->has_exit_code,
        .exit_code = ti->exit_code,
        .container_id = t ? t->job_id : NULL,
        .container_name = t ? t->name : NULL,
        .image = image ? image : tk->image,
        .output = er->outputs[task],
        .message = ti->message,
    };
    bool batched = batch_join(x, er);
    er->ti_unsaved[task] = false;
    if (dg_store_put_ti(x->store, &r) < 0) {
        if (batched) batch_end(x, true); /* the failed put ended the transaction */
        er->ti_unsaved[task] = true;
        store_failed(x, run, "a task instance");
    }
    /* the try record mirrors the instance while that try is current; `scheduled` (a retry
     * waiting) and `none` say nothing about the last try */
    if (ti->try_number > 0 && (!t || t->try_number == ti->try_number) && ti->state != DG_TI_SCHEDULED &&
        ti->state != DG_TI_NONE) {
        dg_try_rec tr = {
            .dag_id = run->dag->dag_id,
            .run_id = run->run_id,
            .task_id = tk->id,
            /* a try that will be retried ended failed; the instance waits */
            .state = (char *)dg_ti_state_name(ti->state == DG_TI_UP_FOR_RETRY ? DG_TI_FAILED : ti->state),
            .try_number = ti->try_number,
            .start_ms = ti->start_ms,
            .running_ms = ti->running_ms,
            .rendered = t ? t->rendered : NULL,
            .end_ms = ti->end_ms ? ti->end_ms : (t ? t->end_ms : 0),
            .has_exit_code = ti->has_exit_code,
            .exit_code = ti->exit_code,
            .container_id = t ? t->job_id : NULL,
            .container_name = t ? t->name : NULL,
            .message = ti->message,
            .image_id = t ? t->image_id : NULL,
            .image_digest = t ? t->image_digest : NULL,
        };
        put_try(x, run, &tr);
    }
}

static void persist_run(dg_exec *x, dg_run *run) {
    exec_run *er = run->userdata;
    if (!x->store) return;
    _cleanup_free_ char *conf = json_dumps(er->conf ? er->conf : json_object(), JSON_COMPACT);
    dg_run_rec r = {
        .dag_id = run->dag->dag_id,
        .run_id = run->run_id,
        .run_type = er->run_type,
        .state = (char *)dg_run_state_name(run->state),
        .logical_ms = er->logical_ms,
        .interval_start_ms = er->interval_start_ms,
        .interval_end_ms = er->interval_end_ms,
        .start_ms = run->start_ms,
        .end_ms = run->end_ms,
        .conf_json = conf,
    };
    bool batched = batch_join(x, er);
    er->run_unsaved = false;
    if (dg_store_put_run(x->store, &r) < 0) {
        if (batched) batch_end(x, true); /* the failed put ended the transaction */
        er->run_unsaved = true;
        store_failed(x, run, "the run");
    }
}

static bool run_unsaved(const exec_run *er) {
    if (er->run_unsaved) return true;
    for (size_t i = 0; i < er->n_tasks; i++)
        if (er->ti_unsaved[i]) return true;
    return false;
}

static void begin_try(exec_try *t);
static void start_job(exec_try *t);

/* Work held back while state writes failed goes on, in the order it was held. */
static void resume_waiting(dg_exec *x) {
    size_t n = 0;
    for (exec_try *t = x->tries; t; t = t->next) n += t->wait != WAIT_NONE;
    if (!n) return;
    exec_try **v = xcalloc(n, sizeof *v);
    size_t k = n;
    for (exec_try *t = x->tries; t; t = t->next) /* the list is newest first */
        if (t->wait != WAIT_NONE) v[--k] = try_ref(t);
    for (size_t i = 0; i < n; i++) {
        exec_try *t = v[i];
        int w = t->wait;
        t->wait = WAIT_NONE;
        if (w == WAIT_BEGIN && !t->reported) begin_try(t);
        else if (w == WAIT_START && !t->reported && t->job) start_job(t);
        else if (w == WAIT_RELEASE) try_drop_job(t, t->remove_job);
        try_unref(t);
    }
    free(v);
}

/* Every second while state writes fail: write again what was not written (runs before
 * their task instances, instances before their tries, as the store needs); when all is
 * written, the condition ends and work held back goes on. */
static void retry_cb(uv_timer_t *h) {
    dg_exec *x = h->data;
    for (dg_run *run = dg_sched_runs(x->sched); run; run = run->next) {
        exec_run *er = run->userdata;
        if (!er) continue;
        if (er->run_unsaved) persist_run(x, run);
        for (size_t i = 0; i < er->n_tasks; i++)
            if (er->ti_unsaved[i]) persist_ti(x, run, i);
    }
    dg_try_rec **v = x->unsaved_tries;
    size_t n = x->n_unsaved_tries;
    x->unsaved_tries = NULL;
    x->n_unsaved_tries = 0;
    for (size_t i = 0; i < n; i++) {
        bool newer = false; /* written again meanwhile, from the instance */
        for (size_t k = 0; k < x->n_unsaved_tries; k++) newer |= try_rec_same(x->unsaved_tries[k], v[i]);
        if (!newer && dg_store_put_try(x->store, v[i]) < 0) {
            x->unsaved_tries = xrealloc(x->unsaved_tries, (x->n_unsaved_tries + 1) * sizeof *x->unsaved_tries);
            x->unsaved_tries[x->n_unsaved_tries++] = v[i];
            free(x->store_err);
            x->store_err = xasprintf("saving a try failed: %s", dg_store_errmsg(x->store));
            continue;
        }
        dg_try_rec_free(v[i]);
    }
    free(v);
    if (x->n_unsaved_tries) return;
    for (dg_run *run = dg_sched_runs(x->sched); run; run = run->next)
        if (run->userdata && run_unsaved(run->userdata)) return;
    dg_log(DG_LOG_NOTICE, NULL, "state writes work again (they failed: %s); held work resumes", x->store_err);
    dg_notify_status("state writes work again");
    free(x->store_err);
    x->store_err = NULL;
    uv_timer_stop(&x->retry);
    resume_waiting(x);
    pump(x);
    if (x->hooks.store_ok) x->hooks.store_ok(x->hooks.ud);
    if (x->outstanding == 0 && x->hooks.idle) x->hooks.idle(x->hooks.ud);
}

const char *dg_exec_store_error(const dg_exec *x) { return x->store_err; }

/* ---- reporting to the scheduler ---- */

static void report(exec_try *t, const dg_result *res) {
    if (t->reported) return;
    t->reported = true;
    t->end_ms = now_ms();
    dg_sched_on_finished(t->x->sched, t->er->run, t->task, t->try_number, res, now_ms());
    pump(t->x);
}

/* A try that could not run (or was stopped before its job ran). */
void dg__exec_try_fail(exec_try *t, const char *msg) {
    dg_result res = {.type = DG_RES_ERROR, .message = msg};
    if (t->stopping && !msg) res.message = "stopped";
    free(t->message);
    t->message = xstrdup(msg);
    if (t->er->prepared[t->task] == t) t->er->prepared[t->task] = NULL; /* START makes a new try */
    try_drop_job(t, true);
    if (!t->prepare_only || t->start_requested) report(t, &res);
    try_release(t);
}

void dg__exec_try_succeed(exec_try *t) {
    dg_result res = {.type = DG_RES_EXITED, .exit_code = 0};
    report(t, &res);
    try_release(t);
}

void dg__exec_report(exec_try *t, const dg_result *res) { report(t, res); }

/* ---- template variables ---- */

int dg__exec_xcom_pull(void *ud, const char *task_id, char **ret, dg_error *err) {
    exec_run *er = ud;
    const dg_dag *dag = er->run->dag;
    if (er->x->test_mode)
        return dg_error_set(err, -ENOENT, "ti.xcom_pull('%s') has no upstream output under `dagd test`", task_id);
    ssize_t i = dg_dag_task_index(dag, task_id);
    if (i < 0) return dg_error_set(err, -ENOENT, "ti.xcom_pull: no task '%s' in DAG '%s'", task_id, dag->dag_id);
    if (!er->outputs[i])
        return dg_error_set(err, -ENOENT, "ti.xcom_pull: task '%s' has no output (state %s)", task_id,
                            dg_ti_state_name(er->run->ti[i].state));
    *ret = xstrdup(er->outputs[i]);
    return 0;
}

json_t *dg__exec_run_vars(exec_run *er, size_t task, int try_number) {
    const dg_dag *dag = er->run->dag;
    return dg_tmpl_vars(dag->dag_id, er->run->run_id, task == SIZE_MAX ? "" : dag->tasks[task].id, try_number,
                        er->logical_ms, er->interval_start_ms, er->interval_end_ms, er->params, er->conf,
                        er->x->conns);
}

json_t *dg__exec_vars(exec_try *t) { return dg__exec_run_vars(t->er, t->task, t->try_number); }

/* ---- the job's events ---- */

void dg__exec_open_log(exec_try *t, bool fresh) {
    dg_exec *x = t->x;
    if (!x->state_dir || t->log) return;
    const dg_run *run = t->er->run;
    _cleanup_free_ char *path =
        dg_store_log_path(x->state_dir, run->dag->dag_id, run->run_id, run->dag->tasks[t->task].id, t->try_number);
    if (fresh) dg_tasklog_remove(path); /* an adopted job's output comes again from its first line */
    struct stat sb;
    bool empty = stat(path, &sb) < 0 || sb.st_size == 0;
    int r = dg_tasklog_open(path, &t->log);
    if (r < 0) {
        dg_log_ctx c = try_ctx(t);
        dg_log(DG_LOG_ERR, &c, "cannot open the log file %s: %s", path, strerror(-r));
        return;
    }
    /* the header: which image the try runs, before its first line (docs/dags.md, "Tries") */
    if (empty && (t->image || t->image_id)) {
        exec_run *er = t->er;
        _cleanup_free_ char *image = t->image && er->secrets ? dg_redact(er->secrets, t->image, strlen(t->image)) : NULL;
        _cleanup_free_ char *h = xasprintf("[dagd] image %s (id %s, digest: %s)", image ? image : t->image ? t->image : "?",
                                           t->image_id ? t->image_id : "unknown",
                                           t->image_digest ? t->image_digest : "none");
        dg_tasklog_line(t->log, DG_TASKLOG_HEADER, h, strlen(h));
        dg_tasklog_flush(t->log);
    }
}

static void start_job(exec_try *t);

/* What the backend knows of the image the job runs (docs/dags.md, "Tries"): kept for the
 * try's record, said once in the daemon's log. */
static void take_image(exec_try *t) {
    const char *id, *digest;
    dg_job_image(t->job, &id, &digest);
    if (!id || (t->image_id && !strcmp(t->image_id, id))) return;
    free(t->image_id);
    free(t->image_digest);
    t->image_id = xstrdup(id);
    t->image_digest = xstrdup(digest);
    dg_log_ctx c = try_ctx(t);
    dg_log(DG_LOG_INFO, &c, "runs image %s%s%s", id, digest ? ", digest " : "", digest ? digest : "");
}

static void job_created(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) {
        dg__exec_try_fail(t, err->msg);
        return;
    }
    t->created = true;
    free(t->job_id);
    t->job_id = xstrdup(dg_job_id(t->job));
    take_image(t);
    if (t->start_requested) start_job(t);
}

static void create_job(exec_try *t);

static void job_started(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err && err->code == -ENOENT && !t->remade && !t->stopping && !t->x->closing) {
        /* the container was removed before it ever ran (a removal a previous dagd sent
         * just before it died): the command did not run, so the same try makes a new one */
        dg_log_ctx c = try_ctx(t);
        dg_log(DG_LOG_NOTICE, &c, "the try's container is gone before it started; making it again");
        t->remade = true;
        t->created = false;
        free(t->job_id);
        t->job_id = NULL;
        try_drop_job(t, false);
        create_job(t);
        return;
    }
    if (err) {
        dg__exec_try_fail(t, err->msg);
        return;
    }
    t->started = true;
    /* a backend may name its job only once it runs (a swarm service) */
    if (!t->job_id) t->job_id = xstrdup(dg_job_id(t->job));
    take_image(t); /* a cluster learns it only now */
    dg_exec *x = t->x;
    int64_t now = now_ms();
    x->starts++;
    if (t->start_cmd_ms) {
        double lat = (double)(now - t->start_cmd_ms) / 1000.0;
        x->start_lat_sum += lat;
        static const double bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
        size_t b = 0;
        while (b < ARRAY_SIZE(bounds) && lat > bounds[b]) b++;
        x->start_lat_buckets[b]++;
    }
    dg_sched_on_started(x->sched, t->er->run, t->task, t->try_number, now);
    pump(x);
}

void dg__exec_job_line(void *ud, int stream, const char *line, size_t len) {
    exec_try *t = ud;
    exec_run *er = t->er;
    _cleanup_free_ char *red = NULL;
    if (er->secrets) {
        red = dg_redact(er->secrets, line, len);
        line = red;
        len = strlen(red);
    }
    if (t->log) {
        dg_tasklog_line(t->log, stream, line, len);
        dg_tasklog_flush(t->log); /* followers (logs -f) read the file as it grows */
    }
    if (stream == 1) {
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
        if (i < len) {
            t->last_line.len = 0;
            dg_buf_append(&t->last_line, line, len > DG_OUTPUT_MAX ? DG_OUTPUT_MAX : len);
        }
    }
    if (t->x->hooks.log_line) t->x->hooks.log_line(t->x->hooks.ud, er->run, t->task, stream, line, len);
}

static void report_exit(exec_try *t);

static void output_cb(void *ud, const char *content, size_t len, const dg_error *err) {
    exec_try *t = ud;
    if (err && err->code == -ECANCELED) {
        try_unref(t);
        return;
    }
    exec_run *er = t->er;
    if (err) {
        t->output_error = xasprintf("output file: %s", err->msg);
    } else {
        free(er->outputs[t->task]);
        er->outputs[t->task] = dg_redact(er->secrets, content, len); /* as the log's lines are */
    }
    t->output_read = true;
    report_exit(t);
    try_unref(t);
}

/* The exit code and every line are known: collect the output, report, then remove. */
static void report_exit(exec_try *t) {
    if (t->reported) return;
    exec_run *er = t->er;
    const dg_task *tk = &er->run->dag->tasks[t->task];
    if (t->log) dg_tasklog_close(t->log), t->log = NULL;
    if (tk->output_file && !t->output_read && t->exit_code == 0 && !t->stopping && t->job) {
        dg_job_read_file(t->job, tk->output_file, DG_OUTPUT_MAX, output_cb, try_ref(t));
        return;
    }
    if (!tk->output_file && t->last_line.len) {
        free(er->outputs[t->task]);
        er->outputs[t->task] = xstrdup(t->last_line.data);
    }
    dg_result res = {.type = DG_RES_EXITED, .exit_code = t->exit_code};
    if (t->output_error && t->exit_code == 0) {
        res.type = DG_RES_ERROR;
        res.message = t->output_error;
    }
    report(t, &res);
    bool success = res.type == DG_RES_EXITED && t->exit_code == 0;
    bool remove = tk->remove == DG_REMOVE_ALWAYS || (tk->remove == DG_REMOVE_ON_SUCCESS && success);
    if (t->job) batch_flush(t->x); /* the outcome on disk before the job goes */
    if (t->x->store_err && t->job) {
        /* the outcome is not on disk yet: the job stays, so that a restart before it is
         * takes its exit again instead of running the try a second time */
        t->wait = WAIT_RELEASE;
        t->remove_job = remove;
    } else {
        try_drop_job(t, remove);
    }
    try_release(t);
}

static void job_exited(void *ud, int exit_code, bool vanished) {
    exec_try *t = ud;
    if (t->exited) return;
    t->exited = true;
    take_image(t); /* a cluster may learn it only while the job runs */
    if (vanished) {
        dg__exec_try_fail(t, "the container vanished (removed outside dagd?)");
        return;
    }
    t->exit_code = exit_code;
    report_exit(t);
}

static const dg_job_events job_events = {
    .created = job_created,
    .started = job_started,
    .line = dg__exec_job_line,
    .exited = job_exited,
};

/* ---- the container path ---- */

/* A created job starts only once its id is on disk, so that a restart finds the try's
 * container instead of making another. */
static void start_job(exec_try *t) {
    dg__exec_open_log(t, false);
    persist_ti(t->x, t->er->run, t->task);
    batch_flush(t->x);
    if (t->x->store_err) {
        t->wait = WAIT_START;
        return;
    }
    dg_job_start(t->job);
}

static json_t *strv_json(char *const *v) {
    if (!v) return json_null();
    json_t *a = json_array();
    for (; *v; v++) json_array_append_new(a, json_string(*v));
    return a;
}

/* What the API shows of a try's spec (docs/api.md): the rendered command and entrypoint with
 * secrets redacted; the env's keys, with the values of the task's own non-secret `env:`
 * entries (redacted too) and "***" for everything else (secret entries, env_file lines,
 * connections). */
static char *rendered_json(exec_try *t, const dg_job_spec *s) {
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    json_auto_t *o = json_object();
    json_object_set_new(o, "command", strv_json(s->command));
    json_object_set_new(o, "entrypoint", strv_json(s->entrypoint));
    json_t *env = json_object();
    for (size_t i = 0; s->env && s->env[i]; i++) {
        const char *eq = strchr(s->env[i], '=');
        if (!eq) continue;
        _cleanup_free_ char *key = xstrndup(s->env[i], (size_t)(eq - s->env[i]));
        bool shown = false;
        for (size_t k = 0; k < tk->n_env && !shown; k++)
            shown = strcmp(tk->env[k].key, key) == 0 && !tk->env[k].secret;
        json_object_set_new(env, key, json_string(shown ? eq + 1 : "***"));
    }
    json_object_set_new(o, "env", env);
    _cleanup_free_ char *text = json_dumps(o, JSON_COMPACT);
    if (!text) return NULL;
    return t->er->secrets ? dg_redact(t->er->secrets, text, strlen(text)) : TAKE_PTR(text);
}

static void create_job(exec_try *t) {
    dg_error err = {0};
    exec_spec sp;
    if (dg__exec_build_spec(t, &sp, &err) < 0) {
        dg__exec_try_fail(t, err.msg);
        dg_error_clear(&err);
        return;
    }
    free(t->image);
    t->image = xstrdup(sp.s.image);
    free(t->rendered);
    t->rendered = rendered_json(t, &sp.s);
    free(t->name);
    t->name = xstrdup(sp.s.name);
    t->job = dg_job_create(t->x->backend, &sp.s, &job_events, try_ref(t));
    dg__exec_spec_free(&sp);
}

/* ---- command handling ---- */

static void handle_unprepare(dg_exec *x, dg_run *run, size_t task);

static void handle_start(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    exec_try *t = er->prepared[task];
    if (t && t->try_number != try_number) {
        /* made ahead for another try (the task was cleared since): not this one's */
        handle_unprepare(x, run, task);
        t = NULL;
    }
    if (t) {
        er->prepared[task] = NULL;
        t->prepare_only = false;
        t->start_requested = true;
        t->start_cmd_ms = now_ms();
        er->cur[task] = t;
        if (t->created) start_job(t);
        return;
    }
    t = try_new(er, task, try_number);
    er->cur[task] = t;
    t->start_requested = true;
    t->start_cmd_ms = now_ms();
    if (x->store_err) {
        t->wait = WAIT_BEGIN; /* nothing starts that could not be recorded */
        return;
    }
    begin_try(t);
}

static void begin_try(exec_try *t) {
    switch (t->er->run->dag->tasks[t->task].kind) {
    case DG_KIND_CONTAINER: create_job(t); break;
    case DG_KIND_SENSOR: dg__exec_start_sensor(t); break;
    case DG_KIND_NOTIFY: dg__exec_notify_task(t); break;
    default: dg__exec_try_fail(t, "task has no kind"); break;
    }
}

static void handle_stop(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    exec_try *t = er->cur[task];
    if (!t || t->try_number != try_number || t->reported) return;
    t->stopping = true;
    if (t->wait == WAIT_BEGIN) {
        t->wait = WAIT_NONE;
        dg__exec_try_fail(t, "stopped before the container started");
    } else if (t->started && t->job) {
        dg_job_stop(t->job, x->stop_grace_s); /* exited follows */
    } else if (run->dag->tasks[task].kind == DG_KIND_SENSOR) {
        dg__exec_stop_sensor(t);
    } else if (t->job) {
        /* not started yet (image pull, create or start in flight): the backend undoes it */
        dg__exec_try_fail(t, "stopped before the container started");
    }
}

static void handle_prepare(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    const dg_task *tk = &run->dag->tasks[task];
    if (tk->kind != DG_KIND_CONTAINER || er->prepared[task] || er->cur[task] || x->store_err) return;
    if (dg_tmpl_uses_xcom(tk->image) || (tk->working_dir && dg_tmpl_uses_xcom(tk->working_dir))) return;
    for (size_t i = 0; tk->command && tk->command[i]; i++)
        if (dg_tmpl_uses_xcom(tk->command[i])) return;
    for (size_t i = 0; tk->entrypoint && tk->entrypoint[i]; i++)
        if (dg_tmpl_uses_xcom(tk->entrypoint[i])) return;
    for (size_t i = 0; i < tk->n_env; i++)
        if (dg_tmpl_uses_xcom(tk->env[i].value)) return;
    for (size_t i = 0; tk->volumes && tk->volumes[i]; i++)
        if (dg_tmpl_uses_xcom(tk->volumes[i])) return;
    exec_try *t = try_new(er, task, try_number);
    t->prepare_only = true;
    er->prepared[task] = t;
    create_job(t);
}

static void handle_unprepare(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    exec_try *t = er->prepared[task];
    if (!t) return;
    er->prepared[task] = NULL;
    try_drop_job(t, true); /* a create in flight is undone by the backend */
    try_release(t);
}

static void handle(dg_exec *x, const dg_cmd *c) {
    switch (c->type) {
    case DG_CMD_START: handle_start(x, c->run, c->task, c->try_number); break;
    case DG_CMD_STOP: handle_stop(x, c->run, c->task, c->try_number); break;
    case DG_CMD_PREPARE: handle_prepare(x, c->run, c->task, c->try_number); break;
    case DG_CMD_UNPREPARE: handle_unprepare(x, c->run, c->task); break;
    case DG_CMD_TI_CHANGED:
        /* a state already left again in the same tick (scheduled → queued) is not news */
        if (c->state != c->run->ti[c->task].state) break;
        persist_ti(x, c->run, c->task);
        if (x->hooks.ti_changed) x->hooks.ti_changed(x->hooks.ud, c->run, c->task);
        break;
    case DG_CMD_RUN_CHANGED:
        /* queued → running in one tick is one change to report */
        if (((exec_run *)c->run->userdata)->last_state == (int)c->run->state) break;
        ((exec_run *)c->run->userdata)->last_state = (int)c->run->state;
        persist_run(x, c->run);
        if (x->hooks.run_changed) x->hooks.run_changed(x->hooks.ud, c->run);
        break;
    case DG_CMD_NOTIFY: dg__exec_notify_event(x, c->run, c->task, c->event); break;
    }
}

static void wake_cb(uv_timer_t *h) { pump(h->data); }

static void check_stalled(dg_exec *x) {
    if (x->closing || x->store_err || !x->ready || x->held || x->pumping || x->outstanding > 0 || !x->hooks.stalled) return;
    if (dg_sched_next_wakeup(x->sched) >= 0) return;
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next)
        if (r->state == DG_RUN_RUNNING) x->hooks.stalled(x->hooks.ud, r);
}

static void pump(dg_exec *x) {
    if (!x->ready || x->closing || x->held) return;
    if (x->pumping) {
        x->pump_again = true;
        return;
    }
    if (x->turn_handled >= PUMP_BUDGET) {
        defer_pump(x); /* flush_cb sets it going in the next turn */
        return;
    }
    x->pumping = true;
    bool more = false;
    for (;;) {
        x->pump_again = false;
        dg_sched_tick(x->sched, now_ms());
        dg_cmd *cmds;
        size_t n = dg_sched_take_cmds(x->sched, &cmds);
        for (size_t i = 0; i < n; i++) handle(x, &cmds[i]);
        free(cmds);
        if (n == 0 && !x->pump_again) break;
        x->turn_handled += n;
        /* past the budget of a loop turn (a cascade of tasks that finish as they start,
         * like thousands of sensors whose condition holds at once), the rest goes on in
         * the next turn, so that the API answers meanwhile and a turn's store transaction
         * stays bounded (docs/benchmarks.md, The daemon at scale) */
        if (x->turn_handled >= PUMP_BUDGET) {
            more = true;
            break;
        }
    }
    x->pumping = false;
    if (more) {
        defer_pump(x);
        return;
    }
    int64_t w = dg_sched_next_wakeup(x->sched);
    check_stalled(x);
    if (w >= 0) {
        int64_t d = w - now_ms();
        uv_timer_start(&x->wake, wake_cb, (uint64_t)(d > 0 ? d : 0), 0);
    } else {
        uv_timer_stop(&x->wake);
    }
}

void dg_exec_pump(dg_exec *x) { pump(x); }

/* ---- connecting ---- */

static void connected_cb(void *ud, const dg_error *err) {
    dg_exec *x = ud;
    void (*cb)(void *, const dg_error *) = x->connect_cb;
    x->connect_cb = NULL;
    if (!err) x->ready = true;
    if (cb) cb(x->connect_ud, err);
    if (!err) pump(x);
}

void dg_exec_connect(dg_exec *x, void (*cb)(void *ud, const dg_error *err), void *ud) {
    x->connect_cb = cb;
    x->connect_ud = ud;
    _cleanup_free_ char *label = xasprintf("io.dagd.instance=%s", x->instance);
    const char *labels[] = {label, NULL};
    dg_backend_connect(x->backend, labels, connected_cb, x);
}

dg_exec *dg_exec_new(const dg_exec_opts *opts) {
    dg_exec *x = xcalloc(1, sizeof *x);
    x->loop = opts->loop;
    x->backend = opts->backend;
    x->sched = opts->sched;
    x->store = opts->store;
    x->state_dir = xstrdup(opts->state_dir);
    x->stop_grace_s = opts->stop_grace_s > 0 ? opts->stop_grace_s : 10;
    x->allow_privileged = opts->policy.allow_privileged;
    x->allow_docker_socket = opts->policy.allow_docker_socket;
    x->allow_host_network = opts->policy.allow_host_network;
    x->allow_container_network = opts->policy.allow_container_network;
    x->allowed_volume_prefixes = dg_strv_copy(opts->policy.allowed_volume_prefixes);
    x->allowed_sensitive_paths = dg_strv_copy(opts->policy.allowed_sensitive_paths);
    x->protected_paths = dg_strv_copy((char *const *)opts->policy.protected_paths);
    x->conn_uris = opts->connections ? json_deep_copy(opts->connections) : json_object();
    x->conns = dg_conn_parse_all(x->conn_uris);
    x->smtp_url = xstrdup(opts->smtp.url);
    x->smtp_from = xstrdup(opts->smtp.from);
    x->smtp_user = xstrdup(opts->smtp.user);
    x->smtp_password = xstrdup(opts->smtp.password);
    x->hooks = opts->hooks;
    x->test_mode = opts->store == NULL;
    if (opts->instance) x->instance = xstrdup(opts->instance);
    else if (dg_random_hex(6, &x->instance) < 0) x->instance = xasprintf("p%d", (int)getpid());
    uv_timer_init(x->loop, &x->wake);
    x->wake.data = x;
    uv_timer_init(x->loop, &x->retry);
    x->retry.data = x;
    uv_prepare_init(x->loop, &x->flush);
    x->flush.data = x;
    uv_prepare_start(&x->flush, flush_cb);
    uv_unref((uv_handle_t *)&x->flush); /* it keeps the loop alive only for a deferred pump */
    return x;
}

/* depends_on_past looks at the previous run (by logical date) in the store. A task the
 * previous run did not have counts as succeeded there, as in Airflow. */
static void set_prev_states(dg_exec *x, dg_run *run, int64_t logical_ms) {
    const dg_dag *dag = run->dag;
    bool needed = false;
    for (size_t i = 0; i < dag->n_tasks; i++) needed |= dag->tasks[i].depends_on_past;
    if (!needed || !x->store) return;
    dg_run_rec *prev = NULL;
    if (dg_store_prev_run(x->store, dag->dag_id, logical_ms, &prev) < 0) return;
    dg_ti_rec **tis = NULL;
    size_t n = 0;
    if (dg_store_list_tis(x->store, dag->dag_id, prev->run_id, &tis, &n) >= 0) {
        dg_ti_state *st = xcalloc(dag->n_tasks, sizeof *st);
        for (size_t i = 0; i < dag->n_tasks; i++) st[i] = DG_TI_SUCCESS;
        for (size_t k = 0; k < n; k++) {
            ssize_t i = dg_dag_task_index(dag, tis[k]->task_id);
            int s = dg_ti_state_from_name(tis[k]->state);
            if (i >= 0 && s >= 0) st[i] = (dg_ti_state)s;
        }
        dg_sched_set_prev_states(run, st);
        free(st);
        dg_ti_recs_free(tis, n);
    }
    dg_run_rec_free(prev);
}

dg_run *dg_exec_add_run(dg_exec *x, const dg_dag *dag, const char *run_id, const char *run_type,
                        int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                        const json_t *conf) {
    dg_run *run = dg_sched_add_run(x->sched, dag, run_id, now_ms());
    exec_run *er = xcalloc(1, sizeof *er);
    er->x = x;
    er->run = run;
    er->refs = 1;
    er->last_state = -1;
    er->run_type = xstrdup(run_type);
    er->logical_ms = logical_ms;
    er->interval_start_ms = interval_start_ms;
    er->interval_end_ms = interval_end_ms;
    er->conf = conf ? json_deep_copy(conf) : json_object();
    er->params = json_deep_copy(dag->params); /* dg_tmpl_vars lays conf over it */
    /* connection passwords never reach a log */
    const char *cid;
    json_t *c;
    json_object_foreach(x->conns, cid, c) dg__exec_add_secret(er, json_string_value(json_object_get(c, "password")));
    er->n_tasks = dag->n_tasks;
    er->outputs = xcalloc(dag->n_tasks, sizeof(char *));
    er->cur = xcalloc(dag->n_tasks, sizeof(exec_try *));
    er->prepared = xcalloc(dag->n_tasks, sizeof(exec_try *));
    er->ti_unsaved = xcalloc(dag->n_tasks, sizeof(bool));
    run->userdata = er;
    set_prev_states(x, run, logical_ms);
    persist_run(x, run);
    return run;
}

void dg_exec_cancel_all(dg_exec *x) {
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next)
        if (r->state == DG_RUN_QUEUED || r->state == DG_RUN_RUNNING) dg_sched_cancel_run(x->sched, r, now_ms());
    pump(x);
}

const char *dg_exec_output(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    return er ? er->outputs[task] : NULL;
}

/* records still to be written count as one: a foreground run waits for them */
int dg_exec_outstanding(dg_exec *x) { return x->outstanding + (x->store_err ? 1 : 0); }

void dg_exec_hold(dg_exec *x, bool hold) {
    x->held = hold;
    if (!hold) pump(x);
}

bool dg_exec_try_live(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    exec_try *t = er ? er->cur[task] : NULL;
    return t && t->try_number == try_number && !t->reported;
}

void dg_exec_stats(const dg_exec *x, dg_exec_stats_t *ret) {
    ret->starts = x->starts;
    ret->start_latency_sum = x->start_lat_sum;
    for (size_t i = 0; i < 8; i++) ret->start_latency_buckets[i] = x->start_lat_buckets[i];
}

void dg_exec_persist_run(dg_exec *x, dg_run *run) { persist_run(x, run); }

void dg_exec_persist_new_tis(dg_exec *x, dg_run *run) {
    for (size_t i = 0; i < run->dag->n_tasks; i++) persist_ti(x, run, i);
}

void dg_exec_set_output(dg_exec *x, dg_run *run, size_t task, const char *output) {
    exec_run *er = run->userdata;
    free(er->outputs[task]);
    er->outputs[task] = xstrdup(output);
}

/* ---- crash recovery ---- */

typedef struct recover_req {
    dg_exec *x;
    dg_run *run;
    void (*done)(void *ud);
    void *ud;
} recover_req;

static bool job_is(const dg_job_info *j, const dg_task *tk, int try_number) {
    const char *task = json_string_value(json_object_get(j->labels, "io.dagd.task"));
    const char *tr = json_string_value(json_object_get(j->labels, "io.dagd.try"));
    return task && tr && !strcmp(task, tk->id) && atoi(tr) == try_number;
}

/* A started job of a try that is over: its instance finished (or moved to a later try),
 * and the task's `remove` policy removes it (docs/architecture.md, "Crash recovery"). */
static bool finished_job_to_remove(const dg_run *run, const dg_job_info *j) {
    const char *task = json_string_value(json_object_get(j->labels, "io.dagd.task"));
    const char *tr = json_string_value(json_object_get(j->labels, "io.dagd.try"));
    if (!task || !tr) return false;
    for (size_t i = 0; i < run->dag->n_tasks; i++) {
        const dg_task *tk = &run->dag->tasks[i];
        if (strcmp(tk->id, task) != 0) continue;
        const dg_ti *ti = &run->ti[i];
        int try_number = atoi(tr);
        bool over = try_number < ti->try_number || (try_number == ti->try_number && dg_ti_state_finished(ti->state));
        if (!over) return false;
        bool success = try_number == ti->try_number && ti->state == DG_TI_SUCCESS;
        return tk->remove == DG_REMOVE_ALWAYS || (tk->remove == DG_REMOVE_ON_SUCCESS && success);
    }
    return false;
}

/* The image an adopted try runs, as recorded when its job was made, for its log header. */
static void recall_image(dg_exec *x, exec_try *t) {
    const dg_run *run = t->er->run;
    dg_ti_rec *r = NULL;
    if (!x->store || dg_store_get_ti(x->store, run->dag->dag_id, run->run_id, run->dag->tasks[t->task].id, &r) < 0)
        return;
    if (r->try_number == t->try_number && r->image_id) {
        if (!t->image) t->image = xstrdup(r->image);
        t->image_id = xstrdup(r->image_id);
        t->image_digest = xstrdup(r->image_digest);
    }
    dg_ti_rec_free(r);
}

static void recover_try(dg_exec *x, dg_run *run, size_t i, const dg_job_info *found) {
    exec_run *er = run->userdata;
    dg_ti *ti = &run->ti[i];
    const dg_task *tk = &run->dag->tasks[i];
    if (tk->kind == DG_KIND_SENSOR) {
        /* a check changes nothing: it checks again, same try (a probe container of the
         * last check is not followed: it goes) */
        if (found) dg_backend_remove(x->backend, found->id);
        handle_start(x, run, i, ti->try_number);
        return;
    }
    exec_try *t = try_new(er, i, ti->try_number);
    er->cur[i] = t;
    t->start_requested = true;
    dg__exec_try_secrets(t);
    dg_log_ctx lc = try_ctx(t);
    if (found && found->started) {
        /* it ran: follow it to its exit, its output again from the first line */
        dg_log(DG_LOG_NOTICE, &lc, "re-adopting container %s", found->name);
        t->name = xstrdup(found->name);
        t->job_id = xstrdup(found->id);
        t->created = t->started = true;
        if (ti->state == DG_TI_QUEUED) dg_sched_on_started(x->sched, run, i, ti->try_number, now_ms());
        recall_image(x, t);
        dg__exec_open_log(t, true);
        t->job = dg_job_adopt(x->backend, found, &job_events, try_ref(t));
    } else if (found) {
        /* listed as only created: start it now, the same try; the backend starts it only
         * if it still never ran (see docs/architecture.md, "Crash recovery") */
        dg_log(DG_LOG_NOTICE, &lc, "starting container %s, created before dagd stopped", found->name);
        t->name = xstrdup(found->name);
        t->job_id = xstrdup(found->id);
        t->created = true;
        t->start_cmd_ms = now_ms();
        t->job = dg_job_adopt(x->backend, found, &job_events, try_ref(t));
        start_job(t);
    } else if (ti->state == DG_TI_QUEUED && tk->kind == DG_KIND_CONTAINER) {
        /* no container was made (or its create never reached the engine): make it */
        dg_log(DG_LOG_NOTICE, &lc, "creating the try's container, which dagd had not made before it stopped");
        t->start_cmd_ms = now_ms();
        create_job(t);
    } else if (tk->kind == DG_KIND_NOTIFY) {
        /* whether it was delivered is unknown: it is not sent twice unasked */
        dg_log(DG_LOG_WARNING, &lc, "dagd stopped while the notification was being sent");
        dg__exec_try_fail(t, "dagd stopped while the notification was being sent");
    } else {
        dg_log(DG_LOG_WARNING, &lc, "the try's container is gone; the try counts as failed");
        dg__exec_try_fail(t, "the container vanished while dagd was down");
    }
}

static void recover_list_cb(void *ud, dg_job_info *jobs, size_t n, const dg_error *err) {
    recover_req *q = ud;
    dg_exec *x = q->x;
    dg_run *run = q->run;
    if (err) {
        dg_log_ctx lc = {.dag = run->dag->dag_id, .run = run->run_id};
        dg_log(DG_LOG_ERR, &lc, "cannot list the run's containers: %s", err->msg);
    } else if (!x->closing) {
        const dg_dag *dag = run->dag;
        bool *used = xcalloc(n + 1, sizeof *used);
        for (size_t i = 0; i < dag->n_tasks; i++) {
            dg_ti *ti = &run->ti[i];
            if (ti->state != DG_TI_QUEUED && ti->state != DG_TI_RUNNING) continue;
            const dg_job_info *found = NULL;
            for (size_t k = 0; k < n; k++)
                if (job_is(&jobs[k], &dag->tasks[i], ti->try_number)) {
                    /* two jobs for one try come only from a create still in flight when
                     * the previous dagd listed; prefer the started one, else always the
                     * same one, so that no two generations start different ones */
                    if (!found || (jobs[k].started && !found->started) ||
                        (jobs[k].started == found->started && strcmp(jobs[k].id, found->id) < 0))
                        found = &jobs[k];
                }
            if (found) used[found - jobs] = true;
            recover_try(x, run, i, found);
        }
        /* jobs made ahead of their start (or for tries that are over): nobody uses them;
         * and a job whose try ended and was recorded, but whose removal the previous
         * dagd did not live to make, goes as its removal policy says */
        for (size_t k = 0; k < n; k++) {
            if (used[k]) continue;
            if (!jobs[k].started || finished_job_to_remove(run, &jobs[k])) dg_backend_remove(x->backend, jobs[k].id);
        }
        free(used);
    }
    q->done(q->ud);
    free(q);
}

void dg_exec_recover_run(dg_exec *x, dg_run *run, void (*done)(void *ud), void *ud) {
    recover_req *q = xcalloc(1, sizeof *q);
    q->x = x;
    q->run = run;
    q->done = done;
    q->ud = ud;
    _cleanup_free_ char *l_inst = xasprintf("io.dagd.instance=%s", x->instance);
    _cleanup_free_ char *l_dag = xasprintf("io.dagd.dag=%s", run->dag->dag_id);
    _cleanup_free_ char *l_run = xasprintf("io.dagd.run=%s", run->run_id);
    const char *labels[] = {l_inst, l_dag, l_run, NULL};
    dg_backend_list(x->backend, labels, recover_list_cb, q);
}

bool dg_exec_forget_run(dg_exec *x, dg_run *run) {
    exec_run *er = run->userdata;
    if (run->state != DG_RUN_SUCCESS && run->state != DG_RUN_FAILED) return false;
    if (er) {
        if (er->in_batch) batch_flush(x); /* its last records on disk, and the batch's reference gone */
        if (er->refs > 1) return false; /* a try of it is still in flight (a removal) */
        if (run_unsaved(er)) return false; /* the store does not have it all yet */
        run->userdata = NULL;
        run_unref(er);
    }
    dg_sched_remove_run(x->sched, run);
    return true;
}

/* ---- the end ---- */

static void exec_release(dg_exec *x) {
    dg_strv_free(x->allowed_volume_prefixes);
    dg_strv_free(x->allowed_sensitive_paths);
    dg_strv_free(x->protected_paths);
    json_decref(x->conn_uris);
    json_decref(x->conns);
    free(x->smtp_url);
    free(x->smtp_from);
    free(x->smtp_user);
    free(x->smtp_password);
    free(x->state_dir);
    free(x->instance);
    free(x->store_err);
    dg_try_recs_free(x->unsaved_tries, x->n_unsaved_tries);
    batch_end(x, false); /* empty: flushed when the executor was freed */
    free(x->batch_runs);
    free(x->batch_tries);
    free(x);
}

static void exec_free_cb(uv_handle_t *h) {
    dg_exec *x = h->data;
    if (h == (uv_handle_t *)&x->wake) x->wake_closed = true;
    else if (h == (uv_handle_t *)&x->flush) x->flush_closed = true;
    else x->retry_closed = true;
    if (x->outstanding == 0 && x->wake_closed && x->retry_closed && x->flush_closed) exec_release(x);
}

void dg_exec_free(dg_exec *x) {
    if (!x) return;
    batch_flush(x);
    x->closing = true;
    /* tries still alive are abandoned: their jobs are let go (not removed: a restarted
     * dagd re-adopts them) and the executor's references dropped; calls in flight release
     * the rest as the backend cancels them */
    for (exec_try *t = x->tries, *n; t; t = n) {
        try_ref(t);
        /* a sensor's probe container is never taken over: it goes */
        try_drop_job(t, t->er->run->dag->tasks[t->task].kind == DG_KIND_SENSOR);
        n = t->next;
        try_unref(t);
    }
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next) {
        exec_run *er = r->userdata;
        if (!er) continue;
        for (size_t i = 0; i < r->dag->n_tasks; i++) {
            if (er->prepared[i]) try_release(er->prepared[i]);
            if (er->cur[i]) try_release(er->cur[i]);
        }
        r->userdata = NULL;
        run_unref(er);
    }
    x->hooks.idle = NULL;
    if (x->store_err) {
        dg_log(DG_LOG_WARNING, NULL, "stopping while state writes fail (%s): what was not written is lost; "
               "the containers of unrecorded tries are kept for the next start", x->store_err);
    }
    uv_close((uv_handle_t *)&x->wake, exec_free_cb);
    uv_close((uv_handle_t *)&x->retry, exec_free_cb);
    uv_close((uv_handle_t *)&x->flush, exec_free_cb);
}
