/* cli internals: the foreground-run display and shared helpers. */
#pragma once
#include <stdio.h>

#include "dagd/config.h"
#include "dagd/dag.h"
#include "dagd/exec.h"
#include "dagd/sched.h"

typedef struct dg_display {
    FILE *out;
    bool tty;
    int drawn_lines;
    /* what the plain-line mode printed last, so a change is printed once */
    size_t n_tasks;
    int *last_state, *last_try;
    int last_run_state;
} dg_display;
void dg__display_free(dg_display *d);

void dg__display_init(dg_display *d, FILE *out, bool tty);
void dg__display_draw(dg_display *d, dg_run *run, dg_exec *x, int64_t now);
void dg__display_ti(dg_display *d, dg_run *run, size_t task);
void dg__display_run(dg_display *d, dg_run *run);

/* --conf: a JSON object (NULL text = none); prints why not to stderr. */
int dg__cli_parse_conf(const char *text, json_t **ret);

/* dagd's configuration for a verb: --config FILE (may be NULL), the environment, then
 * the --dags and --state flags (NULL = not given). Prints why not to stderr. */
int dg__cli_config(const char *file, const char *dags, const char *state, dg_config *ret);
/* FILE or DAG id (in dags, else the configured folder), loaded and completely validated
 * as every verb judges it; diagnostics go to stderr. config_file may be NULL. */
int dg__cli_load_dag(const char *what, const char *dags, const char *config_file, dg_dag **ret);
