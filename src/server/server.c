/* server — `dagd serve` (see include/dagd/server.h): the DAG bag and its folder watch,
 * the schedule clock, crash recovery and the daemon's lifecycle. The API's views and
 * verbs are in views.c.
 *
 * Ownership: the server owns its config copy, the store, the docker client, the
 * scheduler, the executor, the API and every dag_entry. A DAG version replaced by a
 * reload or removed with its file is "retired" while runs still point at it and freed
 * once none does. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/log.h"
#include "server_internal.h"

#define SWEEP_MS 5000
#define MAX_CLOCK_MS 60000
#define DEBOUNCE_MS 300
#define CONNECT_RETRY_MIN_MS 1000
#define CONNECT_RETRY_MAX_MS 30000
#define RECOVERY_SETTLE_MS 1000

static void schedule_clock(dg_server *s);
static void watch_cb(uv_fs_event_t *h, const char *name, int events, int status);
static void watch_folder(dg_server *s);

static dg_log_ctx run_ctx(const dg_run *run) {
    return (dg_log_ctx){.dag = run->dag->dag_id, .run = run->run_id};
}

/* ---- DAG versions ---- */

static bool dag_in_use(dg_server *s, const dg_dag *dag) {
    for (dg_run *r = dg_sched_runs(s->sched); r; r = r->next)
        if (r->dag == dag) return true;
    return false;
}

static void retire(dg_server *s, dg_dag *dag) {
    if (!dag) return;
    if (!s->sched || !dag_in_use(s, dag)) {
        dg_dag_free(dag);
        return;
    }
    s->retired = xrealloc(s->retired, (s->n_retired + 1) * sizeof *s->retired);
    s->retired[s->n_retired++] = dag;
}

static void free_unused_retired(dg_server *s) {
    for (size_t i = 0; i < s->n_retired;) {
        if (dag_in_use(s, s->retired[i])) {
            i++;
            continue;
        }
        dg_dag_free(s->retired[i]);
        s->retired[i] = s->retired[--s->n_retired];
    }
}

dag_entry *dg__server_find(dg_server *s, const char *dag_id) {
    for (dag_entry *e = s->dags; e; e = e->next_entry)
        if (!strcmp(e->dag_id, dag_id)) return e;
    return NULL;
}

static void entry_free(dg_server *s, dag_entry *e) {
    retire(s, e->dag);
    if (e->has_schedule) dg_schedule_done(&e->schedule);
    free(e->dag_id);
    free(e->file);
    free(e);
}

static void errors_clear(dg_server *s) {
    for (size_t i = 0; i < s->n_errors; i++) {
        free(s->errors[i].file);
        free(s->errors[i].msg);
        free(s->errors[i].dag_id);
    }
    free(s->errors);
    s->errors = NULL;
    s->n_errors = 0;
}

static void add_error(dg_server *s, const char *file, int line, int col, const char *msg, const char *dag_id) {
    s->errors = xrealloc(s->errors, (s->n_errors + 1) * sizeof *s->errors);
    s->errors[s->n_errors++] = (import_error){xstrdup(file), line, col, xstrdup(msg), dag_id ? xstrdup(dag_id) : NULL};
}

size_t dg__server_error_files(const dg_server *s) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_errors; i++) {
        size_t k = 0;
        while (k < i && strcmp(s->errors[k].file, s->errors[i].file) != 0) k++;
        n += k == i;
    }
    return n;
}

/* The interval the schedule clock creates next for e, from what the store remembers. */
static void compute_next(dg_server *s, dag_entry *e) {
    e->have_next = false;
    if (!e->has_schedule || !e->dag) return;
    const dg_dag *d = e->dag;
    dg_interval iv;
    if (dg_schedule_next_interval(&e->schedule, d->start_date_ms, d->has_end_date ? d->end_date_ms : 0,
                                  e->have_last ? &e->last : NULL, &iv) < 0)
        return;
    e->next = iv;
    e->have_next = true;
}

static void load_last(dg_server *s, dag_entry *e) {
    dg_run_rec *last = NULL;
    e->have_last = false;
    if (dg_store_last_run(s->store, e->dag_id, "scheduled", &last) == 0) {
        e->have_last = true;
        e->last.start_ms = last->interval_start_ms ? last->interval_start_ms : last->logical_ms;
        e->last.end_ms = last->interval_end_ms ? last->interval_end_ms : last->logical_ms;
        dg_run_rec_free(last);
    }
}

/* Load every *.yml / *.yaml of the folder. A broken file becomes an import error and
 * never stops the others; runs in flight keep the version they started with. */
static void scan_folder(dg_server *s) {
    const char *dir = s->cfg.dags_folder;
    errors_clear(s);
    char **files = NULL;
    size_t n = 0;
    int sr = dg_dags_scan(dir, &files, &n);
    if (sr < 0) {
        _cleanup_free_ char *m = xasprintf("cannot read the DAGs folder: %s", strerror(-sr));
        add_error(s, dir, 0, 0, m, NULL);
        dg_log(DG_LOG_ERR, NULL, "%s: %s", dir, m);
    }

    dag_entry *fresh = NULL, **tail = &fresh;
    for (size_t i = 0; i < n; i++) {
        dg_diags d = {0};
        dg_dag *dag = NULL;
        if (dg_dags_load(&s->cfg, files[i], &dag, &d) < 0) {
            _cleanup_free_ char *id = dg_dags_declared_id(files[i]);
            for (size_t k = 0; k < d.n; k++) add_error(s, d.v[k].file, d.v[k].line, d.v[k].col, d.v[k].msg, id);
            if (!d.n) add_error(s, files[i], 0, 0, "cannot load the file", id);
            dg_log(DG_LOG_WARNING, NULL, "%s: not loaded (%zu error%s)", files[i], d.n, d.n == 1 ? "" : "s");
            dg_diags_free(&d);
            continue;
        }
        dg_diags_free(&d);
        bool dup = false;
        for (dag_entry *f = fresh; f; f = f->next_entry)
            if (!strcmp(f->dag_id, dag->dag_id)) {
                _cleanup_free_ char *m = xasprintf("DAG id '%s' is already defined in %s", dag->dag_id, f->file);
                add_error(s, files[i], 1, 1, m, NULL);
                dup = true;
            }
        if (dup) {
            dg_dag_free(dag);
            continue;
        }
        dag_entry *e = xcalloc(1, sizeof *e);
        e->dag_id = xstrdup(dag->dag_id);
        e->file = xstrdup(files[i]);
        e->dag = dag;
        dg_error err = {0};
        if (dag->schedule) {
            if (dg_schedule_init(&e->schedule, dag->schedule, dag->timezone, &err) == 0) e->has_schedule = true;
            else {
                add_error(s, files[i], 1, 1, err.msg ? err.msg : "bad schedule", NULL);
                dg_error_clear(&err);
            }
        }
        bool paused;
        if (dg_store_get_dag(s->store, e->dag_id, &paused) == 0) e->paused = paused;
        else {
            e->paused = dag->paused; /* `paused:` is the state when first seen */
            dg_server_flush(s); /* a write of its own, not joining the executor's */
            if (dg_store_put_dag(s->store, e->dag_id, e->paused, e->file, dg_now_ms()) < 0) {
                dg_log_ctx lc = {.dag = e->dag_id};
                dg_log(DG_LOG_ERR, &lc, "saving the DAG's paused state failed: %s", dg_store_errmsg(s->store));
            }
        }
        load_last(s, e);
        compute_next(s, e);
        *tail = e;
        tail = &e->next_entry;
        s->n_dags++;
    }
    dg_strv_free(files);
    /* swap the bag: old entries' DAG versions retire */
    dag_entry *old = s->dags;
    s->dags = fresh;
    size_t count = 0;
    for (dag_entry *e = fresh; e; e = e->next_entry) count++;
    s->n_dags = count;
    while (old) {
        dag_entry *next = old->next_entry;
        entry_free(s, old);
        old = next;
    }
    size_t bad = dg__server_error_files(s);
    dg_log(DG_LOG_INFO, NULL, "loaded %zu DAG%s from %s (%zu file%s with import errors)", s->n_dags,
           s->n_dags == 1 ? "" : "s", dir, bad, bad == 1 ? "" : "s");
}

static void debounce_cb(uv_timer_t *h) {
    dg_server *s = h->data;
    if (s->stopping) return;
    scan_folder(s);
    schedule_clock(s);
}

static void unwatch(dg_server *s, bool again);

/* The folder itself removed or replaced (rm -r, mv, a checkout) ends its watch: the bag is
 * rescanned now, and the sweep watches the folder again once it is back. */
static void watch_cb(uv_fs_event_t *h, const char *name, int events, int status) {
    dg_server *s = h->data;
    if (s->stopping) return;
    struct stat st;
    if (status < 0 || stat(s->cfg.dags_folder, &st) < 0 || st.st_ino != s->watch_ino)
        unwatch(s, false);
    uv_timer_start(&s->debounce, debounce_cb, DEBOUNCE_MS, 0);
}

/* ---- runs ---- */

dg_run *dg__server_find_run(dg_server *s, const char *dag_id, const char *run_id) {
    for (dg_run *r = dg_sched_runs(s->sched); r; r = r->next)
        if (!strcmp(r->dag->dag_id, dag_id) && !strcmp(r->run_id, run_id)) return r;
    return NULL;
}

dg_run *dg__server_add_run(dg_server *s, dag_entry *e, const char *run_id, const char *run_type, int64_t logical_ms,
                           const dg_interval *iv, const json_t *conf) {
    dg_interval manual;
    if (!iv) {
        dg_schedule_manual_interval(e->has_schedule ? &e->schedule : NULL, logical_ms, &manual);
        iv = &manual;
    }
    dg_run *run = dg_exec_add_run(s->exec, e->dag, run_id, run_type, logical_ms, iv->start_ms, iv->end_ms, conf);
    dg_exec_persist_new_tis(s->exec, run);
    dg_log_ctx c = run_ctx(run);
    dg_log(DG_LOG_INFO, &c, "run created (%s)", run_type);
    dg_exec_pump(s->exec);
    return run;
}

static int active_runs(dg_server *s, const char *dag_id) {
    int n = 0;
    for (dg_run *r = dg_sched_runs(s->sched); r; r = r->next)
        if (!strcmp(r->dag->dag_id, dag_id) && (r->state == DG_RUN_QUEUED || r->state == DG_RUN_RUNNING)) n++;
    return n;
}

/* Restore a run from the store into the scheduler with its task states (no adoption). */
static dg_run *restore_run(dg_server *s, dag_entry *e, const dg_run_rec *rr, dg_ti_rec **tis, size_t n_tis) {
    json_t *conf = rr->conf_json ? json_loads(rr->conf_json, 0, NULL) : NULL;
    dg_run *run = dg_exec_add_run(s->exec, e->dag, rr->run_id, rr->run_type ? rr->run_type : "manual",
                                  rr->logical_ms, rr->interval_start_ms, rr->interval_end_ms, conf);
    json_decref(conf);
    int st = dg_run_state_from_name(rr->state ? rr->state : "queued");
    dg_sched_restore_run(s->sched, run, st < 0 ? DG_RUN_QUEUED : (dg_run_state)st, rr->start_ms, rr->end_ms);
    int64_t now = dg_now_ms();
    for (size_t k = 0; k < n_tis; k++) {
        ssize_t i = dg_dag_task_index(e->dag, tis[k]->task_id);
        if (i < 0) continue; /* the task is gone from the file */
        int ts = dg_ti_state_from_name(tis[k]->state ? tis[k]->state : "none");
        dg_ti_restore r = {
            .state = ts < 0 ? DG_TI_NONE : (dg_ti_state)ts,
            .try_number = tis[k]->try_number,
            .max_tries = tis[k]->max_tries,
            .start_ms = tis[k]->start_ms,
            .end_ms = tis[k]->end_ms,
            .has_exit_code = tis[k]->has_exit_code,
            .exit_code = tis[k]->exit_code,
            .message = tis[k]->message,
        };
        dg_sched_restore_ti(s->sched, run, (size_t)i, &r, now);
        if (tis[k]->output) dg_exec_set_output(s->exec, run, (size_t)i, tis[k]->output);
    }
    dg_exec_persist_run(s->exec, run);
    return run;
}

/* The run of rr in memory, or brought back from the store with its task states. */
static dg_run *memory_run(dg_server *s, dag_entry *e, const dg_run_rec *rr) {
    dg_run *run = dg__server_find_run(s, rr->dag_id, rr->run_id);
    if (run) return run;
    dg_ti_rec **tis = NULL;
    size_t n = 0;
    if (dg_store_list_tis(s->store, rr->dag_id, rr->run_id, &tis, &n) < 0) {
        dg_log_ctx lc = {.dag = rr->dag_id, .run = rr->run_id};
        dg_log(DG_LOG_ERR, &lc, "cannot read the run's tasks: %s", dg_store_errmsg(s->store));
    }
    run = restore_run(s, e, rr, tis, n);
    dg_ti_recs_free(tis, n);
    return run;
}

int dg__server_load_run(dg_server *s, dag_entry *e, const char *run_id, dg_run **ret, dg_error *err) {
    dg_run *run = dg__server_find_run(s, e->dag_id, run_id);
    if (run) {
        *ret = run;
        return 0;
    }
    dg_run_rec *rr = NULL;
    if (dg_store_get_run(s->store, e->dag_id, run_id, &rr) < 0)
        return dg_error_set(err, -ENOENT, "DAG '%s' has no run '%s'", e->dag_id, run_id);
    *ret = memory_run(s, e, rr);
    dg_run_rec_free(rr);
    return 0;
}

/* ---- the schedule clock ---- */

bool dg__server_upcoming(const dag_entry *e, int64_t now, dg_interval *ret) {
    if (!e->have_next) return false;
    const dg_dag *d = e->dag;
    dg_interval iv = e->next;
    if (!d->catchup && iv.end_ms <= now) {
        /* without catchup only the newest due interval gets a run: the one that ends
         * where the interval containing `now` begins */
        int64_t end_date = d->has_end_date ? d->end_date_ms : 0;
        dg_interval cur, newest;
        if (dg_schedule_interval_after(&e->schedule, d->start_date_ms, end_date, now, &cur) == 0 &&
            cur.start_ms > iv.start_ms &&
            dg_schedule_interval_after(&e->schedule, d->start_date_ms, end_date, cur.start_ms - 1, &newest) == 0 &&
            newest.end_ms <= now && newest.start_ms >= iv.start_ms)
            iv = newest;
    }
    *ret = iv;
    return true;
}

/* A due interval whose logical date already has a run (a trigger or a backfill made it)
 * gets no second one: one logical date, one run. */
static void create_due_runs(dg_server *s, dag_entry *e, int64_t now) {
    const dg_dag *d = e->dag;
    dg_interval iv;
    /* no run is made that could not be recorded: the store_ok hook looks again */
    while (!dg_exec_store_error(s->exec) && dg__server_upcoming(e, now, &iv) && iv.end_ms <= now) {
        if (active_runs(s, e->dag_id) >= (d->max_active_runs > 0 ? d->max_active_runs : 16)) return;
        dg_run_rec *existing = NULL;
        if (dg_store_run_at(s->store, e->dag_id, iv.start_ms, &existing) == 0) {
            dg_run_rec_free(existing);
        } else {
            _cleanup_free_ char *ts = dg_format_time(iv.start_ms, false);
            _cleanup_free_ char *run_id = xasprintf("scheduled__%s", ts);
            dg__server_add_run(s, e, run_id, "scheduled", iv.start_ms, &iv, NULL);
        }
        e->last = iv;
        e->have_last = true;
        compute_next(s, e);
    }
}

static void clock_cb(uv_timer_t *h) { schedule_clock(h->data); }

static void schedule_clock(dg_server *s) {
    if (s->stopping || s->recovering) return;
    int64_t now = dg_now_ms();
    int64_t wake = now + MAX_CLOCK_MS;
    for (dag_entry *e = s->dags; e; e = e->next_entry) {
        if (!e->has_schedule || e->paused) continue;
        create_due_runs(s, e, now);
        if (e->have_next && e->next.end_ms > now && e->next.end_ms < wake) wake = e->next.end_ms;
    }
    uv_timer_start(&s->clock, clock_cb, (uint64_t)(wake - now), 0);
}

void dg__server_kick(dg_server *s) {
    if (!s->stopping) uv_timer_start(&s->clock, clock_cb, 0, 0);
}

/* Finished runs leave memory (the store has them); unused old DAG versions go too;
 * a finished run may free a max_active_runs slot, so the clock looks again. */
static void sweep_cb(uv_timer_t *h) {
    dg_server *s = h->data;
    bool freed = false;
    if (!s->watching && !s->watch_closing) {
        /* the folder came back (or appeared): watch it and load what it holds */
        watch_folder(s);
        if (s->watching) uv_timer_start(&s->debounce, debounce_cb, 0, 0);
    }
    for (dg_run *r = dg_sched_runs(s->sched), *n; r; r = n) {
        n = r->next;
        if (r->state == DG_RUN_SUCCESS || r->state == DG_RUN_FAILED) freed |= dg_exec_forget_run(s->exec, r);
    }
    free_unused_retired(s);
    if (freed) schedule_clock(s);
    int runs = 0, tasks = dg_sched_running(s->sched);
    for (dg_run *r = dg_sched_runs(s->sched); r; r = r->next) runs += r->state == DG_RUN_RUNNING;
    const char *why = dg_exec_store_error(s->exec);
    if (why) {
        dg_notify_status("degraded: %s", why);
        return;
    }
    dg_notify_status("%d run%s running, %d task%s in flight, %zu DAG%s", runs, runs == 1 ? "" : "s", tasks,
                     tasks == 1 ? "" : "s", s->n_dags, s->n_dags == 1 ? "" : "s");
}

static void watchdog_cb(uv_timer_t *h) { dg_notify_watchdog(); }

/* ---- crash recovery ---- */

static void recovery_step_done(void *ud) {
    dg_server *s = ud;
    if (--s->pending_recovery > 0) return;
    s->recovering = false;
    dg_log(DG_LOG_INFO, NULL, "recovery done; scheduling");
    dg_exec_hold(s->exec, false);
    schedule_clock(s);
    if (!s->ready) {
        s->ready = true;
        dg_notify_ready();
    }
}

/* Every run the store has as queued or running comes back with its task states; the
 * executor then settles each try in flight with the backend before anything new starts. */
static void recover(dg_server *s) {
    dg_run_rec **runs = NULL;
    size_t n = 0;
    s->recovering = true;
    s->pending_recovery = 1; /* this function's own step */
    if (dg_store_unfinished_runs(s->store, &runs, &n) < 0) {
        dg_log(DG_LOG_ERR, NULL, "cannot read unfinished runs: %s", dg_store_errmsg(s->store));
        n = 0;
    }
    for (size_t k = 0; k < n; k++) {
        dg_run_rec *rr = runs[k];
        dag_entry *e = dg__server_find(s, rr->dag_id);
        if (!e) {
            /* nothing left to run it with: it ends failed, and says why */
            rr->state = "failed";
            rr->end_ms = dg_now_ms();
            dg_log_ctx lc = {.dag = rr->dag_id, .run = rr->run_id};
            dg_server_flush(s);
            if (dg_store_put_run(s->store, rr) < 0)
                dg_log(DG_LOG_ERR, &lc, "saving the run failed: %s", dg_store_errmsg(s->store));
            rr->state = NULL;
            dg_log(DG_LOG_WARNING, &lc, "run failed at start: its DAG is no longer in the DAGs folder");
            continue;
        }
        /* a run already in memory (triggered, or loaded for a clear, while the engine was
         * out of reach) is settled, not restored a second time */
        dg_run *run = memory_run(s, e, rr);
        dg_log_ctx lc = run_ctx(run);
        dg_log(DG_LOG_NOTICE, &lc, "recovering run (%s)", dg_run_state_name(run->state));
        s->pending_recovery++;
        dg_exec_recover_run(s->exec, run, recovery_step_done, s);
    }
    dg_run_recs_free(runs, n);
    recovery_step_done(s);
}

static void connected_cb(void *ud, const dg_error *err);

static bool has_unfinished_runs(dg_server *s) {
    dg_run_rec **runs = NULL;
    size_t n = 0;
    if (dg_store_unfinished_runs(s->store, &runs, &n) < 0) return false; /* recover() says why */
    dg_run_recs_free(runs, n);
    return n > 0;
}

static void settle_cb(uv_timer_t *h) {
    dg_server *s = h->data;
    if (!s->stopping) recover(s);
}

static void reconnect_cb(uv_timer_t *h) {
    dg_server *s = h->data;
    if (!s->stopping) dg_exec_connect(s->exec, connected_cb, s);
}

/* Until the engine answers, nothing is scheduled (runs wait, queued) and the API answers;
 * the server keeps trying, every few seconds. */
static void connected_cb(void *ud, const dg_error *err) {
    dg_server *s = ud;
    if (err) {
        if (s->stopping) return;
        int64_t delay = s->connect_delay_ms ? s->connect_delay_ms : CONNECT_RETRY_MIN_MS;
        dg_log(DG_LOG_ERR, NULL, "%s (trying again in %lld s)", err->msg ? err->msg : "cannot reach the Docker engine",
               (long long)(delay / 1000));
        uv_timer_start(&s->reconnect, reconnect_cb, (uint64_t)delay, 0);
        s->connect_delay_ms = delay * 2 > CONNECT_RETRY_MAX_MS ? CONNECT_RETRY_MAX_MS : delay * 2;
        return;
    }
    dg_log(DG_LOG_INFO, NULL, "connected to the %s", dg_backend_describe(s->rt->backend));
    if (has_unfinished_runs(s)) {
        /* a create or a start the previous dagd sent just before it died may still be on
         * its way through the engine: let it land before the runs' jobs are listed (see
         * docs/architecture.md, "Crash recovery"); the reconnect timer is idle now */
        uv_timer_start(&s->reconnect, settle_cb, RECOVERY_SETTLE_MS, 0);
        return;
    }
    recover(s);
}

/* ---- the daemon's log of what runs do ---- */

static void on_ti_changed(void *ud, dg_run *run, size_t task) {
    const dg_ti *ti = &run->ti[task];
    dg_log_ctx c = {.dag = run->dag->dag_id, .run = run->run_id, .task = run->dag->tasks[task].id,
                    .try_number = ti->try_number};
    dg_log_level lvl = ti->state == DG_TI_FAILED || ti->state == DG_TI_UPSTREAM_FAILED ? DG_LOG_WARNING : DG_LOG_INFO;
    if (ti->has_exit_code && dg_ti_state_finished(ti->state))
        dg_log(lvl, &c, "task %s (exit %d)%s%s", dg_ti_state_name(ti->state), ti->exit_code, ti->message ? ": " : "",
               ti->message ? ti->message : "");
    else
        dg_log(lvl, &c, "task %s%s%s", dg_ti_state_name(ti->state), ti->message ? ": " : "",
               ti->message ? ti->message : "");
}

static void on_run_changed(void *ud, dg_run *run) {
    dg_log_ctx c = run_ctx(run);
    dg_log(run->state == DG_RUN_FAILED ? DG_LOG_WARNING : DG_LOG_INFO, &c, "run %s", dg_run_state_name(run->state));
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) dg__server_kick(ud);
}

/* State writes work again: intervals that came due meanwhile get their runs. */
static void on_store_ok(void *ud) { dg__server_kick(ud); }

/* ---- lifecycle ---- */

int dg_server_new(uv_loop_t *loop, const dg_config *cfg, dg_server **ret, dg_error *err) {
    dg_server *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    dg_config_copy(&s->cfg, cfg);
    /* the instance label is how recovery finds this server's containers: it must survive
     * restarts */
    _cleanup_free_ char *path = xasprintf("%s/instance", s->cfg.state_dir);
    int r = dg_mkdir_p(s->cfg.state_dir, 0700);
    if (r < 0) {
        r = dg_error_set(err, r, "state_dir %s: %s", s->cfg.state_dir, strerror(-r));
        goto fail;
    }
    if ((r = dg_state_value(path, 8, 0644, &s->instance, err)) < 0) goto fail;
    dg_runtime_opts ro = {
        .keep_state = true,
        .instance = s->instance,
        .hooks = {.ti_changed = on_ti_changed, .run_changed = on_run_changed, .store_ok = on_store_ok, .ud = s},
    };
    if ((r = dg_runtime_new(loop, &s->cfg, &ro, &s->rt, err)) < 0) goto fail;
    s->store = s->rt->store;
    s->sched = s->rt->sched;
    s->exec = s->rt->exec;
    uv_timer_init(loop, &s->debounce);
    uv_timer_init(loop, &s->clock);
    uv_timer_init(loop, &s->sweep);
    uv_timer_init(loop, &s->watchdog);
    uv_timer_init(loop, &s->reconnect);
    s->debounce.data = s->clock.data = s->sweep.data = s->watchdog.data = s->reconnect.data = s;
    s->handles_open = true;
    *ret = s;
    return 0;
fail:
    dg_server_free(s);
    return r;
}

int dg_server_start(dg_server *s, dg_error *err) {
    s->started = true;
    scan_folder(s);
    watch_folder(s);
    uv_timer_start(&s->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    int64_t wd = dg_notify_watchdog_interval_ms();
    if (wd > 0) uv_timer_start(&s->watchdog, watchdog_cb, (uint64_t)wd, (uint64_t)wd);
    dg_exec_hold(s->exec, true);
    s->recovering = true; /* no run is created before recovery has settled the old ones */
    dg_exec_connect(s->exec, connected_cb, s);
    return 0;
}

static void watch_closed(uv_handle_t *h) {
    dg_server *s = h->data;
    s->watch_closing = false;
    if (s->rewatch && !s->stopping) watch_folder(s);
}

/* again: watch it anew once the old watch is closed (SIGHUP, a new folder). */
static void unwatch(dg_server *s, bool again) {
    s->rewatch = again;
    if (!s->watching) {
        if (again && !s->watch_closing) watch_folder(s);
        return;
    }
    s->watching = false;
    s->watch_closing = true;
    uv_close((uv_handle_t *)&s->watch, watch_closed);
}

static void watch_folder(dg_server *s) {
    if (s->watching || s->watch_closing || s->stopping) return;
    struct stat st;
    if (stat(s->cfg.dags_folder, &st) < 0) {
        if (!s->watch_warned)
            dg_log(DG_LOG_WARNING, NULL, "cannot watch %s: %s (watched again once it exists)", s->cfg.dags_folder,
                   strerror(errno));
        s->watch_warned = true;
        return;
    }
    if (uv_fs_event_init(s->loop, &s->watch) != 0) return;
    s->watch.data = s;
    int r = uv_fs_event_start(&s->watch, watch_cb, s->cfg.dags_folder, 0);
    if (r < 0) {
        if (!s->watch_warned)
            dg_log(DG_LOG_WARNING, NULL, "cannot watch %s: %s (changes need SIGHUP)", s->cfg.dags_folder,
                   uv_strerror(r));
        s->watch_warned = true;
        s->watch_closing = true;
        s->rewatch = false;
        uv_close((uv_handle_t *)&s->watch, watch_closed);
        return;
    }
    s->watch_ino = st.st_ino;
    s->watch_warned = false;
    s->watching = true;
}

void dg_server_reload(dg_server *s, const dg_config *cfg) {
    if (s->stopping) return;
    dg_notify_reloading();
    if (cfg) {
        if (strcmp(cfg->listen, s->cfg.listen) || strcmp(cfg->state_dir, s->cfg.state_dir) ||
            strcmp(cfg->container_log_max_size, s->cfg.container_log_max_size))
            dg_log(DG_LOG_WARNING, NULL,
                   "listen, state_dir and container_log_max_size changes take effect at the next start");
        free(s->cfg.dags_folder);
        s->cfg.dags_folder = xstrdup(cfg->dags_folder);
        s->cfg.parallelism = cfg->parallelism;
        dg_config_set_pools(&s->cfg, cfg->pools, cfg->n_pools);
        dg_runtime_set_limits(s->rt, cfg);
        if (cfg->log && dg_log_setup(cfg->log) == 0) {
            free(s->cfg.log);
            s->cfg.log = xstrdup(cfg->log);
        }
    }
    unwatch(s, true); /* SIGHUP watches the folder anew, whatever became of it */
    scan_folder(s);
    schedule_clock(s);
    dg_exec_pump(s->exec);
    dg_notify_ready();
}

void dg_server_stop(dg_server *s) {
    if (s->stopping) return;
    s->stopping = true;
    dg_notify_stopping();
    /* a start that failed before the server started has no containers to speak of */
    if (s->started)
        dg_log(DG_LOG_NOTICE, NULL, "stopping: running containers keep running and are re-adopted at next start");
    unwatch(s, false);
    if (s->handles_open) {
        uv_close((uv_handle_t *)&s->debounce, NULL);
        uv_close((uv_handle_t *)&s->clock, NULL);
        uv_close((uv_handle_t *)&s->sweep, NULL);
        uv_close((uv_handle_t *)&s->watchdog, NULL);
        uv_close((uv_handle_t *)&s->reconnect, NULL);
        s->handles_open = false;
    }
    dg_runtime_close(s->rt);
    s->exec = NULL;
}

/* After dg_server_stop and the loop has run dry. */
void dg_server_free(dg_server *s) {
    if (!s) return;
    /* the scheduler's runs point into the DAGs below: the runtime goes first */
    dg_runtime_free(s->rt);
    s->rt = NULL;
    s->sched = NULL;
    while (s->dags) {
        dag_entry *n = s->dags->next_entry;
        if (s->dags->has_schedule) dg_schedule_done(&s->dags->schedule);
        dg_dag_free(s->dags->dag);
        free(s->dags->dag_id);
        free(s->dags->file);
        free(s->dags);
        s->dags = n;
    }
    for (size_t i = 0; i < s->n_retired; i++) dg_dag_free(s->retired[i]);
    free(s->retired);
    errors_clear(s);
    free(s->instance);
    dg_config_free(&s->cfg);
    free(s);
}
