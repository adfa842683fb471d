/* server internals shared by the files of src/server. */
#pragma once
#include "dagd/cron.h"
#include "dagd/dag.h"
#include "dagd/exec.h"
#include "dagd/runtime.h"
#include "dagd/sched.h"
#include "dagd/server.h"
#include "dagd/store.h"

/* One DAG of the bag: the current good version of its file. */
typedef struct dag_entry {
    char *dag_id;
    char *file;
    dg_dag *dag;
    bool paused;
    bool has_schedule;
    dg_schedule schedule;
    bool have_last;      /* the newest scheduled interval already has a run */
    dg_interval last;
    bool have_next;      /* the next interval, for the API and the clock */
    dg_interval next;
    struct dag_entry *next_entry;
} dag_entry;

typedef struct import_error {
    char *file;
    int line, col;
    char *msg;
    char *dag_id; /* the id the broken file declares, NULL when unknown */
} import_error;

struct dg_server {
    uv_loop_t *loop;
    dg_config cfg; /* a copy owned by the server */
    dg_runtime *rt;
    dg_store *store; /* the runtime's, borrowed */
    dg_sched *sched;
    dg_exec *exec;
    char *instance;
    dag_entry *dags;
    size_t n_dags;
    dg_dag **retired; /* older versions still used by runs in flight */
    size_t n_retired;
    import_error *errors;
    size_t n_errors;
    uv_fs_event_t watch;
    bool watching, watch_closing, rewatch, watch_warned;
    ino_t watch_ino; /* the folder the watch is on (a folder made anew is another) */
    uv_timer_t debounce, clock, sweep, watchdog, reconnect;
    int64_t connect_delay_ms; /* the next wait before trying the engine again */
    int handles_open;
    bool started; /* dg_server_start ran: containers may be running */
    bool ready, stopping, recovering;
    int pending_recovery;
    void (*on_closed)(void *ud);
};

dag_entry *dg__server_find(dg_server *s, const char *dag_id);
/* The run in memory, or loaded back from the store (for clear and mark). */
int dg__server_load_run(dg_server *s, dag_entry *e, const char *run_id, dg_run **ret, dg_error *err);
dg_run *dg__server_find_run(dg_server *s, const char *dag_id, const char *run_id);
/* Create and persist a run of e's DAG and let the scheduler act. iv NULL: a run made by
 * hand, whose data interval is inferred from the schedule (dg_schedule_manual_interval). */
dg_run *dg__server_add_run(dg_server *s, dag_entry *e, const char *run_id, const char *run_type,
                           int64_t logical_ms, const dg_interval *iv, const json_t *conf);
/* The interval the schedule clock takes up next for e at `now`: e->next, or with catchup
 * off and intervals missed, the newest due one. false when the schedule has no more. */
bool dg__server_upcoming(const dag_entry *e, int64_t now, dg_interval *ret);
void dg__server_kick(dg_server *s); /* re-evaluate schedules soon */
/* 0, or -EAGAIN with the reason while state writes fail: every call that changes state
 * is refused then (docs/api.md, "Errors"). */
int dg__server_writable(dg_server *s, dg_error *err);
/* How many files have import errors (a file may have many errors). */
size_t dg__server_error_files(const dg_server *s);

json_t *dg__json_time(int64_t ms); /* RFC 3339 UTC string, or null for 0 */
json_t *dg__run_json(const dg_run_rec *r);
json_t *dg__ti_json(const dg_ti_rec *r);
