/* The scheduler's scale scenario, shared by bench/bench_sched.c and the scale unit tests
 * (tests/unit/sched/test_sched_scale.c): a DAG of `layers` layers of `width` tasks, each
 * task depending on the whole layer before, and a driver that adds runs of it at once
 * and answers every START at once with started + finished (exit 0). Pure scheduler
 * core: a fake clock, no I/O. See docs/benchmarks.md, "Scheduler at scale". */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include "dagd/sched.h"
#include "dagd/util.h"

/* Task j of layer l is "t<l>_<j>", index l*width + j; file order is a topological order. */
static inline dg_dag *dg_layered_dag(const char *dag_id, size_t layers, size_t width) {
    dg_dag *dag = xcalloc(1, sizeof *dag);
    size_t n = layers * width;
    dag->dag_id = xstrdup(dag_id);
    dag->n_tasks = n;
    dag->tasks = xcalloc(n ? n : 1, sizeof(dg_task));
    dag->topo = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        dg_task *t = &dag->tasks[i];
        size_t l = i / width;
        t->id = xasprintf("t%zu_%zu", l, i % width);
        t->kind = DG_KIND_CONTAINER;
        t->priority_weight = 1;
        t->trigger_rule = DG_TR_ALL_SUCCESS;
        t->n_upstream = l ? width : 0;
        t->upstream = xcalloc(width, sizeof(size_t));
        t->depends_on = xcalloc(t->n_upstream + 1, sizeof(char *));
        for (size_t k = 0; k < t->n_upstream; k++) {
            t->upstream[k] = (l - 1) * width + k;
            t->depends_on[k] = xasprintf("t%zu_%zu", l - 1, k);
        }
        t->n_downstream = l + 1 < layers ? width : 0;
        t->downstream = xcalloc(width, sizeof(size_t));
        for (size_t k = 0; k < t->n_downstream; k++) t->downstream[k] = (l + 1) * width + k;
        dag->topo[i] = i;
    }
    return dag;
}

static inline void dg_layered_dag_free(dg_dag *dag) {
    if (!dag) return;
    for (size_t i = 0; i < dag->n_tasks; i++) {
        free(dag->tasks[i].id);
        free(dag->tasks[i].upstream);
        free(dag->tasks[i].downstream);
        free(dag->tasks[i].pool);
        dg_strv_free(dag->tasks[i].depends_on);
    }
    free(dag->tasks);
    free(dag->topo);
    free(dag->dag_id);
    free(dag);
}

typedef struct dg_layered_stats {
    size_t tries;        /* STARTs answered */
    size_t runs_ok;      /* runs that ended success */
    size_t ticks;
    int max_running;     /* most slots held at once */
} dg_layered_stats;

/* Adds n_runs runs of dag at once, then ticks and answers every START at once until
 * nothing is left to do. *now advances by one millisecond per tick. */
static inline dg_layered_stats dg_layered_drive(dg_sched *s, const dg_dag *dag, size_t n_runs, int64_t *now) {
    dg_layered_stats st = {0};
    char id[32];
    for (size_t i = 0; i < n_runs; i++) {
        snprintf(id, sizeof id, "run%zu", i);
        dg_sched_add_run(s, dag, id, *now);
    }
    for (;;) {
        dg_sched_tick(s, *now);
        st.ticks++;
        if (dg_sched_running(s) > st.max_running) st.max_running = dg_sched_running(s);
        dg_cmd *cmds = NULL;
        size_t n = dg_sched_take_cmds(s, &cmds), starts = 0;
        for (size_t i = 0; i < n; i++) {
            const dg_cmd *c = &cmds[i];
            if (c->type == DG_CMD_RUN_CHANGED && c->run->state == DG_RUN_SUCCESS) st.runs_ok++;
            if (c->type != DG_CMD_START) continue;
            dg_result ok = {.type = DG_RES_EXITED, .exit_code = 0};
            dg_sched_on_started(s, c->run, c->task, c->try_number, *now);
            dg_sched_on_finished(s, c->run, c->task, c->try_number, &ok, *now);
            starts++;
        }
        free(cmds);
        st.tries += starts;
        (*now)++;
        if (n == 0) break;
    }
    return st;
}
