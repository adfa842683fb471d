/* Unit tests for the scheduler state machine, driven by a fake clock and a fake
 * driver that records every command. DAGs are built by hand here so these tests do
 * not depend on the DAG parser. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "dagd/sched.h"
#include "dagd/util.h"

/* ---- a tiny DAG builder: "a b:a c:a,b" = task ids with their upstreams ---- */

static char **strv1(const char *a) {
    char **v = xcalloc(2, sizeof(char *));
    v[0] = xstrdup(a);
    return v;
}

static ssize_t tix(const dg_dag *dag, const char *id) {
    for (size_t i = 0; i < dag->n_tasks; i++)
        if (strcmp(dag->tasks[i].id, id) == 0) return (ssize_t)i;
    cr_assert_fail("no task %s", id);
    return -1;
}

static void link_dag(dg_dag *dag) {
    size_t n = dag->n_tasks;
    for (size_t i = 0; i < n; i++) {
        dg_task *t = &dag->tasks[i];
        free(t->upstream);
        free(t->downstream);
        t->n_upstream = dg_strv_len(t->depends_on);
        t->upstream = xcalloc(t->n_upstream + 1, sizeof(size_t));
        for (size_t k = 0; k < t->n_upstream; k++) t->upstream[k] = (size_t)tix(dag, t->depends_on[k]);
        t->n_downstream = 0;
        t->downstream = xcalloc(n + 1, sizeof(size_t));
    }
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < dag->tasks[i].n_upstream; k++) {
            dg_task *u = &dag->tasks[dag->tasks[i].upstream[k]];
            u->downstream[u->n_downstream++] = i;
        }
    /* Kahn's algorithm, file order among ready tasks. */
    free(dag->topo);
    dag->topo = xcalloc(n + 1, sizeof(size_t));
    _cleanup_free_ size_t *indeg = xcalloc(n + 1, sizeof(size_t));
    _cleanup_free_ bool *done = xcalloc(n + 1, sizeof(bool));
    for (size_t i = 0; i < n; i++) indeg[i] = dag->tasks[i].n_upstream;
    for (size_t k = 0; k < n; k++) {
        size_t pick = n;
        for (size_t i = 0; i < n && pick == n; i++)
            if (!done[i] && indeg[i] == 0) pick = i;
        cr_assert(pick < n, "cycle in test dag");
        done[pick] = true;
        dag->topo[k] = pick;
        for (size_t d = 0; d < dag->tasks[pick].n_downstream; d++) indeg[dag->tasks[pick].downstream[d]]--;
    }
}

static dg_dag *mk_dag(const char *dag_id, const char *spec) {
    dg_dag *dag = xcalloc(1, sizeof *dag);
    dag->dag_id = xstrdup(dag_id);
    dag->max_active_runs = 16;
    dag->max_active_tasks = 16;
    char **words = NULL;
    size_t n = 0;
    cr_assert_eq(dg_split_words(spec, &words, &n), 0);
    dag->n_tasks = n;
    dag->tasks = xcalloc(n + 1, sizeof(dg_task));
    for (size_t i = 0; i < n; i++) {
        dg_task *t = &dag->tasks[i];
        char *colon = strchr(words[i], ':');
        t->id = colon ? xstrndup(words[i], (size_t)(colon - words[i])) : xstrdup(words[i]);
        t->kind = DG_KIND_CONTAINER;
        t->priority_weight = 1;
        t->retry_delay_ms = 300000;
        t->depends_on = xcalloc(n + 1, sizeof(char *));
        if (colon) {
            size_t k = 0;
            for (char *p = colon + 1, *e; *p; p = *e ? e + 1 : e) {
                e = strchrnul(p, ',');
                t->depends_on[k++] = xstrndup(p, (size_t)(e - p));
            }
        }
    }
    dg_strv_free(words);
    link_dag(dag);
    return dag;
}

static void free_dag(dg_dag *dag) {
    if (!dag) return;
    for (size_t i = 0; i < dag->n_tasks; i++) {
        dg_task *t = &dag->tasks[i];
        free(t->id);
        dg_strv_free(t->depends_on);
        free(t->upstream);
        free(t->downstream);
        free(t->skip_on_exit_code);
        free(t->pool);
        dg_strv_free(t->on_failure);
        dg_strv_free(t->on_success);
        dg_strv_free(t->on_retry);
    }
    free(dag->tasks);
    free(dag->topo);
    free(dag->dag_id);
    dg_strv_free(dag->on_failure);
    dg_strv_free(dag->on_success);
    free(dag);
}

static void set_skip_code(dg_task *t, int code) {
    t->skip_on_exit_code = xcalloc(1, sizeof(int));
    t->skip_on_exit_code[0] = code;
    t->n_skip_on_exit_code = 1;
}

/* ---- the fake driver: a clock and a log of every command ---- */

typedef struct h {
    dg_sched *s;
    int64_t now;
    dg_cmd *log;
    size_t n, cap;
} h;

static void drain(h *x) {
    dg_cmd *c = NULL;
    size_t n = dg_sched_take_cmds(x->s, &c);
    if (x->n + n > x->cap) {
        x->cap = (x->n + n) * 2 + 16;
        x->log = xrealloc(x->log, x->cap * sizeof(dg_cmd));
    }
    if (n) memcpy(x->log + x->n, c, n * sizeof(dg_cmd));
    x->n += n;
    free(c);
}

static h *h_new(const dg_sched_opts *o) {
    h *x = xcalloc(1, sizeof *x);
    x->s = dg_sched_new(o);
    return x;
}

static void h_free(h *x) {
    dg_sched_free(x->s);
    free(x->log);
    free(x);
}

static void tick(h *x) {
    dg_sched_tick(x->s, x->now);
    drain(x);
}

static void started(h *x, dg_run *r, size_t t) {
    dg_sched_on_started(x->s, r, t, r->ti[t].try_number, x->now);
    drain(x);
}

static void finish_res(h *x, dg_run *r, size_t t, dg_result_type type, int code, const char *msg) {
    dg_result res = {.type = type, .exit_code = code, .message = msg};
    dg_sched_on_finished(x->s, r, t, r->ti[t].try_number, &res, x->now);
    drain(x);
    tick(x);
}

/* Start (if only queued) and finish the current try with an exit code, then tick. */
static void run_exit(h *x, dg_run *r, size_t t, int code) {
    if (r->ti[t].state == DG_TI_QUEUED) started(x, r, t);
    finish_res(x, r, t, DG_RES_EXITED, code, NULL);
}

static size_t count_cmd(const h *x, size_t from, dg_cmd_type type, const dg_run *r, size_t task) {
    size_t n = 0;
    for (size_t i = from; i < x->n; i++)
        if (x->log[i].type == type && (!r || x->log[i].run == r) && (task == (size_t)-2 || x->log[i].task == task))
            n++;
    return n;
}
#define ANY ((size_t)-2)

static const dg_cmd *find_cmd(const h *x, size_t from, dg_cmd_type type, const dg_run *r, size_t task) {
    for (size_t i = from; i < x->n; i++)
        if (x->log[i].type == type && (!r || x->log[i].run == r) && (task == ANY || x->log[i].task == task))
            return &x->log[i];
    return NULL;
}

/* ---- names and pure functions ---- */

Test(sched, state_names) {
    for (int i = 0; i < _DG_TI_MAX; i++) {
        const char *n = dg_ti_state_name(i);
        cr_assert_not_null(n);
        cr_assert_eq(dg_ti_state_from_name(n), i);
    }
    cr_assert_str_eq(dg_ti_state_name(DG_TI_UP_FOR_RETRY), "up_for_retry");
    cr_assert_str_eq(dg_ti_state_name(DG_TI_UPSTREAM_FAILED), "upstream_failed");
    cr_assert_str_eq(dg_ti_state_name(DG_TI_NONE), "none");
    cr_assert_lt(dg_ti_state_from_name("bogus"), 0);
    cr_assert_lt(dg_ti_state_from_name(NULL), 0);
    cr_assert_null(dg_ti_state_name(_DG_TI_MAX));
    const char *runs[] = {"queued", "running", "success", "failed"};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(dg_run_state_name(i), runs[i]);
        cr_assert_eq(dg_run_state_from_name(runs[i]), i);
    }
    cr_assert_lt(dg_run_state_from_name("none"), 0);
    cr_assert(dg_ti_state_finished(DG_TI_SKIPPED));
    cr_assert(dg_ti_state_finished(DG_TI_UPSTREAM_FAILED));
    cr_assert(!dg_ti_state_finished(DG_TI_UP_FOR_RETRY));
    cr_assert(!dg_ti_state_finished(DG_TI_RUNNING));
}

Test(sched, retry_delay_formula) {
    dg_task t = {.retry_delay_ms = 1000};
    cr_assert_eq(dg_sched_retry_delay(&t, 2, 0), 1000);
    cr_assert_eq(dg_sched_retry_delay(&t, 5, 0), 1000);
    t.max_retry_delay_ms = 500;
    cr_assert_eq(dg_sched_retry_delay(&t, 2, 0), 500);
    t.max_retry_delay_ms = 0;
    t.retry_exponential_backoff = true;
    cr_assert_eq(dg_sched_retry_delay(&t, 2, 0), 1000);
    cr_assert_eq(dg_sched_retry_delay(&t, 3, 0), 2000);
    cr_assert_eq(dg_sched_retry_delay(&t, 4, 0), 4000);
    cr_assert_eq(dg_sched_retry_delay(&t, 6, 0), 16000);
    /* default cap: given, or 24h when none is given */
    cr_assert_eq(dg_sched_retry_delay(&t, 6, 10000), 10000);
    cr_assert_eq(dg_sched_retry_delay(&t, 40, 0), 24LL * 3600 * 1000);
    t.max_retry_delay_ms = 5000;
    cr_assert_eq(dg_sched_retry_delay(&t, 4, 10000), 4000);
    cr_assert_eq(dg_sched_retry_delay(&t, 5, 10000), 5000);
    /* overflow saturates instead of wrapping */
    t.max_retry_delay_ms = 0;
    cr_assert_eq(dg_sched_retry_delay(&t, 1000, INT64_MAX), INT64_MAX);
    t.retry_delay_ms = INT64_MAX / 3;
    cr_assert_eq(dg_sched_retry_delay(&t, 4, INT64_MAX), INT64_MAX);
    cr_assert_eq(dg_sched_retry_delay(&t, 2, INT64_MAX), INT64_MAX / 3);
}

/* ---- basic flows ---- */

Test(sched, chain_exact_commands) {
    dg_dag *dag = mk_dag("d", "a b:a c:b");
    h *x = h_new(NULL);
    x->now = 1000;
    dg_run *r = dg_sched_add_run(x->s, dag, "manual__1", x->now);
    drain(x);
    cr_assert_eq(x->n, 1);
    cr_assert_eq(x->log[0].type, DG_CMD_RUN_CHANGED);
    cr_assert_eq(r->state, DG_RUN_QUEUED);
    cr_assert_str_eq(r->run_id, "manual__1");

    x->now = 2000;
    tick(x);
    /* queued→running, a: none→scheduled→queued + START, b: PREPARE */
    dg_cmd_type want[] = {DG_CMD_RUN_CHANGED, DG_CMD_RUN_CHANGED, DG_CMD_TI_CHANGED,
                          DG_CMD_TI_CHANGED, DG_CMD_START, DG_CMD_PREPARE};
    size_t want_task[] = {SIZE_MAX, SIZE_MAX, 0, 0, 0, 1};
    cr_assert_eq(x->n, ARRAY_SIZE(want));
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        cr_assert_eq(x->log[i].type, want[i], "cmd %zu", i);
        cr_assert_eq(x->log[i].task, want_task[i], "cmd %zu", i);
    }
    cr_assert_eq(x->log[4].try_number, 1);
    cr_assert_eq(r->state, DG_RUN_RUNNING);
    cr_assert_eq(r->start_ms, 2000);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[0].try_number, 1);
    cr_assert_eq(r->ti[0].start_ms, 2000);
    cr_assert(r->ti[0].holds_slot);
    cr_assert(r->ti[1].prepared);
    cr_assert_eq(r->ti[1].state, DG_TI_NONE);
    cr_assert_eq(dg_sched_running(x->s), 1);

    /* a tick with nothing to do emits nothing */
    size_t m = x->n;
    tick(x);
    cr_assert_eq(x->n, m);

    started(x, r, 0);
    cr_assert_eq(x->n, m + 1);
    cr_assert_eq(r->ti[0].state, DG_TI_RUNNING);
    cr_assert_eq(r->ti[0].deadline_ms, 0);

    x->now = 5000;
    m = x->n;
    finish_res(x, r, 0, DG_RES_EXITED, 0, NULL);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    cr_assert_eq(r->ti[0].end_ms, 5000);
    cr_assert(r->ti[0].has_exit_code);
    cr_assert_eq(r->ti[0].exit_code, 0);
    cr_assert(!r->ti[0].holds_slot);
    cr_assert_eq(r->ti[1].state, DG_TI_QUEUED);
    cr_assert(r->ti[1].prepared, "prepared stays true when try 1 starts");
    cr_assert_eq(count_cmd(x, m, DG_CMD_START, r, 1), 1);
    cr_assert_eq(count_cmd(x, m, DG_CMD_PREPARE, r, 2), 1);
    cr_assert_eq(count_cmd(x, m, DG_CMD_UNPREPARE, r, ANY), 0);

    run_exit(x, r, 1, 0);
    cr_assert_eq(r->state, DG_RUN_RUNNING);
    x->now = 9000;
    run_exit(x, r, 2, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    cr_assert_eq(r->end_ms, 9000);
    cr_assert_eq(x->log[x->n - 1].type, DG_CMD_RUN_CHANGED);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_NOTIFY, NULL, ANY), 0);
    cr_assert_eq(dg_sched_running(x->s), 0);
    cr_assert_eq(dg_sched_next_wakeup(x->s), -1);
    cr_assert_eq(dg_sched_runs(x->s), r);
    dg_sched_remove_run(x->s, r);
    cr_assert_null(dg_sched_runs(x->s));
    h_free(x);
    free_dag(dag);
}

Test(sched, fan_out_fan_in) {
    dg_dag *dag = mk_dag("d", "a b:a c:a d:a e:b,c,d");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    run_exit(x, r, 0, 0);
    for (size_t i = 1; i <= 3; i++) cr_assert_eq(r->ti[i].state, DG_TI_QUEUED);
    cr_assert_eq(dg_sched_running(x->s), 3);
    cr_assert(r->ti[4].prepared);
    run_exit(x, r, 1, 0);
    run_exit(x, r, 3, 0);
    cr_assert_eq(r->ti[4].state, DG_TI_NONE);
    run_exit(x, r, 2, 0);
    cr_assert_eq(r->ti[4].state, DG_TI_QUEUED);
    run_exit(x, r, 4, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, empty_dag_succeeds) {
    dg_dag *dag = mk_dag("d", "");
    dag->on_success = strv1("ops");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    const dg_cmd *c = find_cmd(x, 0, DG_CMD_NOTIFY, r, SIZE_MAX);
    cr_assert_not_null(c);
    cr_assert_eq(c->event, DG_EVENT_SUCCESS);
    h_free(x);
    free_dag(dag);
}

/* ---- trigger rules, table-driven ----
 * Upstreams u0..u2 end as: S success, F failed, K skipped (skip_on_exit_code),
 * U upstream_failed (their own upstream failed), '.' still running.
 * Outcomes are delivered left to right, each followed by a tick, so eager rules
 * decide on the first deciding outcome. Expected state of t: r = ran
 * (scheduled/queued), n = none, u = upstream_failed, k = skipped. */

typedef struct rule_case {
    dg_trigger_rule rule;
    const char *ups;
    char want;
} rule_case;

static const rule_case rule_cases[] = {
    {DG_TR_ALL_SUCCESS, "SSS", 'r'}, {DG_TR_ALL_SUCCESS, "SSF", 'u'},
    {DG_TR_ALL_SUCCESS, "SSK", 'k'}, {DG_TR_ALL_SUCCESS, "SFK", 'u'}, {DG_TR_ALL_SUCCESS, "SKF", 'u'},
    {DG_TR_ALL_SUCCESS, "S.F", 'u'}, {DG_TR_ALL_SUCCESS, "S.K", 'n'},
    {DG_TR_ALL_SUCCESS, "SS.", 'n'}, {DG_TR_ALL_SUCCESS, "SSU", 'u'},
    {DG_TR_ALL_FAILED, "FFF", 'r'}, {DG_TR_ALL_FAILED, "FFU", 'r'},
    {DG_TR_ALL_FAILED, "FFS", 'k'}, {DG_TR_ALL_FAILED, "F.S", 'k'},
    {DG_TR_ALL_FAILED, "F.K", 'k'}, {DG_TR_ALL_FAILED, "FF.", 'n'},
    {DG_TR_ALL_DONE, "SFK", 'r'}, {DG_TR_ALL_DONE, "UUK", 'r'},
    {DG_TR_ALL_DONE, "SF.", 'n'},
    {DG_TR_ONE_SUCCESS, "S..", 'r'}, {DG_TR_ONE_SUCCESS, "FFF", 'u'},
    {DG_TR_ONE_SUCCESS, "FKU", 'u'}, {DG_TR_ONE_SUCCESS, "KKK", 'k'},
    {DG_TR_ONE_SUCCESS, "F..", 'n'},
    {DG_TR_ONE_FAILED, "F..", 'r'}, {DG_TR_ONE_FAILED, "U..", 'r'},
    {DG_TR_ONE_FAILED, "SSK", 'k'}, {DG_TR_ONE_FAILED, "SS.", 'n'},
    {DG_TR_ONE_DONE, "S..", 'r'}, {DG_TR_ONE_DONE, "F..", 'r'},
    {DG_TR_ONE_DONE, "KKK", 'k'}, {DG_TR_ONE_DONE, "UUK", 'k'},
    {DG_TR_ONE_DONE, "K..", 'n'}, {DG_TR_ONE_DONE, "U..", 'n'},
    {DG_TR_NONE_FAILED, "SSK", 'r'}, {DG_TR_NONE_FAILED, "KKK", 'r'},
    {DG_TR_NONE_FAILED, "SSF", 'u'}, {DG_TR_NONE_FAILED, "SSU", 'u'},
    {DG_TR_NONE_FAILED, "SF.", 'n'},
    {DG_TR_NONE_FAILED_MIN_ONE_SUCCESS, "SKK", 'r'},
    {DG_TR_NONE_FAILED_MIN_ONE_SUCCESS, "KKK", 'k'},
    {DG_TR_NONE_FAILED_MIN_ONE_SUCCESS, "SKF", 'u'},
    {DG_TR_NONE_FAILED_MIN_ONE_SUCCESS, "SKU", 'u'},
    {DG_TR_NONE_FAILED_MIN_ONE_SUCCESS, "S..", 'n'},
    {DG_TR_NONE_SKIPPED, "SSS", 'r'}, {DG_TR_NONE_SKIPPED, "SFU", 'r'},
    {DG_TR_NONE_SKIPPED, "SSK", 'k'}, {DG_TR_NONE_SKIPPED, "K..", 'n'},
    {DG_TR_ALL_SKIPPED, "KKK", 'r'}, {DG_TR_ALL_SKIPPED, "KK.", 'n'},
    {DG_TR_ALL_SKIPPED, "K.S", 'k'}, {DG_TR_ALL_SKIPPED, "F..", 'k'},
    {DG_TR_ALL_SKIPPED, "U..", 'k'},
    {DG_TR_ALWAYS, "...", 'r'}, {DG_TR_ALWAYS, "FFF", 'r'},
};

static char run_rule_case(const rule_case *rc) {
    /* f fails; uN depends on f only when it must end upstream_failed. */
    char spec[128] = "f";
    for (int i = 0; i < 3; i++)
        snprintf(spec + strlen(spec), sizeof spec - strlen(spec), " u%d%s", i, rc->ups[i] == 'U' ? ":f" : "");
    strcat(spec, " t:u0,u1,u2");
    dg_dag *dag = mk_dag("d", spec);
    size_t t = (size_t)tix(dag, "t");
    dag->tasks[t].trigger_rule = rc->rule;
    for (int i = 0; i < 3; i++) set_skip_code(&dag->tasks[1 + i], 3);
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    run_exit(x, r, 0, 1);
    for (int i = 0; i < 3; i++) {
        size_t u = 1 + (size_t)i;
        switch (rc->ups[i]) {
        case 'S': run_exit(x, r, u, 0); break;
        case 'F': run_exit(x, r, u, 1); break;
        case 'K': run_exit(x, r, u, 3); break;
        case 'U': cr_assert_eq(r->ti[u].state, DG_TI_UPSTREAM_FAILED); break;
        default: cr_assert_eq(r->ti[u].state, DG_TI_QUEUED); break;
        }
    }
    char got;
    switch (r->ti[t].state) {
    case DG_TI_SCHEDULED:
    case DG_TI_QUEUED: got = 'r'; break;
    case DG_TI_NONE: got = 'n'; break;
    case DG_TI_UPSTREAM_FAILED: got = 'u'; break;
    case DG_TI_SKIPPED: got = 'k'; break;
    default: got = '?'; break;
    }
    /* finishing the dag keeps the run-state rule */
    for (int i = 0; i < 3; i++)
        if (r->ti[1 + i].state == DG_TI_QUEUED) run_exit(x, r, 1 + (size_t)i, 0);
    if (r->ti[t].state == DG_TI_QUEUED) run_exit(x, r, t, 0);
    cr_assert(dg_ti_state_finished(r->ti[t].state));
    cr_assert_eq(r->state, DG_RUN_FAILED, "f failed, so the run failed");
    h_free(x);
    free_dag(dag);
    return got;
}

Test(sched, trigger_rules_table) {
    bool seen[_DG_TR_MAX] = {0};
    for (size_t i = 0; i < ARRAY_SIZE(rule_cases); i++) {
        const rule_case *rc = &rule_cases[i];
        seen[rc->rule] = true;
        char got = run_rule_case(rc);
        cr_expect_eq(got, rc->want, "rule %d with upstreams %s: want %c got %c", rc->rule,
                     rc->ups, rc->want, got);
    }
    for (int i = 0; i < _DG_TR_MAX; i++) cr_assert(seen[i], "rule %d not covered", i);
}

Test(sched, task_without_upstream_runs_whatever_the_rule) {
    for (int rule = 0; rule < _DG_TR_MAX; rule++) {
        dg_dag *dag = mk_dag("d", "a");
        dag->tasks[0].trigger_rule = rule;
        h *x = h_new(NULL);
        dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
        tick(x);
        cr_assert_eq(r->ti[0].state, DG_TI_QUEUED, "rule %d", rule);
        h_free(x);
        free_dag(dag);
    }
}

Test(sched, skip_chain_settles_in_one_tick) {
    dg_dag *dag = mk_dag("d", "a b:a c:b d:c e:d");
    set_skip_code(&dag->tasks[0], 99);
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    run_exit(x, r, 0, 99);
    cr_assert_eq(r->ti[0].state, DG_TI_SKIPPED);
    cr_assert_str_eq(r->ti[0].message, "skipped: exit code 99");
    cr_assert_eq(r->ti[0].exit_code, 99);
    for (size_t i = 1; i < 5; i++) cr_assert_eq(r->ti[i].state, DG_TI_SKIPPED);
    cr_assert_eq(r->state, DG_RUN_SUCCESS, "skips alone do not fail a run");
    cr_assert(!r->ti[1].prepared);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_UNPREPARE, r, 1), 1);
    h_free(x);
    free_dag(dag);
}

/* ---- retries, timeouts ---- */

Test(sched, retries_with_exponential_delay_and_cap) {
    dg_dag *dag = mk_dag("d", "a b:a");
    dg_task *a = &dag->tasks[0];
    a->retries = 3;
    a->retry_delay_ms = 10000;
    a->retry_exponential_backoff = true;
    a->max_retry_delay_ms = 15000;
    a->on_retry = strv1("chat");
    a->on_failure = strv1("ops");
    dag->on_failure = strv1("ops");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    dg_ti *ti = &r->ti[0];
    cr_assert_eq(ti->max_tries, 4);
    tick(x);
    x->now = 1000;
    size_t m = x->n;
    run_exit(x, r, 0, 2);
    cr_assert_eq(ti->state, DG_TI_UP_FOR_RETRY);
    cr_assert_str_eq(ti->message, "exit code 2");
    cr_assert_eq(ti->not_before_ms, 11000);
    cr_assert(!ti->holds_slot);
    cr_assert_eq(ti->end_ms, 0);
    const dg_cmd *n = find_cmd(x, m, DG_CMD_NOTIFY, r, 0);
    cr_assert_not_null(n);
    cr_assert_eq(n->event, DG_EVENT_RETRY);
    cr_assert_eq(dg_sched_next_wakeup(x->s), 11000);

    x->now = 10999;
    m = x->n;
    tick(x);
    cr_assert_eq(x->n, m, "nothing before the retry is due");
    x->now = 11000;
    tick(x);
    cr_assert_eq(ti->state, DG_TI_QUEUED);
    cr_assert_eq(ti->try_number, 2);
    cr_assert_null(ti->message);
    const dg_cmd *st = find_cmd(x, m, DG_CMD_START, r, 0);
    cr_assert_not_null(st);
    cr_assert_eq(st->try_number, 2);
    cr_assert_eq(dg_sched_next_wakeup(x->s), -1);

    x->now = 12000;
    run_exit(x, r, 0, 1);
    cr_assert_eq(ti->not_before_ms, 12000 + 15000, "20s capped at 15s");
    x->now = 27000;
    tick(x);
    x->now = 28000;
    run_exit(x, r, 0, 1);
    cr_assert_eq(ti->state, DG_TI_UP_FOR_RETRY);
    cr_assert_eq(ti->not_before_ms, 28000 + 15000);
    x->now = 43000;
    tick(x);
    cr_assert_eq(ti->try_number, 4);
    x->now = 44000;
    m = x->n;
    run_exit(x, r, 0, 1);
    cr_assert_eq(ti->state, DG_TI_FAILED);
    cr_assert_eq(ti->end_ms, 44000);
    n = find_cmd(x, m, DG_CMD_NOTIFY, r, 0);
    cr_assert_not_null(n);
    cr_assert_eq(n->event, DG_EVENT_FAILURE);
    cr_assert_eq(r->ti[1].state, DG_TI_UPSTREAM_FAILED);
    cr_assert_eq(r->state, DG_RUN_FAILED);
    n = find_cmd(x, m, DG_CMD_NOTIFY, r, SIZE_MAX);
    cr_assert_not_null(n);
    cr_assert_eq(n->event, DG_EVENT_FAILURE);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_NOTIFY, r, 0), 4, "3 retries + 1 failure");
    cr_assert_eq(count_cmd(x, 0, DG_CMD_START, r, 0), 4);
    h_free(x);
    free_dag(dag);
}

Test(sched, retry_holds_no_slot) {
    dg_dag *dag = mk_dag("d", "a b");
    dag->tasks[0].priority_weight = 10;
    dag->tasks[0].retries = 1;
    dag->tasks[0].retry_delay_ms = 60000;
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[1].state, DG_TI_SCHEDULED);
    x->now = 1000;
    run_exit(x, r, 0, 1);
    cr_assert_eq(r->ti[0].state, DG_TI_UP_FOR_RETRY);
    cr_assert_eq(r->ti[1].state, DG_TI_QUEUED, "b took the free slot");
    started(x, r, 1);
    x->now = 61000;
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_SCHEDULED, "due, but no slot");
    cr_assert_eq(dg_sched_running(x->s), 1);
    cr_assert_eq(dg_sched_next_wakeup(x->s), -1, "a due task waiting for a slot needs no timer");
    x->now = 70000;
    run_exit(x, r, 1, 0);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[0].try_number, 2);
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, timeout_stops_then_fails_then_retries) {
    dg_dag *dag = mk_dag("d", "a");
    dag->tasks[0].timeout_ms = 30000;
    dag->tasks[0].retries = 1;
    dag->tasks[0].retry_delay_ms = 5000;
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    dg_ti *ti = &r->ti[0];
    tick(x);
    x->now = 100;
    started(x, r, 0);
    cr_assert_eq(ti->deadline_ms, 30100);
    cr_assert_eq(dg_sched_next_wakeup(x->s), 30100);
    x->now = 30099;
    size_t m = x->n;
    tick(x);
    cr_assert_eq(count_cmd(x, m, DG_CMD_STOP, r, 0), 0);
    x->now = 30100;
    tick(x);
    const dg_cmd *c = find_cmd(x, m, DG_CMD_STOP, r, 0);
    cr_assert_not_null(c);
    cr_assert_eq(c->reason, DG_STOP_TIMEOUT);
    cr_assert_eq(c->try_number, 1);
    cr_assert(ti->stopping && ti->timed_out);
    cr_assert_eq(ti->state, DG_TI_RUNNING);
    cr_assert_eq(dg_sched_next_wakeup(x->s), -1);
    x->now = 31000;
    tick(x);
    cr_assert_eq(count_cmd(x, m, DG_CMD_STOP, r, 0), 1, "one STOP per try");
    finish_res(x, r, 0, DG_RES_EXITED, 143, NULL);
    cr_assert_eq(ti->state, DG_TI_UP_FOR_RETRY);
    cr_assert_str_eq(ti->message, "timed out after 30s");
    cr_assert_eq(ti->exit_code, 143);
    cr_assert(!ti->stopping && !ti->timed_out);
    cr_assert_eq(ti->deadline_ms, 0);
    cr_assert_eq(ti->not_before_ms, 36000);
    x->now = 36000;
    tick(x);
    cr_assert_eq(ti->try_number, 2);
    started(x, r, 0);
    cr_assert_eq(ti->deadline_ms, 66000);
    run_exit(x, r, 0, 0);
    cr_assert_eq(ti->state, DG_TI_SUCCESS);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, error_result_and_success_notification) {
    dg_dag *dag = mk_dag("d", "a b");
    dag->tasks[0].on_success = strv1("ops");
    dag->tasks[1].on_failure = strv1("ops");
    dag->on_success = strv1("ops");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    run_exit(x, r, 0, 0);
    const dg_cmd *c = find_cmd(x, 0, DG_CMD_NOTIFY, r, 0);
    cr_assert_not_null(c);
    cr_assert_eq(c->event, DG_EVENT_SUCCESS);
    finish_res(x, r, 1, DG_RES_ERROR, 0, "image not found: x");
    cr_assert_eq(r->ti[1].state, DG_TI_FAILED);
    cr_assert_str_eq(r->ti[1].message, "image not found: x");
    cr_assert(!r->ti[1].has_exit_code);
    c = find_cmd(x, 0, DG_CMD_NOTIFY, r, 1);
    cr_assert_not_null(c);
    cr_assert_eq(c->event, DG_EVENT_FAILURE);
    cr_assert_eq(r->state, DG_RUN_FAILED);
    cr_assert_null(find_cmd(x, 0, DG_CMD_NOTIFY, r, SIZE_MAX), "the dag has only on_success");
    h_free(x);
    free_dag(dag);
}

/* ---- ordering and limits ---- */

static size_t start_order(const h *x, const dg_run **runs, size_t *tasks, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < x->n && n < max; i++)
        if (x->log[i].type == DG_CMD_START) {
            runs[n] = x->log[i].run;
            tasks[n++] = x->log[i].task;
        }
    return n;
}

Test(sched, priority_weight_order) {
    /* effective weights: a = 1+1 = 2, b = 1, c = 5, d = 2 (ties a, after a in topo) */
    dg_dag *dag = mk_dag("d", "a b:a c d");
    dag->tasks[2].priority_weight = 5;
    dag->tasks[3].priority_weight = 2;
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    for (int i = 0; i < 4; i++) {
        for (size_t t = 0; t < 4; t++)
            if (r->ti[t].state == DG_TI_QUEUED) {
                run_exit(x, r, t, 0);
                break;
            }
    }
    const dg_run *runs[8];
    size_t tasks[8];
    cr_assert_eq(start_order(x, runs, tasks, 8), 4);
    size_t want[] = {2, 0, 3, 1};
    for (int i = 0; i < 4; i++) cr_assert_eq(tasks[i], want[i], "start %d", i);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, older_run_then_topo_order) {
    dg_dag *dag = mk_dag("d", "a b");
    dag->topo[0] = 1; /* independent tasks: topo order b, a */
    dag->topo[1] = 0;
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    dg_run *r1 = dg_sched_add_run(x->s, dag, "r1", 0);
    dg_run *r2 = dg_sched_add_run(x->s, dag, "r2", 0);
    tick(x);
    for (int i = 0; i < 4; i++) {
        dg_run *rs[2] = {r1, r2};
        for (int k = 0; k < 2; k++)
            for (size_t t = 0; t < 2; t++)
                if (rs[k]->ti[t].state == DG_TI_QUEUED) run_exit(x, rs[k], t, 0);
    }
    const dg_run *runs[8];
    size_t tasks[8];
    cr_assert_eq(start_order(x, runs, tasks, 8), 4);
    cr_assert(runs[0] == r1 && tasks[0] == 1);
    cr_assert(runs[1] == r1 && tasks[1] == 0);
    cr_assert(runs[2] == r2 && tasks[2] == 1);
    cr_assert(runs[3] == r2 && tasks[3] == 0);
    h_free(x);
    free_dag(dag);
}

Test(sched, max_active_runs) {
    dg_dag *dag = mk_dag("d", "a");
    dag->max_active_runs = 1;
    dg_dag *other = mk_dag("e", "a");
    other->max_active_runs = 1;
    h *x = h_new(NULL);
    dg_run *r1 = dg_sched_add_run(x->s, dag, "r1", 0);
    dg_run *r2 = dg_sched_add_run(x->s, dag, "r2", 0);
    dg_run *r3 = dg_sched_add_run(x->s, other, "r3", 0);
    tick(x);
    cr_assert_eq(r1->state, DG_RUN_RUNNING);
    cr_assert_eq(r2->state, DG_RUN_QUEUED);
    cr_assert_eq(r3->state, DG_RUN_RUNNING, "limits are per dag");
    cr_assert_eq(r2->ti[0].state, DG_TI_NONE);
    x->now = 5;
    run_exit(x, r1, 0, 0);
    cr_assert_eq(r1->state, DG_RUN_SUCCESS);
    cr_assert_eq(r2->state, DG_RUN_RUNNING, "started in the same tick");
    cr_assert_eq(r2->start_ms, 5);
    cr_assert_eq(r2->ti[0].state, DG_TI_QUEUED);
    h_free(x);
    free_dag(dag);
    free_dag(other);
}

Test(sched, max_active_tasks_across_runs) {
    dg_dag *dag = mk_dag("d", "a b c");
    dag->max_active_tasks = 2;
    h *x = h_new(NULL);
    dg_run *r1 = dg_sched_add_run(x->s, dag, "r1", 0);
    dg_run *r2 = dg_sched_add_run(x->s, dag, "r2", 0);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 2);
    cr_assert_eq(r1->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(r1->ti[1].state, DG_TI_QUEUED);
    cr_assert_eq(r2->ti[0].state, DG_TI_SCHEDULED);
    run_exit(x, r1, 0, 0);
    cr_assert_eq(dg_sched_running(x->s), 2);
    cr_assert_eq(r1->ti[2].state, DG_TI_QUEUED, "older run first");
    h_free(x);
    free_dag(dag);
}

Test(sched, pools_bound_tasks) {
    dg_dag *dag = mk_dag("d", "a b c d e");
    dag->tasks[0].pool = xstrdup("db");
    dag->tasks[1].pool = xstrdup("db");
    dag->tasks[2].pool = xstrdup("unlisted");
    dag->tasks[3].pool = xstrdup("unlisted");
    dg_pool_limit pools[] = {{"db", 1}, {"default_pool", 1}};
    dg_sched_opts o = {.pools = pools, .n_pools = 2};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[1].state, DG_TI_SCHEDULED);
    cr_assert_eq(r->ti[2].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[3].state, DG_TI_QUEUED);
    cr_assert_eq(r->ti[4].state, DG_TI_QUEUED, "no pool: default_pool");
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->ti[1].state, DG_TI_QUEUED);
    h_free(x);
    free_dag(dag);
}

Test(sched, default_pool_applies_to_tasks_without_pool) {
    dg_dag *dag = mk_dag("d", "a b");
    dg_pool_limit pools[] = {{"default_pool", 1}};
    dg_sched_opts o = {.pools = pools, .n_pools = 1};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 1);
    cr_assert_eq(r->ti[1].state, DG_TI_SCHEDULED);
    h_free(x);
    free_dag(dag);
}

/* ---- cancel, prepare, stale reports ---- */

Test(sched, cancel_running_run) {
    dg_dag *dag = mk_dag("d", "a b:a c d");
    dag->tasks[0].retries = 3;
    dag->tasks[2].retries = 3;
    dag->tasks[2].priority_weight = 0;
    dag->on_failure = strv1("ops");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    started(x, r, 0);
    x->now = 10;
    run_exit(x, r, 2, 1); /* c → up_for_retry */
    cr_assert_eq(r->ti[2].state, DG_TI_UP_FOR_RETRY);
    run_exit(x, r, 3, 0); /* d done */
    cr_assert(r->ti[1].prepared);
    size_t m = x->n;
    x->now = 20;
    dg_sched_cancel_run(x->s, r, x->now);
    drain(x);
    cr_assert(r->cancelled);
    const dg_cmd *c = find_cmd(x, m, DG_CMD_STOP, r, 0);
    cr_assert_not_null(c);
    cr_assert_eq(c->reason, DG_STOP_CANCEL);
    cr_assert_eq(c->try_number, 1);
    cr_assert_eq(r->ti[1].state, DG_TI_SKIPPED);
    cr_assert_str_eq(r->ti[1].message, "run cancelled");
    cr_assert_eq(count_cmd(x, m, DG_CMD_UNPREPARE, r, 1), 1);
    cr_assert_eq(r->ti[2].state, DG_TI_SKIPPED);
    cr_assert_eq(r->ti[3].state, DG_TI_SUCCESS);
    cr_assert_eq(dg_sched_next_wakeup(x->s), -1);
    dg_sched_cancel_run(x->s, r, x->now);
    drain(x);
    cr_assert_eq(count_cmd(x, m, DG_CMD_STOP, r, 0), 1, "cancel twice stops once");
    tick(x);
    cr_assert_eq(r->state, DG_RUN_RUNNING, "waits for the stopped try");
    x->now = 30;
    finish_res(x, r, 0, DG_RES_EXITED, 0, NULL);
    cr_assert_eq(r->ti[0].state, DG_TI_FAILED, "cancelled tries end failed, no retry");
    cr_assert_str_eq(r->ti[0].message, "run cancelled");
    cr_assert_eq(r->state, DG_RUN_FAILED);
    cr_assert_eq(r->end_ms, 30);
    cr_assert_not_null(find_cmd(x, m, DG_CMD_NOTIFY, r, SIZE_MAX));
    cr_assert_eq(count_cmd(x, m, DG_CMD_START, r, ANY), 0);
    h_free(x);
    free_dag(dag);
}

Test(sched, cancel_queued_run) {
    dg_dag *dag = mk_dag("d", "a b:a");
    dag->max_active_runs = 1;
    h *x = h_new(NULL);
    dg_run *r1 = dg_sched_add_run(x->s, dag, "r1", 0);
    dg_run *r2 = dg_sched_add_run(x->s, dag, "r2", 0);
    tick(x);
    dg_sched_cancel_run(x->s, r2, 1);
    drain(x);
    tick(x);
    cr_assert_eq(r2->state, DG_RUN_FAILED);
    cr_assert_eq(r2->start_ms, 0);
    cr_assert_eq(r2->ti[0].state, DG_TI_SKIPPED);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_START, r2, ANY), 0);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_STOP, r2, ANY), 0);
    cr_assert_eq(r1->state, DG_RUN_RUNNING);
    /* cancelling a finished run changes nothing */
    size_t m = x->n;
    dg_sched_cancel_run(x->s, r2, 2);
    drain(x);
    cr_assert_eq(x->n, m);
    h_free(x);
    free_dag(dag);
}

Test(sched, prepare_rules) {
    /* b: all_success container → prepared; c: sensor; d: other rule; e: two ups, one none */
    dg_dag *dag = mk_dag("d", "a b:a c:a d:a x e:a,b");
    dag->tasks[2].kind = DG_KIND_SENSOR;
    dag->tasks[3].trigger_rule = DG_TR_ALL_DONE;
    dag->max_active_runs = 1;
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    dg_run *q = dg_sched_add_run(x->s, dag, "q", 0);
    tick(x);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_PREPARE, r, ANY), 1);
    const dg_cmd *c = find_cmd(x, 0, DG_CMD_PREPARE, r, 1);
    cr_assert_not_null(c);
    cr_assert_eq(c->try_number, 1);
    cr_assert_eq(count_cmd(x, 0, DG_CMD_PREPARE, q, ANY), 0, "queued runs get no hints");
    size_t m = x->n;
    run_exit(x, r, 0, 1);
    cr_assert_eq(r->ti[1].state, DG_TI_UPSTREAM_FAILED);
    cr_assert(!r->ti[1].prepared);
    cr_assert_eq(count_cmd(x, m, DG_CMD_UNPREPARE, r, 1), 1);
    cr_assert_eq(count_cmd(x, m, DG_CMD_UNPREPARE, r, ANY), 1);
    cr_assert_eq(count_cmd(x, m, DG_CMD_PREPARE, r, ANY), 0);
    h_free(x);
    free_dag(dag);
}

/* A hint names the try it is for: after a task that ran is cleared (and its upstream
 * runs again), the container made ahead is for its next try, not for try 1 again. */
Test(sched, prepare_names_the_next_try) {
    dg_dag *dag = mk_dag("d", "a b:a");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    run_exit(x, r, 0, 0);
    run_exit(x, r, 1, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    cr_assert_eq(dg_sched_mark_ti(x->s, r, 1, DG_TI_SUCCESS, 5), 0); /* withdraws b's hint */
    cr_assert_eq(dg_sched_clear_ti(x->s, r, 0, 6), 0);
    cr_assert_eq(dg_sched_clear_ti(x->s, r, 1, 6), 0);
    size_t m = x->n;
    tick(x);
    const dg_cmd *c = find_cmd(x, m, DG_CMD_PREPARE, r, 1);
    cr_assert_not_null(c);
    cr_assert_eq(c->try_number, 2);
    run_exit(x, r, 0, 0);
    c = find_cmd(x, m, DG_CMD_START, r, 1);
    cr_assert_not_null(c);
    cr_assert_eq(c->try_number, 2);
    h_free(x);
    free_dag(dag);
}

Test(sched, stale_reports_ignored) {
    dg_dag *dag = mk_dag("d", "a");
    dag->tasks[0].retries = 1;
    dag->tasks[0].retry_delay_ms = 1000;
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    dg_result ok = {.type = DG_RES_EXITED, .exit_code = 0};
    size_t m = x->n;
    dg_sched_on_started(x->s, r, 0, 2, 0);
    dg_sched_on_finished(x->s, r, 0, 2, &ok, 0);
    dg_sched_on_finished(x->s, r, 0, 0, &ok, 0);
    dg_sched_on_started(x->s, r, 7, 1, 0);
    dg_sched_on_finished(x->s, r, 7, 1, &ok, 0);
    drain(x);
    cr_assert_eq(x->n, m);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    started(x, r, 0);
    m = x->n;
    dg_sched_on_started(x->s, r, 0, 1, 0); /* twice */
    drain(x);
    cr_assert_eq(x->n, m);
    run_exit(x, r, 0, 1);
    cr_assert_eq(r->ti[0].state, DG_TI_UP_FOR_RETRY);
    m = x->n;
    dg_sched_on_finished(x->s, r, 0, 1, &ok, 0); /* late report of try 1 */
    drain(x);
    cr_assert_eq(x->n, m);
    cr_assert_eq(r->ti[0].state, DG_TI_UP_FOR_RETRY);
    x->now = 1000;
    tick(x);
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    m = x->n;
    dg_sched_on_finished(x->s, r, 0, 2, &ok, 0); /* finished twice */
    drain(x);
    cr_assert_eq(x->n, m);
    h_free(x);
    free_dag(dag);
}

/* ---- sensors, depends_on_past ---- */

Test(sched, sensor_reschedule_and_timeout) {
    dg_dag *dag = mk_dag("d", "s b:s");
    dg_task *t = &dag->tasks[0];
    t->kind = DG_KIND_SENSOR;
    t->sensor.interval_ms = 60000;
    t->sensor.timeout_ms = 300000;
    t->sensor.reschedule = true;
    t->retries = 2;
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    dg_ti *ti = &r->ti[0];
    x->now = 1000;
    tick(x);
    cr_assert_eq(ti->first_start_ms, 1000);
    started(x, r, 0);
    x->now = 2000;
    finish_res(x, r, 0, DG_RES_NOT_YET, 0, NULL);
    cr_assert_eq(ti->state, DG_TI_SCHEDULED);
    cr_assert_eq(ti->not_before_ms, 62000);
    cr_assert(!ti->holds_slot);
    cr_assert_eq(dg_sched_running(x->s), 0);
    cr_assert_eq(ti->max_tries, 4, "a check does not use up a retry");
    cr_assert_eq(dg_sched_next_wakeup(x->s), 62000);
    x->now = 61999;
    tick(x);
    cr_assert_eq(ti->state, DG_TI_SCHEDULED);
    x->now = 62000;
    size_t m = x->n;
    tick(x);
    const dg_cmd *c = find_cmd(x, m, DG_CMD_START, r, 0);
    cr_assert_not_null(c);
    cr_assert_eq(c->try_number, 2);
    cr_assert_eq(ti->first_start_ms, 1000);
    /* keep answering not yet until the sensor timeout (5m from the first start) */
    int checks = 2;
    while (ti->state == DG_TI_QUEUED) {
        x->now += 1000;
        started(x, r, 0);
        finish_res(x, r, 0, DG_RES_NOT_YET, 0, NULL);
        if (ti->state == DG_TI_SCHEDULED) {
            x->now = ti->not_before_ms;
            tick(x);
            checks++;
        }
    }
    cr_assert_eq(ti->state, DG_TI_FAILED, "no retries after a sensor timeout");
    cr_assert_str_eq(ti->message, "sensor timed out after 5m");
    cr_assert_geq(x->now, 301000);
    cr_assert_lt(x->now, 301000 + 62000);
    cr_assert_eq(checks, 6);
    cr_assert_eq(r->ti[1].state, DG_TI_UPSTREAM_FAILED);
    cr_assert_eq(r->state, DG_RUN_FAILED);
    h_free(x);
    free_dag(dag);
}

/* soft_fail: a sensor timeout (reschedule mode, or DG_RES_SENSOR_TIMEOUT from a poking
 * one) ends the task skipped, its all_success downstream skipped and the run a success;
 * without soft_fail the poking one fails with no retry. */
Test(sched, sensor_timeout_soft_fail) {
    for (int variant = 0; variant < 3; variant++) {
        bool soft = variant < 2, resched = variant == 0;
        dg_dag *dag = mk_dag("d", "s b:s");
        dg_task *t = &dag->tasks[0];
        t->kind = DG_KIND_SENSOR;
        t->sensor.interval_ms = 1000;
        t->sensor.timeout_ms = 3000;
        t->sensor.reschedule = resched;
        t->sensor.soft_fail = soft;
        t->retries = 2;
        h *x = h_new(NULL);
        dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
        tick(x);
        started(x, r, 0);
        if (resched) {
            x->now = 3000;
            finish_res(x, r, 0, DG_RES_NOT_YET, 0, NULL);
        } else {
            x->now = 3000;
            finish_res(x, r, 0, DG_RES_SENSOR_TIMEOUT, 0, NULL);
        }
        tick(x);
        dg_ti *ti = &r->ti[0];
        if (soft) {
            cr_assert_eq(ti->state, DG_TI_SKIPPED, "variant %d: %s", variant, dg_ti_state_name(ti->state));
            cr_assert_str_eq(ti->message, "skipped: sensor timed out after 3s (soft_fail)");
            cr_assert_eq(r->ti[1].state, DG_TI_SKIPPED);
            cr_assert_eq(r->state, DG_RUN_SUCCESS);
        } else {
            cr_assert_eq(ti->state, DG_TI_FAILED, "no retry after a sensor timeout");
            cr_assert_str_eq(ti->message, "sensor timed out after 3s");
            cr_assert_eq(r->ti[1].state, DG_TI_UPSTREAM_FAILED);
            cr_assert_eq(r->state, DG_RUN_FAILED);
        }
        cr_assert_eq(ti->end_ms, 3000);
        h_free(x);
        free_dag(dag);
    }
}

Test(sched, sensor_checks_do_not_consume_retries) {
    dg_dag *dag = mk_dag("d", "s");
    dg_task *t = &dag->tasks[0];
    t->kind = DG_KIND_SENSOR;
    t->sensor.interval_ms = 1000;
    t->sensor.timeout_ms = 3600000;
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    tick(x);
    for (int i = 0; i < 5; i++) {
        finish_res(x, r, 0, DG_RES_NOT_YET, 0, NULL);
        x->now += 1000;
        tick(x);
        cr_assert_eq(r->ti[0].try_number, i + 2);
    }
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, depends_on_past) {
    dg_dag *dag = mk_dag("d", "a b");
    dag->tasks[0].depends_on_past = true;
    dag->tasks[1].depends_on_past = true;
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r", 0);
    dg_ti_state prev[] = {DG_TI_FAILED, DG_TI_SKIPPED};
    dg_sched_set_prev_states(r, prev);
    prev[0] = DG_TI_SUCCESS; /* copied: later changes don't matter */
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_NONE, "previous try failed: wait");
    cr_assert_eq(r->ti[1].state, DG_TI_QUEUED);
    run_exit(x, r, 1, 0);
    x->now = 86400000;
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_NONE);
    cr_assert_eq(r->state, DG_RUN_RUNNING);
    dg_ti_state ok[] = {DG_TI_SUCCESS, DG_TI_SUCCESS};
    dg_sched_set_prev_states(r, ok);
    tick(x);
    cr_assert_eq(r->ti[0].state, DG_TI_QUEUED);
    dg_sched_set_prev_states(r, NULL);
    cr_assert_null(r->prev_states);
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, remove_run_drops_pending_commands) {
    dg_dag *dag = mk_dag("d", "a");
    dg_sched *s = dg_sched_new(NULL);
    dg_run *r1 = dg_sched_add_run(s, dag, "r1", 0);
    dg_run *r2 = dg_sched_add_run(s, dag, "r2", 0);
    dg_sched_tick(s, 0);
    dg_sched_remove_run(s, r1);
    dg_cmd *c = NULL;
    size_t n = dg_sched_take_cmds(s, &c);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) cr_assert_eq(c[i].run, r2);
    free(c);
    cr_assert_eq(dg_sched_take_cmds(s, &c), 0);
    cr_assert_null(c);
    cr_assert_eq(dg_sched_runs(s), r2);
    cr_assert_eq(dg_sched_running(s), 1);
    dg_sched_free(s);
    free_dag(dag);
}

/* ---- randomised simulation: invariants over many seeds ---- */

#define SIM_RUNS 3
#define SIM_TASKS 10

typedef struct ev {
    int64_t at;
    dg_run *run;
    size_t task;
    int try_number;
    bool finish;
    dg_result_type type;
    int code;
} ev;

typedef struct sim {
    h *x;
    uint64_t rng;
    ev *evs;
    size_t nev, capev;
    dg_run *runs[SIM_RUNS];
    int last_try[SIM_RUNS][SIM_TASKS];
    bool was_finished[SIM_RUNS][SIM_TASKS];
    dg_ti_state snap[SIM_RUNS][SIM_TASKS];
    dg_pool_limit pools[2];
    int parallelism;
} sim;

static uint64_t rnd(sim *m) {
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return m->rng;
}
static int rndn(sim *m, int n) { return (int)(rnd(m) % (uint64_t)n); }

static void add_ev(sim *m, ev e) {
    if (m->nev == m->capev) {
        m->capev = m->capev ? m->capev * 2 : 64;
        m->evs = xrealloc(m->evs, m->capev * sizeof(ev));
    }
    m->evs[m->nev++] = e;
}

static int run_index(sim *m, const dg_run *r) {
    for (int i = 0; i < SIM_RUNS; i++)
        if (m->runs[i] == r) return i;
    cr_assert_fail("unknown run");
    return -1;
}

static void snapshot(sim *m) {
    for (int k = 0; k < SIM_RUNS; k++)
        for (size_t t = 0; t < m->runs[k]->dag->n_tasks; t++) {
            m->snap[k][t] = m->runs[k]->ti[t].state;
            m->was_finished[k][t] = dg_ti_state_finished(m->runs[k]->ti[t].state);
        }
}

/* Called after every scheduler call: react to the new commands like a driver and
 * check the invariants. */
static void sim_check(sim *m, size_t from) {
    h *x = m->x;
    for (size_t i = from; i < x->n; i++) {
        const dg_cmd *c = &x->log[i];
        if (c->type != DG_CMD_START && c->type != DG_CMD_STOP) continue;
        int k = run_index(m, c->run);
        const dg_task *t = &c->run->dag->tasks[c->task];
        if (c->type == DG_CMD_STOP) {
            add_ev(m, (ev){x->now + 100, c->run, c->task, c->try_number, true, DG_RES_EXITED, 137});
            continue;
        }
        cr_assert(!m->was_finished[k][c->task], "START for a finished task");
        cr_assert_eq(c->try_number, m->last_try[k][c->task] + 1, "tries go up by one");
        m->last_try[k][c->task] = c->try_number;
        int64_t st = x->now + rndn(m, 300);
        add_ev(m, (ev){st, c->run, c->task, c->try_number, false, 0, 0});
        ev f = {st + rndn(m, 6000), c->run, c->task, c->try_number, true, DG_RES_EXITED, 0};
        int dice = rndn(m, 10);
        if (t->kind == DG_KIND_SENSOR) {
            if (dice < 5) f.type = DG_RES_NOT_YET;
            else f.code = dice < 8 ? 0 : 1;
        } else if (dice < 6) {
            f.code = 0;
        } else if (dice < 8) {
            f.code = 1;
        } else if (dice < 9) {
            f.code = 3;
        } else {
            f.type = DG_RES_ERROR;
        }
        add_ev(m, f);
    }
    /* every state change was reported, and only changes were */
    for (int k = 0; k < SIM_RUNS; k++)
        for (size_t t = 0; t < m->runs[k]->dag->n_tasks; t++) {
            size_t n = count_cmd(x, from, DG_CMD_TI_CHANGED, m->runs[k], t);
            if (m->runs[k]->ti[t].state != m->snap[k][t]) cr_assert_geq(n, 1);
            if (n == 0) cr_assert_eq(m->runs[k]->ti[t].state, m->snap[k][t]);
            if (m->was_finished[k][t]) cr_assert_eq(n, 0, "a finished task never changes");
        }
    /* slot limits */
    int global = 0, pool_used[2] = {0};
    for (int k = 0; k < SIM_RUNS; k++) {
        const dg_run *r = m->runs[k];
        int dag_held = 0, dag_running = 0;
        for (int j = 0; j < SIM_RUNS; j++) {
            const dg_run *o = m->runs[j];
            if (strcmp(o->dag->dag_id, r->dag->dag_id)) continue;
            if (o->state == DG_RUN_RUNNING) dag_running++;
            for (size_t t = 0; t < o->dag->n_tasks; t++) dag_held += o->ti[t].holds_slot;
        }
        cr_assert_leq(dag_held, r->dag->max_active_tasks);
        cr_assert_leq(dag_running, r->dag->max_active_runs);
        for (size_t t = 0; t < r->dag->n_tasks; t++) {
            const dg_ti *ti = &r->ti[t];
            bool active = ti->state == DG_TI_QUEUED || ti->state == DG_TI_RUNNING;
            cr_assert_eq(ti->holds_slot, active);
            if (!ti->holds_slot) continue;
            global++;
            const char *pool = r->dag->tasks[t].pool;
            for (int p = 0; p < 2; p++)
                if (pool && strcmp(pool, m->pools[p].name) == 0) pool_used[p]++;
        }
    }
    cr_assert_leq(global, m->parallelism);
    cr_assert_eq(global, dg_sched_running(x->s));
    for (int p = 0; p < 2; p++) cr_assert_leq(pool_used[p], m->pools[p].slots);
    snapshot(m);
}

static dg_dag *random_dag(sim *m, const char *id) {
    int n = 2 + rndn(m, SIM_TASKS - 1);
    char spec[512] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(spec);
        snprintf(spec + l, sizeof spec - l, "%st%d", i ? " " : "", i);
        char sep = ':';
        for (int j = 0; j < i; j++)
            if (rndn(m, 10) < 3) {
                l = strlen(spec);
                snprintf(spec + l, sizeof spec - l, "%ct%d", sep, j);
                sep = ',';
            }
    }
    dg_dag *dag = mk_dag(id, spec);
    dag->max_active_runs = 1 + rndn(m, 2);
    dag->max_active_tasks = 1 + rndn(m, 3);
    static const char *pools[] = {NULL, "p1", "p2", "px"};
    for (int i = 0; i < n; i++) {
        dg_task *t = &dag->tasks[i];
        t->trigger_rule = rndn(m, _DG_TR_MAX);
        t->retries = rndn(m, 3);
        t->retry_delay_ms = rndn(m, 3000);
        t->retry_exponential_backoff = rndn(m, 2);
        t->max_retry_delay_ms = rndn(m, 2) ? 2000 : 0;
        if (rndn(m, 4) == 0) t->timeout_ms = 3000;
        t->pool = xstrdup(pools[rndn(m, 4)]);
        t->priority_weight = 1 + rndn(m, 5);
        set_skip_code(t, 3);
        if (rndn(m, 7) == 0) {
            t->kind = DG_KIND_SENSOR;
            t->sensor.interval_ms = 500 + rndn(m, 1500);
            t->sensor.timeout_ms = 10000;
            t->sensor.reschedule = true;
        }
    }
    return dag;
}

static void simulate(uint64_t seed) {
    sim m = {.rng = seed * 2654435761u + 1};
    m.pools[0] = (dg_pool_limit){"p1", 1};
    m.pools[1] = (dg_pool_limit){"p2", 2};
    m.parallelism = 1 + rndn(&m, 4);
    dg_sched_opts o = {.parallelism = m.parallelism, .pools = m.pools, .n_pools = 2};
    m.x = h_new(&o);
    dg_dag *a = random_dag(&m, "A"), *b = random_dag(&m, "B");
    m.runs[0] = dg_sched_add_run(m.x->s, a, "a1", 0);
    m.runs[1] = dg_sched_add_run(m.x->s, a, "a2", 0);
    m.runs[2] = dg_sched_add_run(m.x->s, b, "b1", 0);
    int cancel_at = rndn(&m, 4) == 0 ? rndn(&m, 40) : -1;
    bool cancelled_queued = false;
    drain(m.x);
    snapshot(&m);
    size_t from = m.x->n;
    tick(m.x);
    sim_check(&m, from);

    for (int steps = 0;; steps++) {
        cr_assert_lt(steps, 100000, "seed %llu does not settle", (unsigned long long)seed);
        if (steps == cancel_at) {
            from = m.x->n;
            cancelled_queued = m.runs[0]->state == DG_RUN_QUEUED;
            dg_sched_cancel_run(m.x->s, m.runs[0], m.x->now);
            drain(m.x);
            sim_check(&m, from);
            from = m.x->n;
            tick(m.x);
            sim_check(&m, from);
        }
        size_t best = m.nev;
        for (size_t i = 0; i < m.nev; i++)
            if (best == m.nev || m.evs[i].at < m.evs[best].at) best = i;
        int64_t wake = dg_sched_next_wakeup(m.x->s);
        if (best == m.nev && wake < 0) break;
        if (best < m.nev && (wake < 0 || m.evs[best].at <= wake)) {
            ev e = m.evs[best];
            m.evs[best] = m.evs[--m.nev];
            if (e.at > m.x->now) m.x->now = e.at;
            from = m.x->n;
            if (e.finish) {
                dg_result res = {.type = e.type, .exit_code = e.code, .message = "boom"};
                dg_sched_on_finished(m.x->s, e.run, e.task, e.try_number, &res, m.x->now);
            } else {
                dg_sched_on_started(m.x->s, e.run, e.task, e.try_number, m.x->now);
            }
            drain(m.x);
            sim_check(&m, from);
        } else {
            cr_assert_geq(wake, m.x->now, "wakeups are never in the past");
            m.x->now = wake;
        }
        from = m.x->n;
        tick(m.x);
        sim_check(&m, from);
    }

    for (int k = 0; k < SIM_RUNS; k++) {
        const dg_run *r = m.runs[k];
        bool failed = r->cancelled;
        for (size_t t = 0; t < r->dag->n_tasks; t++) {
            dg_ti_state st = r->ti[t].state;
            cr_assert(dg_ti_state_finished(st), "seed %llu run %d task %zu ends %s",
                      (unsigned long long)seed, k, t, dg_ti_state_name(st));
            cr_assert(!r->ti[t].holds_slot);
            if (st == DG_TI_FAILED || st == DG_TI_UPSTREAM_FAILED) failed = true;
        }
        cr_assert_eq(r->state, failed ? DG_RUN_FAILED : DG_RUN_SUCCESS, "seed %llu run %d",
                     (unsigned long long)seed, k);
        /* queued, running, finished; a run cancelled while queued never ran */
        cr_assert_eq(count_cmd(m.x, 0, DG_CMD_RUN_CHANGED, r, SIZE_MAX),
                     k == 0 && cancelled_queued ? 2 : 3);
    }
    cr_assert_eq(dg_sched_running(m.x->s), 0);
    free(m.evs);
    h_free(m.x);
    free_dag(a);
    free_dag(b);
}

Test(sched, randomised_simulation) {
    for (uint64_t seed = 1; seed <= 1500; seed++) simulate(seed);
}

/* ---- the daemon's verbs ---- */

Test(sched, clear_reruns_with_a_fresh_budget) {
    dg_dag *dag = mk_dag("d", "a b:a");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r1", x->now);
    tick(x);
    run_exit(x, r, 0, 3); /* a fails (no retries) → b upstream_failed → run failed */
    cr_assert_eq(r->ti[0].state, DG_TI_FAILED);
    cr_assert_eq(r->ti[1].state, DG_TI_UPSTREAM_FAILED);
    cr_assert_eq(r->state, DG_RUN_FAILED);
    size_t mark = x->n;
    x->now += 1000;
    cr_assert_eq(dg_sched_clear_ti(x->s, r, 0, x->now), 0);
    cr_assert_eq(dg_sched_clear_ti(x->s, r, 1, x->now), 0);
    drain(x);
    cr_assert_eq(r->ti[0].state, DG_TI_NONE);
    cr_assert_eq(r->ti[0].max_tries, 2, "one more try on top of the one made");
    cr_assert_eq(r->state, DG_RUN_QUEUED);
    cr_assert_eq(count_cmd(x, mark, DG_CMD_RUN_CHANGED, r, ANY), 1);
    tick(x);
    const dg_cmd *st = find_cmd(x, mark, DG_CMD_START, r, 0);
    cr_assert_not_null(st);
    cr_assert_eq(st->try_number, 2, "the rerun is try 2");
    run_exit(x, r, 0, 0);
    run_exit(x, r, 1, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    /* a try in flight cannot be cleared */
    dg_run *r2 = dg_sched_add_run(x->s, dag, "r2", x->now);
    tick(x);
    cr_assert_eq(dg_sched_clear_ti(x->s, r2, 0, x->now), -EBUSY);
    h_free(x);
    free_dag(dag);
}

Test(sched, mark_running_task_stops_it_and_moves_on) {
    dg_dag *dag = mk_dag("d", "a b:a");
    h *x = h_new(NULL);
    dg_run *r = dg_sched_add_run(x->s, dag, "r1", x->now);
    tick(x);
    started(x, r, 0);
    size_t mark = x->n;
    cr_assert_eq(dg_sched_mark_ti(x->s, r, 0, DG_TI_RUNNING, x->now), -EDOM);
    cr_assert_eq(dg_sched_mark_ti(x->s, r, 0, DG_TI_SUCCESS, x->now), 0);
    drain(x);
    const dg_cmd *stop = find_cmd(x, mark, DG_CMD_STOP, r, 0);
    cr_assert_not_null(stop);
    cr_assert_eq(stop->reason, DG_STOP_CANCEL);
    cr_assert_eq(dg_sched_running(x->s), 0, "the slot is free at once");
    tick(x);
    cr_assert_eq(r->ti[1].state, DG_TI_QUEUED, "downstream runs after the mark");
    /* the stopped try's late report changes nothing */
    dg_result res = {.type = DG_RES_EXITED, .exit_code = 143};
    dg_sched_on_finished(x->s, r, 0, 1, &res, x->now);
    drain(x);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    run_exit(x, r, 1, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    /* marking a task of a finished run reopens it until the next tick decides */
    cr_assert_eq(dg_sched_mark_ti(x->s, r, 1, DG_TI_FAILED, x->now), 0);
    tick(x);
    cr_assert_eq(r->state, DG_RUN_FAILED);
    h_free(x);
    free_dag(dag);
}

Test(sched, restore_in_flight_and_waiting_tries) {
    dg_dag *dag = mk_dag("d", "a b c:a,b");
    dag->tasks[1].retries = 2;
    dag->tasks[1].retry_delay_ms = 10000;
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    x->now = 100000;
    dg_run *r = dg_sched_add_run(x->s, dag, "r1", x->now);
    dg_sched_restore_run(x->s, r, DG_RUN_RUNNING, 50000, 0);
    dg_ti_restore ra = {.state = DG_TI_RUNNING, .try_number = 1, .max_tries = 1, .start_ms = 90000};
    dg_ti_restore rb = {.state = DG_TI_UP_FOR_RETRY, .try_number = 1, .max_tries = 3, .start_ms = 60000,
                        .end_ms = 95000, .has_exit_code = true, .exit_code = 1, .message = "exit code 1"};
    dg_sched_restore_ti(x->s, r, 0, &ra, x->now);
    dg_sched_restore_ti(x->s, r, 1, &rb, x->now);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 1, "the adopted try holds the only slot");
    cr_assert_eq(count_cmd(x, 0, DG_CMD_START, r, ANY), 0, "nothing new starts meanwhile");
    cr_assert_eq(r->ti[1].not_before_ms, 105000, "the retry waits from the end of its try");
    run_exit(x, r, 0, 0);
    cr_assert_eq(r->ti[0].state, DG_TI_SUCCESS);
    x->now = 105000;
    tick(x);
    const dg_cmd *st = find_cmd(x, 0, DG_CMD_START, r, 1);
    cr_assert_not_null(st);
    cr_assert_eq(st->try_number, 2);
    run_exit(x, r, 1, 0);
    run_exit(x, r, 2, 0);
    cr_assert_eq(r->state, DG_RUN_SUCCESS);
    h_free(x);
    free_dag(dag);
}

Test(sched, set_limits_takes_effect) {
    dg_dag *dag = mk_dag("d", "a b c d");
    dg_sched_opts o = {.parallelism = 1};
    h *x = h_new(&o);
    dg_run *r = dg_sched_add_run(x->s, dag, "r1", x->now);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 1);
    dg_sched_set_limits(x->s, 3, NULL, 0);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 3);
    dg_pool_limit p = {.name = "default_pool", .slots = 3};
    dg_sched_set_limits(x->s, 10, &p, 1);
    tick(x);
    cr_assert_eq(dg_sched_running(x->s), 3, "the default pool bounds tasks without a pool");
    (void)r;
    h_free(x);
    free_dag(dag);
}
