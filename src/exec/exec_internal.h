/* exec internals shared by the files of src/exec/. */
#pragma once
#include "dagd/exec.h"

typedef struct exec_run exec_run;
typedef struct exec_try exec_try;

struct dg_exec {
    uv_loop_t *loop;
    dg_backend *backend;
    dg_sched *sched;
    dg_store *store;
    char *state_dir;
    char *instance; /* io.dagd.instance label value of this process */
    int stop_grace_s;
    bool allow_privileged, allow_docker_socket, allow_host_network, allow_container_network;
    char **allowed_volume_prefixes;
    char **allowed_sensitive_paths;
    char **protected_paths;
    json_t *conn_uris; /* {id: URI} */
    json_t *conns;     /* {id: parsed}, what templates see under conn */
    char *smtp_url, *smtp_from, *smtp_user, *smtp_password;
    bool test_mode;
    dg_exec_hooks hooks;
    uv_timer_t wake;
    bool wake_closed;
    /* State writes are failing (docs/operations.md, "A full disk"): the reason, NULL while
     * they work. While set nothing starts; the records that could not be written are
     * written again from the retry timer, and when all are, work resumes. */
    char *store_err;
    uv_timer_t retry;
    bool retry_closed;
    dg_try_rec **unsaved_tries; /* try records to write again (owned copies) */
    size_t n_unsaved_tries;
    void (*connect_cb)(void *ud, const dg_error *err);
    void *connect_ud;
    bool ready, closing, pumping, pump_again;
    bool held;          /* recovery in progress: no tick until released */
    uint64_t starts;    /* jobs started */
    double start_lat_sum; /* seconds from START to the job running */
    uint64_t start_lat_buckets[8];
    exec_try *tries;
    int outstanding;
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
    bool run_unsaved;  /* the run record could not be written: again from the retry timer */
    bool *ti_unsaved;  /* per task: its instance record could not be written */
};

struct exec_try {
    dg_exec *x;
    exec_run *er;
    size_t task;
    int try_number;
    int refs;
    exec_try *next;
    dg_job *job;    /* the backend's, until released */
    char *name, *image, *message;
    char *rendered; /* the command, entrypoint and env it ran with, redacted (JSON text) */
    char *job_id; /* the backend's id of the job (a container id), once created */
    char *image_id, *image_digest; /* the image it ran (dg_job_image), once known */
    bool prepare_only, start_requested, stopping, released;
    bool created, started, exited, reported, output_read;
    /* waiting for state writes to work again: to begin at all (WAIT_BEGIN), to start its
     * created job once its id is on disk (WAIT_START), or to release its finished job once
     * its outcome is on disk (WAIT_RELEASE, remove_job says whether to remove it) */
    enum { WAIT_NONE, WAIT_BEGIN, WAIT_START, WAIT_RELEASE } wait;
    bool remove_job;
    bool remade; /* its job vanished before it started and was made anew (once) */
    int exit_code;
    char *output_error;
    dg_tasklog *log;
    dg_buf last_line;
    uv_timer_t *timer; /* a poking sensor's */
    int64_t sensor_start_ms;
    int64_t end_ms;       /* when the outcome was reported */
    int64_t start_cmd_ms; /* when START arrived */
};


void dg__exec_notify_task(exec_try *t);
/* One GET on the thread pool, as notifications are sent (notify.c); cb runs on the loop
 * with the status and (up to 1 MiB of) the body, or error set when no answer came. */
typedef void (*dg__exec_http_cb)(void *ud, long status, const char *body, size_t len, const char *error);
void dg__exec_http_get(dg_exec *x, const char *url, int64_t timeout_ms, dg__exec_http_cb cb, void *ud);
/* Sensors (sensor.c): the first check of a try, and a stop while it waits. */
void dg__exec_start_sensor(exec_try *t);
void dg__exec_stop_sensor(exec_try *t);
/* Shared with sensor.c: the try's log file, and a probe job's output lines into it. */
void dg__exec_open_log(exec_try *t, bool fresh);
void dg__exec_job_line(void *ud, int stream, const char *line, size_t len);
void dg__exec_report(exec_try *t, const dg_result *res);
void dg__exec_try_release(exec_try *t);
exec_try *dg__exec_try_ref(exec_try *t);
void dg__exec_try_unref(exec_try *t);
void dg__exec_try_drop_job(exec_try *t, bool remove);
void dg__exec_notify_event(dg_exec *x, dg_run *run, size_t task, dg_notify_event ev);
/* Shared with notify.c: end a try that could not run / report a finished one. */
void dg__exec_try_fail(exec_try *t, const char *msg);
void dg__exec_try_succeed(exec_try *t);
json_t *dg__exec_vars(exec_try *t);
json_t *dg__exec_run_vars(exec_run *er, size_t task, int try_number);
/* ti.xcom_pull for templates rendered for a run (userdata: its exec_run). */
int dg__exec_xcom_pull(void *er, const char *task_id, char **ret, dg_error *err);

/* Render a try's job spec (spec.c): templates, env precedence, labels, policy. */
typedef struct exec_spec {
    dg_job_spec s;
    char **command, **entrypoint, **env, **binds, **volumes;
    char *image, *working_dir;
    json_t *labels;
} exec_spec;
int dg__exec_build_spec(exec_try *t, exec_spec *ret, dg_error *err);
/* Add the try's secret env values, rendered, to its run's redaction set: for a job taken
 * over after a restart, whose spec is not built again, so that its output (read again
 * from the first line) is redacted as it was before. */
void dg__exec_try_secrets(exec_try *t);
/* Add s to the run's redaction set (values under three characters are left out: they
 * would mangle every line). */
void dg__exec_add_secret(exec_run *er, const char *s);
void dg__exec_spec_free(exec_spec *s);
