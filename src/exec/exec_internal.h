/* exec internals shared by the files of src/exec/. */
#pragma once
#include "dagd/exec.h"

typedef struct exec_run exec_run;
typedef struct exec_try exec_try;

struct dg_exec {
    uv_loop_t *loop;
    dg_docker *docker;
    dg_sched *sched;
    dg_store *store;
    char *state_dir;
    char *instance; /* io.dagd.instance label value of this process */
    int stop_grace_s;
    bool allow_privileged;
    bool allow_docker_socket;
    char **engine_sockets;  /* where the engine's socket is on this host (resolved paths) */
    char **allowed_volume_prefixes;
    bool test_mode;
    dg_exec_hooks hooks;
    uv_timer_t wake;
    bool wake_closed;
    dg_docker_stream *events;
    dg_docker_done_cb connect_cb;
    void *connect_ud;
    bool ready, closing, pumping, pump_again;
    bool held;          /* recovery in progress: no tick until released */
    uint64_t starts;    /* containers started */
    double start_lat_sum; /* seconds from START to the container running */
    uint64_t start_lat_buckets[8];
    exec_try *tries;
    int outstanding;
    char **cache; /* images and networks known to exist ("network:NAME") */
};

struct exec_run {
    dg_exec *x;
    dg_run *run;
    int refs;
    size_t n_tasks;
    char *run_type;
    int64_t logical_ms, interval_start_ms, interval_end_ms;
    json_t *conf;   /* dag_run.conf */
    json_t *params; /* DAG params overridden by conf */
    char **outputs; /* per task: the last successful output (XCom) */
    exec_try **cur; /* per task: the current try */
    exec_try **prepared;
    char **secrets; /* values to redact from logs */
    int last_state; /* run state last reported (-1: none yet) */
};

struct exec_try {
    dg_exec *x;
    exec_run *er;
    size_t task;
    int try_number;
    int refs;
    exec_try *next;
    char *container_id, *name, *image, *message;
    json_t *config;
    bool prepare_only, start_requested, unprepared, stopping, released;
    bool image_ok, network_ok, created, started, die_seen, logs_done, container_gone;
    bool reported, removing, output_read;
    int exit_code;
    char *output_error;
    dg_docker_stream *logs;
    dg_tasklog *log;
    dg_buf last_line;
    uv_timer_t *timer;
    int64_t sensor_start_ms;
    int64_t end_ms; /* when the outcome was reported */
    int64_t start_cmd_ms; /* when START arrived */
    int64_t engine_down_since; /* the engine refused connections since then (0: it did not) */
    void (*retry_step)(exec_try *t); /* what to try again once the engine answers */
};

exec_try *dg__exec_find_container(dg_exec *x, const char *id);
void dg__exec_on_exit(exec_try *t, int code);
void dg__exec_reconcile(exec_try *t);

bool dg__exec_cache_has(dg_exec *x, const char *key);
void dg__exec_cache_put(dg_exec *x, const char *key);
void dg__exec_cache_drop(dg_exec *x, const char *key);
void dg__exec_cache_free(dg_exec *x);
/* Replace every secret in line with "***"; returns a new string. */
char *dg__exec_redact(char *const *secrets, const char *line, size_t len);

void dg__exec_notify_task(exec_try *t);
void dg__exec_notify_event(dg_exec *x, dg_run *run, size_t task, dg_notify_event ev);
/* Shared with notify.c: end a try that could not run / report a finished one. */
void dg__exec_try_fail(exec_try *t, const char *msg);
void dg__exec_try_succeed(exec_try *t);
json_t *dg__exec_vars(exec_try *t);
/* ti.xcom_pull for templates rendered for a run (userdata: its exec_run). */
int dg__exec_xcom_pull(void *er, const char *task_id, char **ret, dg_error *err);
int dg__exec_render(exec_try *t, const json_t *vars, const char *field, const char *src, char **ret,
                    dg_error *err);
