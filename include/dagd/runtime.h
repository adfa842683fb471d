/* runtime — dagd's working parts built from one loaded configuration, for every verb that
 * runs or judges DAGs: `run`, `test`, `validate`, `next` and `serve` (docs/architecture.md,
 * "The runtime"). It owns the store, the backend named by `backend:`, the scheduler and
 * the executor, and passes the configuration's settings (connections, SMTP, policy,
 * parallelism, pools) to them as options.
 *
 * It also holds the one way DAG files are found and judged: the DAG-folder scan, the
 * DAG id / file resolver, and the complete validation (YAML and keys, durations, cron and
 * time zones, templates, connection, pool and notification names, the container policy),
 * so that `validate`, `run` and `serve` reach the same verdict with the same messages. */
#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/config.h"
#include "dagd/dag.h"
#include "dagd/exec.h"
#include "dagd/sched.h"
#include "dagd/store.h"

typedef struct dg_runtime {
    uv_loop_t *loop;
    dg_config cfg;      /* a copy */
    dg_store *store;    /* NULL when nothing is kept (`dagd test`) */
    dg_backend *backend;
    dg_sched *sched;
    dg_exec *exec;
} dg_runtime;

typedef struct dg_runtime_opts {
    bool keep_state;       /* open the store under cfg->state_dir */
    const char *instance;  /* io.dagd.instance label value; NULL = random for this process */
    dg_exec_hooks hooks;
} dg_runtime_opts;

/* Builds everything; no I/O with the engine happens yet (dg_exec_connect does it). An
 * unknown backend name, an unusable state directory or engine address fail here. */
int dg_runtime_new(uv_loop_t *loop, const dg_config *cfg, const dg_runtime_opts *opts, dg_runtime **ret,
                   dg_error *err);
/* New parallelism and pools from a reloaded configuration. */
void dg_runtime_set_limits(dg_runtime *rt, const dg_config *cfg);
/* Closes the executor and the backend (containers keep running); run the loop afterwards,
 * then dg_runtime_free. */
void dg_runtime_close(dg_runtime *rt);
void dg_runtime_free(dg_runtime *rt);

/* ---- finding and judging DAG files (no runtime needed: a configuration is enough) ---- */

/* The configuration's container policy (borrowing cfg's strings), with the engine's
 * socket paths the policy protects; for the executor and for validation alike. */
dg_exec_policy dg_runtime_policy(const dg_config *cfg, const char *const *protected_paths);

/* Every *.yml / *.yaml directly in dir (hidden files skipped), sorted, as "dir/name". */
int dg_dags_scan(const char *dir, char ***ret_files, size_t *ret_n);
/* Load and validate one file completely, as every verb does. On failure every problem is
 * in diags (file:line:col: message) and -EINVAL (or a read error) is returned. */
int dg_dags_load(const dg_config *cfg, const char *path, dg_dag **ret, dg_diags *diags);
/* The DAG id a file declares (its top-level `dag:`), read even when the file is otherwise
 * invalid, so that a broken file can be named when its DAG is asked for. NULL when the
 * file is not readable YAML or declares none. Caller frees. */
char *dg_dags_declared_id(const char *path);
/* FILE, or a DAG id looked up in the DAGs folder (dags_folder NULL: cfg's). The id's file
 * is the one whose dag: is that id; only valid files count. *ret is the loaded DAG;
 * failures are -ENOENT (no such file or id) with err set, or -EINVAL with diags. */
int dg_dags_resolve(const dg_config *cfg, const char *what, const char *dags_folder, dg_dag **ret,
                    dg_diags *diags, dg_error *err);
