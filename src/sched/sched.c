/* sched — the scheduler core (docs/daemon.md): runs, task-instance states, trigger rules,
 * retries, timeouts, sensor reschedules and slot accounting, as a pure state machine.
 * The scheduler owns every dg_run on its list together with the run's task instances,
 * messages and previous states; a run only borrows its dg_dag. Commands are appended
 * to one queue, in the order their causes happened, and handed to the driver whole.
 *
 * Choices worth knowing (beyond the header's contract):
 * - Reschedule-mode sensors: every check is a START with the next try_number, but a
 *   NOT_YET answer raises max_tries by one so checks never use up the retries; the
 *   bump lives in the task instance, so it survives being persisted and reloaded.
 * - depends_on_past: a task whose previous-run state is anything but success or
 *   skipped stays `none` (Airflow does the same), also when that state is failed:
 *   the run then waits until someone clears the past or cancels it. The driver
 *   refreshes prev_states when the previous run moves on.
 * - A try stopped because its run was cancelled ends failed whatever it exited with.
 * - A task with no pool counts against a configured pool named "default_pool", as in
 *   Airflow; any other pool that the server does not list is unbounded. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dagd/sched.h"
#include "dagd/util.h"

#define DEFAULT_PARALLELISM 32
#define DEFAULT_RETRY_CAP_MS (24LL * 3600 * 1000)
#define DEFAULT_POOL_NAME "default_pool"

typedef enum { WAIT, RUN, SKIP, UFAIL } decision;

typedef struct upstream_count {
    size_t n, succ, failed, ufail, skipped;
} upstream_count;

typedef struct run_priv {
    dg_run pub;       /* first member: every dg_run handed out is a run_priv */
    uint64_t seq;     /* creation order: older runs win priority ties */
    int64_t *weight;  /* effective priority weight of each task */
    size_t *topo_pos; /* position of each task in dag->topo */
    int held;         /* task instances of this run holding a slot */
} run_priv;

struct dg_sched {
    int parallelism;
    dg_pool_limit *pools; /* names copied */
    size_t n_pools;
    int64_t retry_cap_ms;
    dg_run *head, *tail;
    uint64_t next_seq;
    dg_cmd *cmds;
    size_t n_cmds, cap_cmds;
};

static const char *const ti_names[_DG_TI_MAX] = {
    [DG_TI_NONE] = "none",
    [DG_TI_SCHEDULED] = "scheduled",
    [DG_TI_QUEUED] = "queued",
    [DG_TI_RUNNING] = "running",
    [DG_TI_SUCCESS] = "success",
    [DG_TI_FAILED] = "failed",
    [DG_TI_UP_FOR_RETRY] = "up_for_retry",
    [DG_TI_UPSTREAM_FAILED] = "upstream_failed",
    [DG_TI_SKIPPED] = "skipped",
};

static const char *const run_names[] = {
    [DG_RUN_QUEUED] = "queued",
    [DG_RUN_RUNNING] = "running",
    [DG_RUN_SUCCESS] = "success",
    [DG_RUN_FAILED] = "failed",
};

const char *dg_ti_state_name(dg_ti_state s) {
    if ((unsigned)s >= _DG_TI_MAX) return NULL;
    return ti_names[s];
}

int dg_ti_state_from_name(const char *s) {
    if (!s) return -EINVAL;
    for (int i = 0; i < _DG_TI_MAX; i++)
        if (strcmp(s, ti_names[i]) == 0) return i;
    return -EINVAL;
}

bool dg_ti_state_finished(dg_ti_state s) {
    return s == DG_TI_SUCCESS || s == DG_TI_FAILED || s == DG_TI_UPSTREAM_FAILED ||
           s == DG_TI_SKIPPED;
}

const char *dg_run_state_name(dg_run_state s) {
    if ((unsigned)s >= ARRAY_SIZE(run_names)) return NULL;
    return run_names[s];
}

int dg_run_state_from_name(const char *s) {
    if (!s) return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(run_names); i++)
        if (strcmp(s, run_names[i]) == 0) return (int)i;
    return -EINVAL;
}

/* Airflow decides some rules "eagerly": a single failed upstream already dooms an
 * all_success task, so waiting for its siblings would only delay the run's outcome. */
static decision decide(dg_trigger_rule rule, const upstream_count *c) {
    size_t n = c->n, done = c->succ + c->failed + c->ufail + c->skipped;
    size_t failish = c->failed + c->ufail;
    bool all_done = done == n;

    if (n == 0 || rule == DG_TR_ALWAYS) return RUN;
    switch (rule) {
    case DG_TR_ALL_SUCCESS:
        if (failish) return UFAIL;
        /* a skip waits for the siblings, so that a failure among them wins whatever
         * order the upstreams finish in */
        if (c->skipped) return all_done ? SKIP : WAIT;
        return c->succ == n ? RUN : WAIT;
    case DG_TR_ALL_FAILED:
        if (c->succ || c->skipped) return SKIP;
        return failish == n ? RUN : WAIT;
    case DG_TR_ALL_DONE:
        return all_done ? RUN : WAIT;
    case DG_TR_ONE_SUCCESS:
        if (c->succ) return RUN;
        if (!all_done) return WAIT;
        /* Airflow: nothing but skips upstream is a skip, not a failure */
        return c->skipped == c->n ? SKIP : UFAIL;
    case DG_TR_ONE_FAILED:
        if (failish) return RUN;
        return all_done ? SKIP : WAIT;
    case DG_TR_ONE_DONE:
        if (c->succ + c->failed) return RUN;
        return all_done ? SKIP : WAIT;
    case DG_TR_NONE_FAILED:
        if (!all_done) return WAIT;
        return failish ? UFAIL : RUN;
    case DG_TR_NONE_FAILED_MIN_ONE_SUCCESS:
        if (!all_done) return WAIT;
        if (failish) return UFAIL;
        return c->succ ? RUN : SKIP;
    case DG_TR_NONE_SKIPPED:
        if (!all_done) return WAIT;
        return c->skipped ? SKIP : RUN;
    case DG_TR_ALL_SKIPPED:
        if (c->succ || failish) return SKIP;
        return c->skipped == n ? RUN : WAIT;
    default:
        return WAIT;
    }
}

static int64_t sat_mul2(int64_t v, int times) {
    for (int i = 0; i < times; i++) {
        if (v > INT64_MAX / 2) return INT64_MAX;
        v *= 2;
    }
    return v;
}

int64_t dg_sched_retry_delay(const dg_task *t, int next_try, int64_t default_cap_ms) {
    int64_t d = t->retry_delay_ms > 0 ? t->retry_delay_ms : 0;
    int64_t cap = t->max_retry_delay_ms > 0 ? t->max_retry_delay_ms : 0;

    if (t->retry_exponential_backoff) {
        int shift = next_try > 2 ? next_try - 2 : 0;
        /* Past 63 doublings every non-zero delay has saturated anyway. */
        d = d == 0 ? 0 : sat_mul2(d, shift > 63 ? 63 : shift);
        if (cap == 0) cap = default_cap_ms > 0 ? default_cap_ms : DEFAULT_RETRY_CAP_MS;
    }
    if (cap > 0 && d > cap) d = cap;
    return d;
}

static int64_t sat_add(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    return a + b;
}

static run_priv *priv(dg_run *run) { return (run_priv *)run; }

static const dg_task *task_of(const dg_run *run, size_t i) { return &run->dag->tasks[i]; }

/* Position k of the dag's topological order; file order when no order was given. */
static size_t topo_at(const dg_dag *dag, size_t k) { return dag->topo ? dag->topo[k] : k; }

static bool has_names(char **v) { return v && v[0]; }

static bool same_dag(const dg_run *a, const dg_run *b) {
    if (a->dag == b->dag) return true;
    return a->dag->dag_id && b->dag->dag_id && strcmp(a->dag->dag_id, b->dag->dag_id) == 0;
}

static dg_cmd *push_cmd(dg_sched *s, dg_cmd_type type, dg_run *run, size_t task) {
    if (s->n_cmds == s->cap_cmds) {
        s->cap_cmds = s->cap_cmds ? s->cap_cmds * 2 : 32;
        s->cmds = xrealloc(s->cmds, s->cap_cmds * sizeof(dg_cmd));
    }
    dg_cmd *c = &s->cmds[s->n_cmds++];
    *c = (dg_cmd){.type = type, .run = run, .task = task};
    return c;
}

/* Every state change goes through here so that each one is reported exactly once. */
static void set_state(dg_sched *s, dg_run *run, size_t i, dg_ti_state st) {
    dg_ti *ti = &run->ti[i];
    if (ti->state == st) return;
    ti->state = st;
    dg_cmd *c = push_cmd(s, DG_CMD_TI_CHANGED, run, i);
    c->try_number = ti->try_number;
    c->state = st;
}

static void set_message(dg_ti *ti, char *msg) {
    free(ti->message);
    ti->message = msg;
}

static void notify(dg_sched *s, dg_run *run, size_t task, dg_notify_event ev) {
    dg_cmd *c = push_cmd(s, DG_CMD_NOTIFY, run, task);
    c->event = ev;
    if (task != SIZE_MAX) c->try_number = run->ti[task].try_number;
}

static void release_slot(dg_run *run, dg_ti *ti) {
    if (!ti->holds_slot) return;
    ti->holds_slot = false;
    priv(run)->held--;
}

static void unprepare(dg_sched *s, dg_run *run, size_t i) {
    dg_ti *ti = &run->ti[i];
    if (!ti->prepared) return;
    ti->prepared = false;
    push_cmd(s, DG_CMD_UNPREPARE, run, i)->try_number = ti->try_number + 1;
}

/* A task that will never run: skipped or upstream_failed without a try. */
static void end_unrun(dg_sched *s, dg_run *run, size_t i, dg_ti_state st, const char *msg,
                      int64_t now) {
    dg_ti *ti = &run->ti[i];
    ti->end_ms = now;
    ti->not_before_ms = 0;
    set_message(ti, xstrdup(msg));
    set_state(s, run, i, st);
    unprepare(s, run, i);
}

static bool blocked_by_past(const dg_run *run, size_t i) {
    if (!task_of(run, i)->depends_on_past || !run->prev_states) return false;
    dg_ti_state p = run->prev_states[i];
    return p != DG_TI_SUCCESS && p != DG_TI_SKIPPED;
}

static upstream_count count_upstream(const dg_run *run, size_t i) {
    const dg_task *t = task_of(run, i);
    upstream_count c = {.n = t->n_upstream};
    for (size_t k = 0; k < t->n_upstream; k++) {
        switch (run->ti[t->upstream[k]].state) {
        case DG_TI_SUCCESS: c.succ++; break;
        case DG_TI_FAILED: c.failed++; break;
        case DG_TI_UPSTREAM_FAILED: c.ufail++; break;
        case DG_TI_SKIPPED: c.skipped++; break;
        default: break;
        }
    }
    return c;
}

/* Airflow's "downstream" weight rule (the model's), computed once per run. */
static void compute_weights(run_priv *r) {
    const dg_dag *dag = r->pub.dag;
    size_t n = dag->n_tasks;
    r->weight = xcalloc(n ? n : 1, sizeof(int64_t));
    r->topo_pos = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t k = 0; k < n; k++) r->topo_pos[topo_at(dag, k)] = k;
    for (size_t t = 0; t < n; t++) r->weight[t] = dg_task_effective_weight(dag, t);
}

void dg_sched_set_limits(dg_sched *s, int parallelism, const dg_pool_limit *pools, size_t n_pools) {
    s->parallelism = parallelism > 0 ? parallelism : DEFAULT_PARALLELISM;
    for (size_t i = 0; i < s->n_pools; i++) free((char *)s->pools[i].name);
    free(s->pools);
    s->pools = NULL;
    s->n_pools = 0;
    if (pools && n_pools) {
        s->pools = xcalloc(n_pools, sizeof(dg_pool_limit));
        for (size_t i = 0; i < n_pools; i++) {
            s->pools[i].name = xstrdup(pools[i].name);
            s->pools[i].slots = pools[i].slots;
        }
        s->n_pools = n_pools;
    }
}

dg_sched *dg_sched_new(const dg_sched_opts *opts) {
    dg_sched *s = xcalloc(1, sizeof *s);
    s->retry_cap_ms = DEFAULT_RETRY_CAP_MS;
    dg_sched_set_limits(s, opts ? opts->parallelism : 0, opts ? opts->pools : NULL, opts ? opts->n_pools : 0);
    if (opts && opts->default_max_retry_delay_ms > 0) s->retry_cap_ms = opts->default_max_retry_delay_ms;
    return s;
}

static void run_free(dg_run *run) {
    if (!run) return;
    run_priv *r = priv(run);
    for (size_t i = 0; i < run->dag->n_tasks; i++) free(run->ti[i].message);
    free(run->ti);
    free(run->prev_states);
    free(run->run_id);
    free(r->weight);
    free(r->topo_pos);
    free(r);
}

void dg_sched_free(dg_sched *s) {
    if (!s) return;
    for (dg_run *r = s->head, *next; r; r = next) {
        next = r->next;
        run_free(r);
    }
    for (size_t i = 0; i < s->n_pools; i++) free((char *)s->pools[i].name);
    free(s->pools);
    free(s->cmds);
    free(s);
}

dg_run *dg_sched_add_run(dg_sched *s, const dg_dag *dag, const char *run_id, int64_t now) {
    run_priv *r = xcalloc(1, sizeof *r);
    dg_run *run = &r->pub;
    size_t n = dag->n_tasks;

    run->dag = dag;
    run->run_id = xstrdup(run_id);
    run->state = DG_RUN_QUEUED;
    run->ti = xcalloc(n ? n : 1, sizeof(dg_ti));
    for (size_t i = 0; i < n; i++) {
        int retries = dag->tasks[i].retries;
        run->ti[i].max_tries = (retries > 0 ? retries : 0) + 1;
    }
    r->seq = s->next_seq++;
    compute_weights(r);

    if (s->tail) s->tail->next = run;
    else s->head = run;
    s->tail = run;
    push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
    return run;
}

void dg_sched_set_prev_states(dg_run *run, const dg_ti_state *states) {
    free(run->prev_states);
    run->prev_states = NULL;
    if (!states) return;
    size_t n = run->dag->n_tasks;
    run->prev_states = xcalloc(n ? n : 1, sizeof(dg_ti_state));
    memcpy(run->prev_states, states, n * sizeof(dg_ti_state));
}

void dg_sched_remove_run(dg_sched *s, dg_run *run) {
    if (!run) return;
    dg_run *prev = NULL;
    for (dg_run *r = s->head; r; prev = r, r = r->next) {
        if (r != run) continue;
        if (prev) prev->next = r->next;
        else s->head = r->next;
        if (s->tail == r) s->tail = prev;
        break;
    }
    /* Commands not yet taken must not point at freed memory. */
    size_t w = 0;
    for (size_t i = 0; i < s->n_cmds; i++)
        if (s->cmds[i].run != run) s->cmds[w++] = s->cmds[i];
    s->n_cmds = w;
    run_free(run);
}

dg_run *dg_sched_runs(dg_sched *s) { return s->head; }

static bool run_active(const dg_run *run) {
    return run->state == DG_RUN_RUNNING && !run->cancelled;
}

static void check_timeouts(dg_sched *s, int64_t now) {
    for (dg_run *run = s->head; run; run = run->next) {
        if (run->state != DG_RUN_RUNNING) continue;
        for (size_t i = 0; i < run->dag->n_tasks; i++) {
            dg_ti *ti = &run->ti[i];
            if (ti->state != DG_TI_QUEUED && ti->state != DG_TI_RUNNING) continue;
            if (ti->stopping || ti->deadline_ms <= 0 || now < ti->deadline_ms) continue;
            ti->stopping = ti->timed_out = true;
            dg_cmd *c = push_cmd(s, DG_CMD_STOP, run, i);
            c->try_number = ti->try_number;
            c->reason = DG_STOP_TIMEOUT;
        }
    }
}

static bool activate_runs(dg_sched *s, int64_t now) {
    bool changed = false;
    for (dg_run *run = s->head; run; run = run->next) {
        if (run->state != DG_RUN_QUEUED || run->cancelled) continue;
        int max = run->dag->max_active_runs;
        if (max > 0) {
            int active = 0;
            for (dg_run *o = s->head; o; o = o->next)
                if (o->state == DG_RUN_RUNNING && same_dag(o, run)) active++;
            if (active >= max) continue;
        }
        run->state = DG_RUN_RUNNING;
        run->start_ms = now;
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
        changed = true;
    }
    return changed;
}

/* Bring due retries back and resolve trigger rules, in topological order so that a
 * chain of skips settles in one pass. */
static bool advance_run(dg_sched *s, dg_run *run, int64_t now) {
    bool changed = false;
    const dg_dag *dag = run->dag;
    for (size_t k = 0; k < dag->n_tasks; k++) {
        size_t i = topo_at(dag, k);
        dg_ti *ti = &run->ti[i];
        switch (ti->state) {
        case DG_TI_UP_FOR_RETRY:
            if (ti->not_before_ms > now) break;
            ti->not_before_ms = 0;
            set_state(s, run, i, DG_TI_SCHEDULED);
            changed = true;
            break;
        case DG_TI_SCHEDULED:
            if (ti->not_before_ms && ti->not_before_ms <= now) ti->not_before_ms = 0;
            break;
        case DG_TI_NONE: {
            upstream_count c = count_upstream(run, i);
            decision d = decide(dag->tasks[i].trigger_rule, &c);
            if (d == RUN && blocked_by_past(run, i)) d = WAIT;
            if (d == WAIT) break;
            if (d == RUN) set_state(s, run, i, DG_TI_SCHEDULED);
            else end_unrun(s, run, i, d == SKIP ? DG_TI_SKIPPED : DG_TI_UPSTREAM_FAILED, NULL, now);
            changed = true;
            break;
        }
        default:
            break;
        }
    }
    return changed;
}

static int pool_index(const dg_sched *s, const dg_task *t) {
    const char *name = t->pool ? t->pool : DEFAULT_POOL_NAME;
    for (size_t i = 0; i < s->n_pools; i++)
        if (strcmp(s->pools[i].name, name) == 0) return (int)i;
    return -1;
}

typedef struct candidate {
    run_priv *r;
    size_t task;
} candidate;

static int cmp_candidate(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    int64_t wx = x->r->weight[x->task], wy = y->r->weight[y->task];
    if (wx != wy) return wx > wy ? -1 : 1;
    if (x->r->seq != y->r->seq) return x->r->seq < y->r->seq ? -1 : 1;
    size_t px = x->r->topo_pos[x->task], py = y->r->topo_pos[y->task];
    return px < py ? -1 : px > py;
}

static void start_try(dg_sched *s, dg_run *run, size_t i, int64_t now) {
    dg_ti *ti = &run->ti[i];
    ti->try_number++;
    ti->start_ms = now;
    ti->running_ms = 0;
    if (ti->try_number == 1) ti->first_start_ms = now;
    ti->end_ms = 0;
    ti->not_before_ms = 0;
    ti->deadline_ms = 0;
    ti->stopping = ti->timed_out = false;
    ti->has_exit_code = false;
    ti->exit_code = 0;
    set_message(ti, NULL);
    ti->holds_slot = true;
    priv(run)->held++;
    set_state(s, run, i, DG_TI_QUEUED);
    push_cmd(s, DG_CMD_START, run, i)->try_number = ti->try_number;
}

static int held_by_dag(const dg_sched *s, const dg_run *run) {
    int n = 0;
    for (dg_run *o = s->head; o; o = o->next)
        if (same_dag(o, run)) n += priv(o)->held;
    return n;
}

static bool start_tasks(dg_sched *s, int64_t now) {
    int global = dg_sched_running(s);
    if (global >= s->parallelism) return false;

    size_t n = 0, cap = 0;
    _cleanup_free_ candidate *cands = NULL;
    for (dg_run *run = s->head; run; run = run->next) {
        if (!run_active(run)) continue;
        for (size_t i = 0; i < run->dag->n_tasks; i++) {
            const dg_ti *ti = &run->ti[i];
            if (ti->state != DG_TI_SCHEDULED || ti->not_before_ms > now) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                cands = xrealloc(cands, cap * sizeof(candidate));
            }
            cands[n++] = (candidate){priv(run), i};
        }
    }
    if (n == 0) return false;
    qsort(cands, n, sizeof(candidate), cmp_candidate);

    _cleanup_free_ int *pool_used = xcalloc(s->n_pools ? s->n_pools : 1, sizeof(int));
    for (dg_run *run = s->head; run; run = run->next)
        for (size_t i = 0; i < run->dag->n_tasks; i++) {
            if (!run->ti[i].holds_slot) continue;
            int p = pool_index(s, task_of(run, i));
            if (p >= 0) pool_used[p]++;
        }

    bool changed = false;
    for (size_t c = 0; c < n && global < s->parallelism; c++) {
        dg_run *run = &cands[c].r->pub;
        size_t i = cands[c].task;
        int mat = run->dag->max_active_tasks;
        if (mat > 0 && held_by_dag(s, run) >= mat) continue;
        int p = pool_index(s, task_of(run, i));
        if (p >= 0 && pool_used[p] >= s->pools[p].slots) continue;
        start_try(s, run, i, now);
        global++;
        if (p >= 0) pool_used[p]++;
        changed = true;
    }
    return changed;
}

static bool finish_runs(dg_sched *s, int64_t now) {
    bool changed = false;
    for (dg_run *run = s->head; run; run = run->next) {
        if (run->state != DG_RUN_RUNNING && !(run->state == DG_RUN_QUEUED && run->cancelled))
            continue;
        bool all = true, failed = run->cancelled;
        for (size_t i = 0; i < run->dag->n_tasks && all; i++) {
            dg_ti_state st = run->ti[i].state;
            if (!dg_ti_state_finished(st)) all = false;
            else if (st == DG_TI_FAILED || st == DG_TI_UPSTREAM_FAILED) failed = true;
        }
        if (!all) continue;
        run->state = failed ? DG_RUN_FAILED : DG_RUN_SUCCESS;
        run->end_ms = now;
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
        if (has_names(failed ? run->dag->on_failure : run->dag->on_success))
            notify(s, run, SIZE_MAX, failed ? DG_EVENT_FAILURE : DG_EVENT_SUCCESS);
        changed = true;
    }
    return changed;
}

/* Lets the driver create the container of a task whose upstreams are all on their
 * way to success, so that starting it later costs only the start call. */
static void prepare_hints(dg_sched *s, dg_run *run) {
    const dg_dag *dag = run->dag;
    for (size_t i = 0; i < dag->n_tasks; i++) {
        const dg_task *t = &dag->tasks[i];
        dg_ti *ti = &run->ti[i];
        if (ti->state != DG_TI_NONE || ti->prepared || t->kind != DG_KIND_CONTAINER) continue;
        if (t->trigger_rule != DG_TR_ALL_SUCCESS || t->n_upstream == 0) continue;
        if (blocked_by_past(run, i)) continue;
        bool ok = true, pending = false;
        for (size_t k = 0; k < t->n_upstream && ok; k++) {
            dg_ti_state st = run->ti[t->upstream[k]].state;
            if (st == DG_TI_QUEUED || st == DG_TI_RUNNING) pending = true;
            else if (st != DG_TI_SUCCESS) ok = false;
        }
        if (!ok || !pending) continue;
        ti->prepared = true;
        push_cmd(s, DG_CMD_PREPARE, run, i)->try_number = ti->try_number + 1;
    }
}

void dg_sched_tick(dg_sched *s, int64_t now) {
    check_timeouts(s, now);
    bool changed;
    do {
        changed = activate_runs(s, now);
        for (dg_run *run = s->head; run; run = run->next)
            if (run_active(run)) changed |= advance_run(s, run, now);
        changed |= start_tasks(s, now);
        changed |= finish_runs(s, now);
    } while (changed);
    for (dg_run *run = s->head; run; run = run->next)
        if (run_active(run)) prepare_hints(s, run);
}

void dg_sched_on_started(dg_sched *s, dg_run *run, size_t task, int try_number, int64_t now) {
    if (!run || task >= run->dag->n_tasks) return;
    dg_ti *ti = &run->ti[task];
    if (ti->try_number != try_number || ti->state != DG_TI_QUEUED) return;
    int64_t timeout = task_of(run, task)->timeout_ms;
    if (timeout > 0) ti->deadline_ms = sat_add(now, timeout);
    ti->running_ms = now;
    set_state(s, run, task, DG_TI_RUNNING);
}

static void end_failed(dg_sched *s, dg_run *run, size_t i, char *msg, int64_t now) {
    dg_ti *ti = &run->ti[i];
    ti->end_ms = now;
    set_message(ti, msg);
    set_state(s, run, i, DG_TI_FAILED);
    if (has_names(task_of(run, i)->on_failure)) notify(s, run, i, DG_EVENT_FAILURE);
}

/* A failed try: retry while tries remain, unless the run is being cancelled. */
static void try_failed(dg_sched *s, dg_run *run, size_t i, char *msg, int64_t now) {
    dg_ti *ti = &run->ti[i];
    if (run->cancelled || ti->try_number >= ti->max_tries) {
        end_failed(s, run, i, msg, now);
        return;
    }
    int64_t delay = dg_sched_retry_delay(task_of(run, i), ti->try_number + 1, s->retry_cap_ms);
    ti->not_before_ms = sat_add(now, delay);
    set_message(ti, msg);
    set_state(s, run, i, DG_TI_UP_FOR_RETRY);
    if (has_names(task_of(run, i)->on_retry)) notify(s, run, i, DG_EVENT_RETRY);
}

static bool in_skip_codes(const dg_task *t, int code) {
    for (size_t k = 0; k < t->n_skip_on_exit_code; k++)
        if (t->skip_on_exit_code[k] == code) return true;
    return false;
}

static char *timeout_message(const char *what, int64_t ms) {
    _cleanup_free_ char *d = dg_format_duration(ms);
    return xasprintf("%s after %s", what, d);
}

/* A sensor whose timeout passed ends without retry: failed, or skipped with soft_fail
 * (docs/dags.md, "Sensor tasks"). */
static void sensor_timed_out(dg_sched *s, dg_run *run, size_t i, int64_t now) {
    const dg_task *t = task_of(run, i);
    if (!t->sensor.soft_fail) {
        end_failed(s, run, i, timeout_message("sensor timed out", t->sensor.timeout_ms), now);
        return;
    }
    dg_ti *ti = &run->ti[i];
    ti->end_ms = now;
    _cleanup_free_ char *d = dg_format_duration(t->sensor.timeout_ms);
    set_message(ti, xasprintf("skipped: sensor timed out after %s (soft_fail)", d));
    set_state(s, run, i, DG_TI_SKIPPED);
}

void dg_sched_on_finished(dg_sched *s, dg_run *run, size_t task, int try_number,
                          const dg_result *res, int64_t now) {
    if (!run || !res || task >= run->dag->n_tasks) return;
    dg_ti *ti = &run->ti[task];
    const dg_task *t = task_of(run, task);
    if (ti->try_number != try_number) return;
    if (ti->state != DG_TI_QUEUED && ti->state != DG_TI_RUNNING) return;

    bool timed_out = ti->timed_out;
    release_slot(run, ti);
    ti->stopping = ti->timed_out = false;
    ti->deadline_ms = 0;

    if (run->cancelled) {
        if (res->type == DG_RES_EXITED) {
            ti->has_exit_code = true;
            ti->exit_code = res->exit_code;
        }
        end_failed(s, run, task, xstrdup("run cancelled"), now);
        return;
    }
    if (timed_out) {
        if (res->type == DG_RES_EXITED) {
            ti->has_exit_code = true;
            ti->exit_code = res->exit_code;
        }
        try_failed(s, run, task, timeout_message("timed out", t->timeout_ms), now);
        return;
    }

    switch (res->type) {
    case DG_RES_NOT_YET:
        if (t->sensor.timeout_ms > 0 && now - ti->first_start_ms >= t->sensor.timeout_ms) {
            sensor_timed_out(s, run, task, now);
            return;
        }
        ti->max_tries++;
        ti->not_before_ms = sat_add(now, t->sensor.interval_ms > 0 ? t->sensor.interval_ms : 0);
        set_message(ti, NULL);
        set_state(s, run, task, DG_TI_SCHEDULED);
        return;
    case DG_RES_SENSOR_TIMEOUT: sensor_timed_out(s, run, task, now); return;
    case DG_RES_EXITED:
        ti->has_exit_code = true;
        ti->exit_code = res->exit_code;
        if (res->exit_code == 0) {
            ti->end_ms = now;
            set_message(ti, NULL);
            set_state(s, run, task, DG_TI_SUCCESS);
            if (has_names(t->on_success)) notify(s, run, task, DG_EVENT_SUCCESS);
        } else if (in_skip_codes(t, res->exit_code)) {
            ti->end_ms = now;
            set_message(ti, xasprintf("skipped: exit code %d", res->exit_code));
            set_state(s, run, task, DG_TI_SKIPPED);
        } else {
            try_failed(s, run, task, xasprintf("exit code %d", res->exit_code), now);
        }
        return;
    case DG_RES_ERROR:
    default:
        try_failed(s, run, task, xstrdup(res->message ? res->message : "the try could not run"), now);
        return;
    }
}

void dg_sched_cancel_run(dg_sched *s, dg_run *run, int64_t now) {
    if (!run || run->cancelled) return;
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) return;
    run->cancelled = true;
    for (size_t i = 0; i < run->dag->n_tasks; i++) {
        dg_ti *ti = &run->ti[i];
        switch (ti->state) {
        case DG_TI_QUEUED:
        case DG_TI_RUNNING: {
            if (ti->stopping) break;
            ti->stopping = true;
            dg_cmd *c = push_cmd(s, DG_CMD_STOP, run, i);
            c->try_number = ti->try_number;
            c->reason = DG_STOP_CANCEL;
            break;
        }
        case DG_TI_NONE:
        case DG_TI_SCHEDULED:
        case DG_TI_UP_FOR_RETRY:
            end_unrun(s, run, i, DG_TI_SKIPPED, "run cancelled", now);
            break;
        default:
            break;
        }
    }
}

int64_t dg_sched_next_wakeup(const dg_sched *s) {
    int64_t best = -1;
    for (const dg_run *run = s->head; run; run = run->next) {
        if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) continue;
        for (size_t i = 0; i < run->dag->n_tasks; i++) {
            const dg_ti *ti = &run->ti[i];
            int64_t t = -1;
            if ((ti->state == DG_TI_SCHEDULED || ti->state == DG_TI_UP_FOR_RETRY) &&
                ti->not_before_ms > 0)
                t = ti->not_before_ms;
            else if ((ti->state == DG_TI_RUNNING || ti->state == DG_TI_QUEUED) &&
                     ti->deadline_ms > 0 && !ti->stopping)
                t = ti->deadline_ms;
            if (t >= 0 && (best < 0 || t < best)) best = t;
        }
    }
    return best;
}

size_t dg_sched_take_cmds(dg_sched *s, dg_cmd **ret) {
    size_t n = s->n_cmds;
    *ret = n ? s->cmds : NULL;
    if (n) {
        s->cmds = NULL;
        s->n_cmds = s->cap_cmds = 0;
    }
    return n;
}

int dg_sched_running(const dg_sched *s) {
    int n = 0;
    for (const dg_run *run = s->head; run; run = run->next) n += ((const run_priv *)run)->held;
    return n;
}

/* ---- the daemon's verbs: recovery, clear, mark ---- */

void dg_sched_restore_run(dg_sched *s, dg_run *run, dg_run_state state, int64_t start_ms, int64_t end_ms) {
    run->state = state;
    run->start_ms = start_ms;
    run->end_ms = end_ms;
}

void dg_sched_restore_ti(dg_sched *s, dg_run *run, size_t i, const dg_ti_restore *r, int64_t now) {
    dg_ti *ti = &run->ti[i];
    const dg_task *t = task_of(run, i);
    ti->try_number = r->try_number;
    ti->max_tries = r->max_tries > 0 ? r->max_tries : t->retries + 1;
    ti->start_ms = r->start_ms;
    ti->first_start_ms = r->start_ms;
    ti->end_ms = r->end_ms;
    ti->has_exit_code = r->has_exit_code;
    ti->exit_code = r->exit_code;
    set_message(ti, xstrdup(r->message));
    switch (r->state) {
    case DG_TI_RUNNING:
    case DG_TI_QUEUED:
        /* a try in flight: it holds a slot again until the driver reports its outcome */
        ti->state = r->state;
        ti->holds_slot = true;
        priv(run)->held++;
        if (r->state == DG_TI_RUNNING && t->timeout_ms > 0 && r->start_ms)
            ti->deadline_ms = sat_add(r->start_ms, t->timeout_ms);
        break;
    case DG_TI_UP_FOR_RETRY:
        ti->state = DG_TI_UP_FOR_RETRY;
        ti->not_before_ms = sat_add(r->end_ms ? r->end_ms : now,
                                    dg_sched_retry_delay(t, ti->try_number + 1, s->retry_cap_ms));
        break;
    case DG_TI_SCHEDULED:
        ti->state = DG_TI_SCHEDULED;
        break;
    default:
        ti->state = r->state;
        break;
    }
}

/* Airflow's clear: the task instance goes back to `none` with a fresh retry budget on
 * top of the tries already made, and its run becomes active again. */
int dg_sched_clear_ti(dg_sched *s, dg_run *run, size_t i, int64_t now) {
    dg_ti *ti = &run->ti[i];
    if (ti->state == DG_TI_QUEUED || ti->state == DG_TI_RUNNING) return -EBUSY;
    const dg_task *t = task_of(run, i);
    ti->max_tries = ti->try_number + t->retries + 1;
    ti->start_ms = ti->end_ms = ti->not_before_ms = ti->deadline_ms = 0;
    ti->has_exit_code = false;
    ti->exit_code = 0;
    ti->stopping = ti->timed_out = false;
    set_message(ti, NULL);
    set_state(s, run, i, DG_TI_NONE);
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) {
        run->state = DG_RUN_QUEUED;
        run->end_ms = 0;
        run->cancelled = false;
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
    }
    (void)now;
    return 0;
}

/* Mark a task success or failed by hand. A running try is stopped; its late report is
 * ignored because the instance no longer waits for it. */
int dg_sched_mark_ti(dg_sched *s, dg_run *run, size_t i, dg_ti_state st, int64_t now) {
    if (st != DG_TI_SUCCESS && st != DG_TI_FAILED) return -EDOM;
    dg_ti *ti = &run->ti[i];
    if (ti->state == DG_TI_QUEUED || ti->state == DG_TI_RUNNING) {
        dg_cmd *c = push_cmd(s, DG_CMD_STOP, run, i);
        c->try_number = ti->try_number;
        c->reason = DG_STOP_CANCEL;
        release_slot(run, ti);
    }
    unprepare(s, run, i);
    ti->stopping = ti->timed_out = false;
    ti->not_before_ms = ti->deadline_ms = 0;
    ti->end_ms = now;
    set_message(ti, xstrdup(st == DG_TI_SUCCESS ? "marked success" : "marked failed"));
    set_state(s, run, i, st);
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) {
        run->state = DG_RUN_RUNNING;
        run->end_ms = 0;
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
    }
    return 0;
}
