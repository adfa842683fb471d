/* The scheduler's incremental paths at scale (docs/architecture.md, sched): the work of a
 * tick follows what changed — a freed slot, a due timer, a finished or cleared task —
 * not the number of runs or tasks. dg_sched_evaluations counts the task instances the
 * scheduler looked at; the DAGs come from the bench's layered builder. Sizes are kept so
 * that the whole file stays quick under valgrind. */
#include <criterion/criterion.h>
#include <errno.h>

#include "support/layered_dag.h"

typedef struct log {
    dg_cmd *v;
    size_t n;
} log_t;

static void log_free(log_t *l) {
    free(l->v);
    *l = (log_t){0};
}

static log_t tick(dg_sched *s, int64_t now) {
    log_t l = {0};
    dg_sched_tick(s, now);
    l.n = dg_sched_take_cmds(s, &l.v);
    return l;
}

static size_t count(const log_t *l, dg_cmd_type type) {
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) n += l->v[i].type == type;
    return n;
}

static const dg_cmd *first(const log_t *l, dg_cmd_type type) {
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].type == type) return &l->v[i];
    return NULL;
}

static void finish(dg_sched *s, dg_run *r, size_t task, int code, int64_t now) {
    dg_result res = {.type = DG_RES_EXITED, .exit_code = code};
    dg_sched_on_started(s, r, task, r->ti[task].try_number, now);
    dg_sched_on_finished(s, r, task, r->ti[task].try_number, &res, now);
}

static void drop_cmds(dg_sched *s) {
    dg_cmd *c = NULL;
    dg_sched_take_cmds(s, &c);
    free(c);
}

/* The bench's scenario, small: the work per task does not grow with the runs in flight. */
Test(sched_scale, evaluations_per_task_do_not_grow_with_runs) {
    dg_dag *dag = dg_layered_dag("layers", 10, 5);
    uint64_t per[2];
    size_t sizes[2] = {20, 200};
    for (int k = 0; k < 2; k++) {
        dg_sched_opts o = {.parallelism = 64};
        dg_sched *s = dg_sched_new(&o);
        int64_t now = 1000;
        dg_layered_stats st = dg_layered_drive(s, dag, sizes[k], &now);
        cr_assert_eq(st.tries, sizes[k] * 50);
        cr_assert_eq(st.runs_ok, sizes[k]);
        cr_assert_eq(st.max_running, 64);
        per[k] = dg_sched_evaluations(s) * 1000 / (sizes[k] * 50);
        dg_sched_free(s);
    }
    /* each task is looked at a bounded number of times: as it becomes ready (once per
     * finished upstream at most) and as it changes state; a scan per tick would be
     * proportional to the runs in flight */
    cr_assert_leq(per[0], 10 * 1000, "%.2f evaluations per task", per[0] / 1000.0);
    cr_assert_leq(per[1] > per[0] ? per[1] - per[0] : per[0] - per[1], per[0] / 20, "20 runs: %.3f, 200 runs: %.3f evaluations per task", per[0] / 1000.0,
                 per[1] / 1000.0);
    dg_layered_dag_free(dag);
}

/* 300 one-task runs in a pool of 2 slots: each freed slot starts exactly the next run's
 * task, oldest first, and no trigger rule is looked at again for it. */
Test(sched_scale, freed_pool_slot_wakes_the_next_candidate) {
    dg_dag *dag = dg_layered_dag("pooled", 1, 1);
    dag->tasks[0].pool = xstrdup("p");
    dg_pool_limit pool = {"p", 2};
    dg_sched_opts o = {.parallelism = 64, .pools = &pool, .n_pools = 1};
    dg_sched *s = dg_sched_new(&o);
    enum { N = 300 };
    dg_run *runs[N];
    char id[16];
    for (size_t i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%zu", i);
        runs[i] = dg_sched_add_run(s, dag, id, 0);
    }
    log_t l = tick(s, 1);
    cr_assert_eq(count(&l, DG_CMD_START), 2);
    cr_assert_eq(dg_sched_running(s), 2);
    log_free(&l);
    for (size_t i = 0; i + 2 < N; i++) {
        uint64_t before = dg_sched_evaluations(s);
        finish(s, runs[i], 0, 0, 2 + (int64_t)i);
        l = tick(s, 2 + (int64_t)i);
        cr_assert_eq(count(&l, DG_CMD_START), 1, "one slot freed, one start");
        const dg_cmd *c = first(&l, DG_CMD_START);
        cr_assert_eq(c->run, runs[i + 2], "after run %zu, run %zu starts", i, i + 2);
        cr_assert_eq(runs[i]->state, DG_RUN_SUCCESS);
        cr_assert_leq(dg_sched_evaluations(s) - before, 2, "the waiting candidates are not looked at again");
        log_free(&l);
    }
    dg_sched_free(s);
    dg_layered_dag_free(dag);
}

/* 10,000 tries up for retry, each due at its own time: a tick at one due time starts that
 * one try, looks at it alone, and the next wakeup is the next due time. */
Test(sched_scale, retry_timer_fires_among_ten_thousand_waiting) {
    dg_dag *dag = dg_layered_dag("retrying", 1, 1);
    dag->tasks[0].retries = 1;
    dag->tasks[0].retry_delay_ms = 60000;
    dg_sched_opts o = {.parallelism = 20000};
    dg_sched *s = dg_sched_new(&o);
    enum { N = 10000 };
    dg_run **runs = xcalloc(N, sizeof(dg_run *));
    char id[16];
    for (size_t i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%zu", i);
        runs[i] = dg_sched_add_run(s, dag, id, 0);
    }
    log_t l = tick(s, 1);
    cr_assert_eq(count(&l, DG_CMD_START), N);
    log_free(&l);
    /* they fail in reverse order, one millisecond apart: run i is due at 60000 + 2*N - i */
    for (size_t i = N; i-- > 0;) finish(s, runs[i], 0, 1, 2 + (int64_t)(N - 1 - i));
    drop_cmds(s);
    l = tick(s, 2 + N);
    cr_assert_eq(count(&l, DG_CMD_START), 0, "nothing due yet");
    log_free(&l);
    cr_assert_eq(runs[0]->ti[0].state, DG_TI_UP_FOR_RETRY);
    int64_t due_last = 60000 + 2; /* run N-1 failed first */
    cr_assert_eq(dg_sched_next_wakeup(s), due_last);

    uint64_t before = dg_sched_evaluations(s);
    l = tick(s, due_last);
    cr_assert_eq(count(&l, DG_CMD_START), 1);
    cr_assert_eq(first(&l, DG_CMD_START)->run, runs[N - 1]);
    cr_assert_eq(first(&l, DG_CMD_START)->try_number, 2);
    cr_assert_leq(dg_sched_evaluations(s) - before, 2, "only the due task is looked at");
    cr_assert_eq(dg_sched_next_wakeup(s), due_last + 1, "the next one in line");
    log_free(&l);

    /* a few milliseconds later: the three due since then, in their order of run */
    l = tick(s, due_last + 3);
    cr_assert_eq(count(&l, DG_CMD_START), 3);
    size_t k = 0;
    for (size_t i = 0; i < l.n; i++)
        if (l.v[i].type == DG_CMD_START) cr_assert_eq(l.v[i].run, runs[N - 4 + k++]);
    log_free(&l);
    dg_sched_free(s);
    free(runs);
    dg_layered_dag_free(dag);
}

/* max_active_tasks counts across every run of the DAG (and its other versions, by
 * dag_id), while another DAG's candidates still start when it is full. */
Test(sched_scale, max_active_tasks_across_many_runs) {
    dg_dag *dag = dg_layered_dag("capped", 1, 4);
    dag->max_active_tasks = 3;
    dg_dag *v2 = dg_layered_dag("capped", 1, 4); /* a reloaded version, same dag_id */
    v2->max_active_tasks = 3;
    dg_dag *free_dag = dg_layered_dag("free", 1, 1);
    dg_sched_opts o = {.parallelism = 64};
    dg_sched *s = dg_sched_new(&o);
    enum { N = 100 };
    dg_run *runs[N];
    char id[16];
    for (size_t i = 0; i < N; i++) {
        snprintf(id, sizeof id, "r%zu", i);
        runs[i] = dg_sched_add_run(s, i % 2 ? v2 : dag, id, 0);
    }
    dg_run *other = dg_sched_add_run(s, free_dag, "o", 0);
    log_t l = tick(s, 1);
    cr_assert_eq(count(&l, DG_CMD_START), 4, "3 of the capped DAG, 1 of the other");
    cr_assert_eq(other->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(runs[0]->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(runs[0]->ti[2].state, DG_TI_QUEUED);
    cr_assert_eq(runs[0]->ti[3].state, DG_TI_SCHEDULED);
    log_free(&l);
    size_t done = 0;
    for (int64_t now = 2; done < N * 4; now++) {
        int held = 0, want = N * 4 - done < 3 ? (int)(N * 4 - done) : 3;
        for (size_t i = 0; i < N; i++)
            for (size_t t = 0; t < 4; t++)
                if (runs[i]->ti[t].holds_slot) {
                    held++;
                    finish(s, runs[i], t, 0, now);
                    done++;
                }
        cr_assert_eq(held, want, "at %ld: %d held", (long)now, held);
        l = tick(s, now);
        log_free(&l);
    }
    for (size_t i = 0; i < N; i++) cr_assert_eq(runs[i]->state, DG_RUN_SUCCESS);
    dg_sched_free(s);
    dg_layered_dag_free(dag);
    dg_layered_dag_free(v2);
    dg_layered_dag_free(free_dag);
}

/* Parallelism 1: the candidates woken by each freed slot start by effective
 * priority_weight, then the older run, then topological order. */
Test(sched_scale, woken_candidates_start_in_priority_order) {
    dg_dag *dag = dg_layered_dag("prio", 1, 5);
    static const int weights[5] = {2, 9, 5, 9, 1};
    for (size_t t = 0; t < 5; t++) dag->tasks[t].priority_weight = weights[t];
    dg_sched_opts o = {.parallelism = 1};
    dg_sched *s = dg_sched_new(&o);
    dg_run *runs[3];
    runs[0] = dg_sched_add_run(s, dag, "r0", 0);
    runs[1] = dg_sched_add_run(s, dag, "r1", 0);
    runs[2] = dg_sched_add_run(s, dag, "r2", 0);
    /* weight 9: task 1 then 3 of each run in run order; then 5, 2, 1 */
    static const size_t want_task[15] = {1, 3, 1, 3, 1, 3, 2, 2, 2, 0, 0, 0, 4, 4, 4};
    static const size_t want_run[15] = {0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2};
    for (size_t k = 0; k < 15; k++) {
        log_t l = tick(s, 1 + (int64_t)k);
        const dg_cmd *c = first(&l, DG_CMD_START);
        cr_assert_not_null(c, "start %zu", k);
        cr_assert_eq(count(&l, DG_CMD_START), 1);
        cr_assert_eq(c->run, runs[want_run[k]], "start %zu: run", k);
        cr_assert_eq(c->task, want_task[k], "start %zu: task %zu, want %zu", k, c->task, want_task[k]);
        finish(s, c->run, c->task, 0, 1 + (int64_t)k);
        log_free(&l);
    }
    log_t l = tick(s, 100);
    log_free(&l);
    for (size_t i = 0; i < 3; i++) cr_assert_eq(runs[i]->state, DG_RUN_SUCCESS);
    dg_sched_free(s);
    dg_layered_dag_free(dag);
}

/* A run of 40 layers of 25 (1,000 tasks): clearing or marking one task looks at that task
 * and its downstream neighbours, not at the run's other tasks. */
Test(sched_scale, clear_and_mark_look_only_at_neighbours) {
    enum { L = 40, W = 25 };
    dg_dag *dag = dg_layered_dag("big", L, W);
    dg_sched_opts o = {.parallelism = 64};
    dg_sched *s = dg_sched_new(&o);
    int64_t now = 1;
    dg_layered_stats st = dg_layered_drive(s, dag, 1, &now);
    cr_assert_eq(st.runs_ok, 1);
    dg_run *run = dg_sched_runs(s);
    cr_assert_eq(run->state, DG_RUN_SUCCESS);

    /* clear a task of layer 20: it runs again, alone */
    size_t t = 20 * W + 7;
    uint64_t before = dg_sched_evaluations(s);
    cr_assert_eq(dg_sched_clear_ti(s, run, t, now), 0);
    log_t l = tick(s, now);
    cr_assert_eq(count(&l, DG_CMD_START), 1);
    cr_assert_eq(first(&l, DG_CMD_START)->task, t);
    uint64_t cost = dg_sched_evaluations(s) - before;
    cr_assert_leq(cost, 2 + W + 1, "clear looked at %lu task instances", (unsigned long)cost);
    log_free(&l);
    finish(s, run, t, 0, now);
    l = tick(s, now);
    cr_assert_eq(run->state, DG_RUN_SUCCESS);
    log_free(&l);

    /* a fresh run: mark a task of the first layer success by hand while its siblings
     * run; only its downstream layer is looked at, and it keeps waiting */
    dg_run *r2 = dg_sched_add_run(s, dag, "second", now);
    l = tick(s, now);
    cr_assert_eq(count(&l, DG_CMD_START), W);
    log_free(&l);
    before = dg_sched_evaluations(s);
    cr_assert_eq(dg_sched_clear_ti(s, r2, 0, now), -EBUSY);
    cr_assert_eq(dg_sched_mark_ti(s, r2, 0, DG_TI_SUCCESS, now), 0);
    l = tick(s, now);
    cost = dg_sched_evaluations(s) - before;
    cr_assert_leq(cost, W + 1, "mark looked at %lu task instances", (unsigned long)cost);
    cr_assert_eq(count(&l, DG_CMD_START), 0);
    cr_assert_eq(r2->ti[W].state, DG_TI_NONE);
    log_free(&l);
    dg_sched_free(s);
    dg_layered_dag_free(dag);
}

/* A task marked failed after it succeeded changes what its downstream tasks count
 * (success → failed, both finished): they are looked at again and end upstream_failed. */
Test(sched_scale, success_marked_failed_reaches_downstream) {
    dg_dag *dag = dg_layered_dag("marks", 3, 2);
    dg_sched_opts o = {.parallelism = 8};
    dg_sched *s = dg_sched_new(&o);
    dg_run *r = dg_sched_add_run(s, dag, "r", 0);
    log_t l = tick(s, 1);
    log_free(&l);
    finish(s, r, 0, 0, 2);
    l = tick(s, 2);
    log_free(&l);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    cr_assert_eq(r->ti[2].state, DG_TI_NONE, "waits for task 1");
    cr_assert_eq(dg_sched_mark_ti(s, r, 0, DG_TI_FAILED, 3), 0);
    l = tick(s, 3);
    cr_assert_eq(r->ti[2].state, DG_TI_UPSTREAM_FAILED);
    cr_assert_eq(r->ti[3].state, DG_TI_UPSTREAM_FAILED);
    cr_assert_eq(r->ti[4].state, DG_TI_UPSTREAM_FAILED, "and on down the layers");
    log_free(&l);
    dg_sched_free(s);
    dg_layered_dag_free(dag);
}
