/* sched — the scheduler core (docs/daemon.md): a pure state machine over DAG runs and task
 * instances. It never does I/O and never reads a clock: every entry point takes `now`
 * (ms since the epoch) and appends commands (start this try, stop that container,
 * a state changed, a run finished) to a queue the driver drains with
 * dg_sched_take_cmds() and carries out, feeding results back through dg_sched_on_*.
 * The scheduler owns runs and their task instances; runs borrow their dg_dag, which
 * must outlive them. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dagd/dag.h"

typedef enum {
    DG_TI_NONE = 0,
    DG_TI_SCHEDULED,
    DG_TI_QUEUED,
    DG_TI_RUNNING,
    DG_TI_SUCCESS,
    DG_TI_FAILED,
    DG_TI_UP_FOR_RETRY,
    DG_TI_UPSTREAM_FAILED,
    DG_TI_SKIPPED,
    _DG_TI_MAX,
} dg_ti_state;
const char *dg_ti_state_name(dg_ti_state s);
int dg_ti_state_from_name(const char *s);
bool dg_ti_state_finished(dg_ti_state s); /* success failed upstream_failed skipped */

typedef enum { DG_RUN_QUEUED = 0, DG_RUN_RUNNING, DG_RUN_SUCCESS, DG_RUN_FAILED } dg_run_state;
const char *dg_run_state_name(dg_run_state s);
int dg_run_state_from_name(const char *s);

typedef struct dg_ti {
    dg_ti_state state;
    int try_number;        /* of the current or last try; 0 = never tried */
    int max_tries;         /* retries + 1 */
    int64_t start_ms;      /* current/last try started (queued; 0 = not yet) */
    int64_t running_ms;    /* ... and its container started running (0 = not yet) */
    int64_t end_ms;        /* finished (0 = not yet) */
    int64_t not_before_ms; /* up_for_retry, or a rescheduled sensor: eligible from then */
    int64_t deadline_ms;   /* running: timeout deadline, 0 = none */
    int64_t first_start_ms;/* first try's start (sensor timeout counts from it) */
    bool stopping;         /* a STOP was issued for the current try */
    bool timed_out;        /* ... because of the timeout */
    bool prepared;         /* a PREPARE hint was issued and not withdrawn */
    bool holds_slot;       /* counted against parallelism/pool/max_active_tasks */
    bool has_exit_code;
    int exit_code;
    char *message;         /* why it failed/skipped, owned; NULL if nothing to say */
} dg_ti;

typedef struct dg_run {
    const dg_dag *dag;
    char *run_id;
    dg_run_state state;
    dg_ti *ti;             /* dag->n_tasks entries, index = task index */
    int64_t start_ms, end_ms;
    bool cancelled;
    /* depends_on_past: the previous run's final task states, or NULL (no previous run:
     * nothing to wait for). Owned by the run; set with dg_sched_set_prev_states. */
    dg_ti_state *prev_states;
    void *userdata;        /* the driver's */
    struct dg_run *next;   /* scheduler's list, in creation order */
} dg_run;

typedef enum {
    DG_CMD_START = 0,  /* begin try `try_number` of (run, task); it holds a slot now */
    DG_CMD_STOP,       /* stop the running try (reason says why); an on_finished follows */
    DG_CMD_PREPARE,    /* hint: try `try_number` of (run, task) will likely start soon (create early) */
    DG_CMD_UNPREPARE,  /* withdraw a PREPARE hint: it will not start (skipped/failed/cancel) */
    DG_CMD_TI_CHANGED, /* a task instance changed state: persist/show it */
    DG_CMD_RUN_CHANGED,/* a run changed state (queued→running→success|failed) */
    DG_CMD_NOTIFY,     /* send notifications `event` for (run, task) or for the run (task = SIZE_MAX) */
} dg_cmd_type;

typedef enum { DG_STOP_TIMEOUT = 0, DG_STOP_CANCEL } dg_stop_reason;
typedef enum { DG_EVENT_FAILURE = 0, DG_EVENT_SUCCESS, DG_EVENT_RETRY } dg_notify_event;

typedef struct dg_cmd {
    dg_cmd_type type;
    dg_run *run;
    size_t task;
    int try_number;
    dg_stop_reason reason;
    dg_notify_event event;
    dg_ti_state state; /* TI_CHANGED: the state entered */
} dg_cmd;

/* The outcome of one try, reported by the driver. */
typedef enum {
    DG_RES_EXITED = 0, /* the container exited with exit_code */
    DG_RES_ERROR,      /* the try could not run (bad image, template error, engine error) */
    DG_RES_NOT_YET,    /* a reschedule-mode sensor found nothing yet: check again later */
    DG_RES_SENSOR_TIMEOUT, /* a poke-mode sensor's timeout passed: failed (skipped with soft_fail), no retry */
} dg_result_type;

typedef struct dg_result {
    dg_result_type type;
    int exit_code;
    const char *message; /* copied; may be NULL */
} dg_result;

typedef struct dg_pool_limit {
    const char *name;
    int slots;
} dg_pool_limit;

typedef struct dg_sched_opts {
    int parallelism;            /* default 32 */
    const dg_pool_limit *pools; /* may be NULL; a pool not listed is unbounded */
    size_t n_pools;
    int64_t default_max_retry_delay_ms; /* cap for exponential backoff without max_retry_delay: 24h */
} dg_sched_opts;

typedef struct dg_sched dg_sched;

dg_sched *dg_sched_new(const dg_sched_opts *opts); /* opts may be NULL: defaults */
void dg_sched_free(dg_sched *s);                   /* frees every run */
/* New parallelism and pools (a config reload); tries holding slots keep them. */
void dg_sched_set_limits(dg_sched *s, int parallelism, const dg_pool_limit *pools, size_t n_pools);

/* A new run in state queued; it starts on a later tick when max_active_runs allows. */
dg_run *dg_sched_add_run(dg_sched *s, const dg_dag *dag, const char *run_id, int64_t now);
void dg_sched_set_prev_states(dg_run *run, const dg_ti_state *states); /* copied; NULL clears */
/* Forget a finished run (frees it). */
void dg_sched_remove_run(dg_sched *s, dg_run *run);
dg_run *dg_sched_runs(dg_sched *s); /* head of the list */

/* Advance everything that depends on time or on other tasks: start queued runs,
 * resolve trigger rules, bring due retries back, issue timeouts, start what fits the
 * slots (highest effective priority_weight first), finish runs. */
void dg_sched_tick(dg_sched *s, int64_t now);

/* The driver's reports. Stale reports (wrong try, task not running) are ignored. */
void dg_sched_on_started(dg_sched *s, dg_run *run, size_t task, int try_number, int64_t now);
void dg_sched_on_finished(dg_sched *s, dg_run *run, size_t task, int try_number,
                          const dg_result *res, int64_t now);

/* Cancel a run: running tries get STOP(cancel) and end failed; tasks not yet started
 * end skipped; the run ends failed. */
void dg_sched_cancel_run(dg_sched *s, dg_run *run, int64_t now);

/* When the next time-driven change is due (retry, timeout, sensor check), or -1. */
int64_t dg_sched_next_wakeup(const dg_sched *s);

/* Move the queued commands to the caller (who frees *ret with free()). */
size_t dg_sched_take_cmds(dg_sched *s, dg_cmd **ret);

/* The delay before try `next_try` (>= 2) of a task, Airflow's formula:
 * retry_delay * 2^(next_try-2) with exponential backoff, capped by max_retry_delay. */
int64_t dg_sched_retry_delay(const dg_task *t, int next_try, int64_t default_cap_ms);

/* ---- the daemon's verbs (crash recovery, clear, mark); call dg_sched_tick after ---- */

/* Put back a run's state as the store had it (the run was just added). */
void dg_sched_restore_run(dg_sched *s, dg_run *run, dg_run_state state, int64_t start_ms, int64_t end_ms);
typedef struct dg_ti_restore {
    dg_ti_state state;
    int try_number, max_tries;
    int64_t start_ms, end_ms;
    bool has_exit_code;
    int exit_code;
    const char *message;
} dg_ti_restore;
/* queued/running come back holding a slot (the driver re-adopts the container and
 * reports the outcome); up_for_retry waits its retry delay from end_ms. No command. */
void dg_sched_restore_ti(dg_sched *s, dg_run *run, size_t task, const dg_ti_restore *r, int64_t now);
/* Back to `none` with a fresh retry budget; a finished run becomes queued again.
 * -EBUSY while the task has a try in flight. */
int dg_sched_clear_ti(dg_sched *s, dg_run *run, size_t task, int64_t now);
/* success|failed by hand (-EDOM otherwise); a try in flight is stopped. */
int dg_sched_mark_ti(dg_sched *s, dg_run *run, size_t task, dg_ti_state st, int64_t now);

/* Slot accounting, for tests and /metrics. */
int dg_sched_running(const dg_sched *s);
/* How many times the scheduler has looked at a task instance to move it on (trigger
 * rule, due retry or sensor check) so far: for tests and benches, since this work
 * follows what changed, not the number of runs (docs/architecture.md, sched). */
uint64_t dg_sched_evaluations(const dg_sched *s);

/* Behaviour the declarations above leave open (see src/sched/sched.c):
 * - dg_sched_cancel_run and dg_sched_on_* do not cascade: call dg_sched_tick after
 *   them so that downstream tasks and the run itself move on.
 * - A reschedule-mode sensor answering DG_RES_NOT_YET goes back to `scheduled` with
 *   not_before_ms = now + interval and no slot; its next check is a START with the
 *   next try_number, and max_tries is raised by one so checks never use up retries.
 *   Once sensor.timeout_ms has passed since first_start_ms it ends failed, no retry
 *   (skipped with sensor.soft_fail); DG_RES_SENSOR_TIMEOUT ends a poke-mode one so.
 * - A try stopped because its run was cancelled ends failed, whatever it exited with.
 * - depends_on_past: a task whose previous state is not success/skipped stays `none`
 *   until dg_sched_set_prev_states says otherwise (or the run is cancelled).
 * - A task without a pool counts against a configured pool named "default_pool". */
