/* dag — DAG files (docs/dags.md): libyaml parse into an immutable model, then validation.
 * A dg_dag and everything it points to is owned by the dag and freed by dg_dag_free;
 * nothing in it changes after dg_dag_load returns. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "dagd/util.h"

typedef enum {
    DG_KIND_NONE = 0,
    DG_KIND_CONTAINER,
    DG_KIND_SENSOR,
    DG_KIND_NOTIFY,
} dg_task_kind;

typedef enum {
    DG_TR_ALL_SUCCESS = 0,
    DG_TR_ALL_FAILED,
    DG_TR_ALL_DONE,
    DG_TR_ONE_SUCCESS,
    DG_TR_ONE_FAILED,
    DG_TR_NONE_FAILED,
    DG_TR_NONE_FAILED_MIN_ONE_SUCCESS,
    DG_TR_NONE_SKIPPED,
    DG_TR_ALWAYS,
    DG_TR_ONE_DONE,
    DG_TR_ALL_SKIPPED,
    _DG_TR_MAX,
} dg_trigger_rule;
const char *dg_trigger_rule_name(dg_trigger_rule r);
int dg_trigger_rule_from_name(const char *s); /* -EINVAL if unknown */

typedef enum { DG_PULL_MISSING = 0, DG_PULL_ALWAYS, DG_PULL_NEVER } dg_pull_policy;
typedef enum { DG_REMOVE_ALWAYS = 0, DG_REMOVE_ON_SUCCESS, DG_REMOVE_NEVER } dg_remove_policy;

/* A string value that may be a secret (`KEY: {secret: value}`): redacted in logs. */
typedef struct dg_kv {
    char *key;
    char *value;
    bool secret;
} dg_kv;

/* What a sensor checks (docs/dags.md, "Sensor tasks"). */
typedef enum {
    DG_SENSOR_FILE = 0, /* a glob on the dagd host */
    DG_SENSOR_DAG,      /* another DAG's run (or one of its tasks) in the state database */
    DG_SENSOR_HTTP,     /* a URL answering an expected status */
    DG_SENSOR_COMMAND,  /* a probe container (the task's image and command) exiting 0 */
} dg_sensor_kind;

typedef struct dg_sensor {
    dg_sensor_kind kind;
    char *file;          /* file: glob pattern on the dagd host, templated */
    char *dag_id;        /* dag: the other DAG */
    char *task_id;       /* dag: one of its tasks, NULL = the run itself */
    char **allowed_states; /* dag: NULL-terminated; default {"success"} */
    char **failed_states;  /* dag: NULL-terminated; default none */
    int64_t delta_ms;      /* dag: the other run's logical date is this one's minus delta */
    char *url;             /* http: templated */
    int status;            /* http: expected status, default 200 */
    char *body;            /* http: extended regex the body must match, templated; NULL = any */
    int64_t request_timeout_ms; /* http: default 10s */
    int64_t interval_ms; /* default 60s */
    int64_t timeout_ms;  /* default 7d (Airflow's default) */
    bool reschedule;     /* mode: reschedule (true) | poke (false, default) */
    bool soft_fail;      /* a timeout ends the task skipped, not failed */
} dg_sensor;

typedef struct dg_task {
    char *id;
    int line, col; /* where the task's key is in the file (1-based) */
    dg_task_kind kind;

    /* container tasks */
    char *image;
    char **command; /* NULL-terminated, NULL when unset (image default) */
    char **entrypoint;
    dg_kv *env;
    size_t n_env;
    char *env_file;
    char *working_dir;
    char *user;
    char *network;  /* NULL = engine default bridge */
    char **volumes; /* compose short syntax, NULL-terminated */
    double cpus;    /* 0 = unlimited */
    int64_t memory; /* bytes, 0 = unlimited */
    dg_pull_policy pull;
    dg_remove_policy remove;
    int *skip_on_exit_code;
    size_t n_skip_on_exit_code;
    bool privileged;
    dg_kv *labels;
    size_t n_labels;
    char *hostname;
    char **extra_hosts;
    int64_t shm_size;
    char **connections;
    char **placement_constraints; /* placement: swarm backend only; NULL-terminated or NULL */
    char **placement_preferences; /* "spread=node.labels.KEY" */
    char *output_file; /* output: {file: /path} */

    /* sensor tasks (a command sensor's probe uses image, command and the container keys) */
    dg_sensor sensor;
    /* notify tasks */
    char *notify;

    /* every task */
    char **depends_on; /* NULL-terminated task ids */
    size_t n_upstream;
    size_t *upstream;   /* indexes into dag->tasks, in depends_on order */
    size_t n_downstream;
    size_t *downstream; /* indexes of tasks that depend on this one */
    dg_trigger_rule trigger_rule;
    int retries;
    int64_t retry_delay_ms; /* default 5m */
    bool retry_exponential_backoff;
    int64_t max_retry_delay_ms; /* 0 = no cap given (the default cap is 24h) */
    int64_t timeout_ms;         /* 0 = none */
    char *pool;                 /* NULL = default pool */
    int priority_weight;        /* default 1 */
    bool depends_on_past;
    char **on_failure, **on_success, **on_retry; /* notification names */
    char *doc;
} dg_task;

typedef struct dg_notification {
    char *name;
    /* exactly one of email/webhook */
    char **email_to;
    char *email_subject;
    char *email_body;
    char *webhook_url;
    char *webhook_body;
} dg_notification;

typedef struct dg_dag {
    char *file;   /* path as given */
    char *dag_id;
    char *description;
    char *schedule; /* NULL = manual only */
    char *timezone; /* never NULL: "UTC" by default */
    bool has_start_date, has_end_date;
    int64_t start_date_ms, end_date_ms;
    bool catchup;
    int max_active_runs;  /* default 16 */
    int max_active_tasks; /* default 16 */
    bool paused;
    char **tags;
    json_t *params; /* object, never NULL */
    dg_notification *notifications;
    size_t n_notifications;
    char **on_failure, **on_success;
    dg_task *tasks; /* in file order */
    size_t n_tasks;
    size_t *topo;   /* task indexes in a topological order */
} dg_dag;


/* Options that change what is valid: names the server knows. NULL = accept none
 * (connections) / accept any (pools are checked only when known_pools is set; the runtime
 * always sets it, default_pool included). */
typedef struct dg_dag_opts {
    const char *const *known_connections; /* NULL-terminated or NULL */
    const char *const *known_pools;       /* NULL-terminated or NULL: no pool check */
    bool check_connections;               /* unknown connection names are errors */
    /* more checks of a loaded task (the server's policy), adding to diags */
    void (*check_task)(void *ud, const dg_dag *dag, const dg_task *t, dg_diags *diags);
    void *check_ud;
} dg_dag_opts;

/* Parse and validate: YAML, keys and types, durations, cron and time zones, dependencies,
 * notification names, templates (syntax and names), and what opts add. On any error
 * returns -EINVAL with every problem found in diags (never only the first), each at the
 * value that holds it, and *ret untouched. opts may be NULL. */
int dg_dag_load(const char *path, const dg_dag_opts *opts, dg_dag **ret, dg_diags *diags);
int dg_dag_load_string(const char *name, const char *text, size_t len, const dg_dag_opts *opts,
                       dg_dag **ret, dg_diags *diags);
void dg_dag_free(dg_dag *dag);

/* Index of a task by id, or -1. */
ssize_t dg_dag_task_index(const dg_dag *dag, const char *id);
const dg_notification *dg_dag_notification(const dg_dag *dag, const char *name);

/* Airflow's "downstream" weight rule: own weight plus that of every task downstream. */
int64_t dg_task_effective_weight(const dg_dag *dag, size_t task);
