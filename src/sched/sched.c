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
 *   Airflow; any other pool that the server does not list is unbounded.
 *
 * The work of a tick follows what changed (dirty tasks per run, candidate heaps by DAG
 * version and pool, one timer heap), never the number of runs: see docs/architecture.md,
 * sched, and docs/benchmarks.md, "Scheduler at scale". */
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

/* A binary heap of fixed-size elements; `moved` (may be NULL) learns each element's
 * new position, for heaps whose elements must be found again (the group heap). */
typedef struct heap {
    char *v;
    size_t n, cap, size;
    int (*less)(const void *a, const void *b);
    void (*moved)(void *elem, size_t pos);
} heap;

struct dag_key;
struct group;

/* Per-task bookkeeping flags (run_priv.tflags). */
enum { TF_DIRTY = 1, TF_CAND = 2, TF_HINT = 4 };

typedef struct run_priv {
    dg_run pub;       /* first member: every dg_run handed out is a run_priv */
    dg_sched *s;      /* the scheduler that owns it */
    uint64_t seq;     /* creation order: older runs win priority ties */
    struct dag_info *info;       /* weights and topological positions, shared */
    const int64_t *weight;       /* info's: effective priority weight of each task */
    const size_t *topo_pos;      /* info's: position of each task in dag->topo */
    int held;         /* task instances of this run holding a slot */
    struct run_priv *prev;       /* scheduler's list, backwards */
    struct dag_key *key;         /* the runs of the same dag_id */
    struct run_priv *q_prev, *q_next; /* the key's queue of queued runs */
    bool in_queue;
    size_t n_unfinished;         /* task instances not in a finished state */
    uint8_t *tflags;             /* TF_* of each task */
    heap dirty;                  /* topo positions of tasks to (re)evaluate */
    size_t *hint;                /* tasks to check for a PREPARE hint */
    size_t n_hint, cap_hint;
    bool in_work, in_fin, in_hints;
    bool rearm;                  /* a timeout came due while the run was not running */
    size_t refs;                 /* entries in the candidate heaps */
    size_t *tpos;                /* each task's entry in the timer heap, SIZE_MAX = none */
} run_priv;

/* The sort key is copied in, so that heap operations do not chase the run. */
typedef struct cand {
    int64_t weight;
    uint64_t seq;
    run_priv *r;
    uint32_t topo_pos;
    uint32_t task;
} cand;


/* Scheduled task instances that wait for a slot, by (dag version, pool): within one
 * group, max_active_tasks and the pool block all members alike. */
typedef struct group {
    const dg_dag *dag;
    int pool;
    struct dag_key *key;
    heap cands;   /* cand, best first */
    size_t gpos;  /* position in the scheduler's group heap, SIZE_MAX = not in it */
} group;

/* What every run of one dg_dag shares, computed once for all of them: they borrow the
 * dag, so it outlives them, and the entry goes with the last of them. */
typedef struct dag_info {
    const dg_dag *dag;
    int64_t *weight;
    size_t *topo_pos;
    size_t refs; /* runs using it */
} dag_info;

/* The versions of one DAG that have queued runs (max_active_runs is the version's). */
typedef struct bucket {
    const dg_dag *dag;
    run_priv *head, *tail;
} bucket;

/* Everything counted per DAG (same dag_id, or the same dg_dag without one). */
typedef struct dag_key {
    char *dag_id;
    const dg_dag *dag; /* identity when dag_id is NULL */
    int held;          /* task instances holding a slot (max_active_tasks) */
    int running;       /* runs in state running (max_active_runs) */
    bool act_dirty;    /* a queued run may be able to start */
    bucket *buckets;
    size_t n_buckets;
    group **groups;
    size_t n_groups;
    dag_info **infos;
    size_t n_infos;
} dag_key;

typedef struct timer {
    int64_t due;
    run_priv *r;
    size_t task;
} timer;

/* the heap moves elements as up to four whole words */
_Static_assert(sizeof(cand) <= 32 && sizeof(cand) % 8 == 0 && sizeof(timer) <= 32 && sizeof(timer) % 8 == 0 &&
               sizeof(size_t) == 8 && sizeof(group *) == 8, "heap elements are 1 to 4 words");

/* A list of runs, each in it at most once (its flag says so). */
typedef struct runvec {
    run_priv **v;
    size_t n, cap;
} runvec;

struct dg_sched {
    int parallelism;
    dg_pool_limit *pools; /* names copied */
    size_t n_pools;
    int *pool_used;       /* slots held per configured pool */
    int running;          /* slots held in all */
    int64_t retry_cap_ms;
    dg_run *head, *tail;
    uint64_t next_seq;
    dg_cmd *cmds;
    size_t n_cmds, cap_cmds;
    dag_key **keys;
    size_t n_keys;
    dag_key **act;        /* keys with act_dirty */
    size_t n_act, cap_act;
    heap groups;          /* group *, by their best candidate */
    heap timers;          /* timer, earliest first */
    runvec work;          /* runs with dirty tasks */
    runvec fin;           /* runs that may have finished */
    runvec hints;         /* runs with tasks to check for a PREPARE hint */
    uint64_t evaluations;
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


/* ---- the binary heap ---- */

static void *hat(const heap *h, size_t i) { return h->v + i * h->size; }

/* Elements are whole words (all of ours are), copied inline rather than through memcpy. */
static void hcopy(const heap *h, void *dst, const void *src) {
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t k = 0; k < h->size / sizeof(uint64_t); k++) d[k] = s[k];
}

/* Sifts with a hole: the element moves once, the others one step each. */
static void sift_up(heap *h, size_t i) {
    uint64_t tmp[4];
    hcopy(h, tmp, hat(h, i));
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h->less(tmp, hat(h, p))) break;
        hcopy(h, hat(h, i), hat(h, p));
        if (h->moved) h->moved(hat(h, i), i);
        i = p;
    }
    hcopy(h, hat(h, i), tmp);
    if (h->moved) h->moved(hat(h, i), i);
}

static void sift_down(heap *h, size_t i) {
    uint64_t tmp[4];
    hcopy(h, tmp, hat(h, i));
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= h->n) break;
        if (r < h->n && h->less(hat(h, r), hat(h, l))) m = r;
        if (!h->less(hat(h, m), tmp)) break;
        hcopy(h, hat(h, i), hat(h, m));
        if (h->moved) h->moved(hat(h, i), i);
        i = m;
    }
    hcopy(h, hat(h, i), tmp);
    if (h->moved) h->moved(hat(h, i), i);
}

static void heap_init(heap *h, size_t size, int (*less)(const void *, const void *),
                      void (*moved)(void *, size_t)) {
    *h = (heap){.size = size, .less = less, .moved = moved};
}

static void heap_push(heap *h, const void *e) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->v = xrealloc(h->v, h->cap * h->size);
    }
    memcpy(hat(h, h->n), e, h->size);
    if (h->moved) h->moved(hat(h, h->n), h->n);
    h->n++;
    sift_up(h, h->n - 1);
}

/* Removes element i (0 = the top). */
static void heap_remove(heap *h, size_t i) {
    h->n--;
    if (i == h->n) return;
    memcpy(hat(h, i), hat(h, h->n), h->size);
    if (h->moved) h->moved(hat(h, i), i);
    sift_down(h, i);
    sift_up(h, i);
}

/* Keeps the elements `keep` accepts, then restores the heap order: O(n). */
static void heap_filter(heap *h, bool (*keep)(const void *e, const void *arg), const void *arg) {
    size_t w = 0;
    for (size_t i = 0; i < h->n; i++)
        if (keep(hat(h, i), arg)) {
            if (w != i) memcpy(hat(h, w), hat(h, i), h->size);
            if (h->moved) h->moved(hat(h, w), w);
            w++;
        }
    h->n = w;
    for (size_t i = h->n / 2; i-- > 0;) sift_down(h, i);
}

static void heap_free(heap *h) {
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

/* ---- small helpers ---- */

static run_priv *priv(dg_run *run) { return (run_priv *)run; }

static const dg_task *task_of(const dg_run *run, size_t i) { return &run->dag->tasks[i]; }

/* Position k of the dag's topological order; file order when no order was given. */
static size_t topo_at(const dg_dag *dag, size_t k) { return dag->topo ? dag->topo[k] : k; }

static bool has_names(char **v) { return v && v[0]; }

static bool run_active(const dg_run *run) {
    return run->state == DG_RUN_RUNNING && !run->cancelled;
}

static bool run_over(const dg_run *run) {
    return run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED;
}

static void runvec_add(runvec *v, run_priv *r, bool *flag) {
    if (*flag) return;
    *flag = true;
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->v = xrealloc(v->v, v->cap * sizeof(run_priv *));
    }
    v->v[v->n++] = r;
}

static int cmp_seq(const void *a, const void *b) {
    const run_priv *x = *(run_priv *const *)a, *y = *(run_priv *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Takes the list's runs in creation order (the order the old full scans had); the caller
 * clears each run's flag and frees the array. */
static size_t runvec_take(runvec *v, run_priv ***ret) {
    size_t n = v->n;
    *ret = v->v;
    *v = (runvec){0};
    if (n > 1) qsort(*ret, n, sizeof(run_priv *), cmp_seq);
    return n;
}

static void runvec_drop(runvec *v, run_priv *r) {
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++)
        if (v->v[i] != r) v->v[w++] = v->v[i];
    v->n = w;
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

static int pool_index(const dg_sched *s, const dg_task *t) {
    const char *name = t->pool ? t->pool : DEFAULT_POOL_NAME;
    for (size_t i = 0; i < s->n_pools; i++)
        if (strcmp(s->pools[i].name, name) == 0) return (int)i;
    return -1;
}

/* ---- what changed: dirty tasks, finish checks, hints, timers ---- */

static int less_size(const void *a, const void *b) { return *(const size_t *)a < *(const size_t *)b; }

/* Task i of the run is to be evaluated again on the next pass over the run. */
static void mark_dirty(run_priv *r, size_t i) {
    if (r->tflags[i] & TF_DIRTY) return;
    r->tflags[i] |= TF_DIRTY;
    heap_push(&r->dirty, &r->topo_pos[i]);
    runvec_add(&r->s->work, r, &r->in_work);
}

static void mark_finish_check(run_priv *r) { runvec_add(&r->s->fin, r, &r->in_fin); }

static void mark_hint(run_priv *r, size_t i) {
    if (r->tflags[i] & TF_HINT) return;
    r->tflags[i] |= TF_HINT;
    if (r->n_hint == r->cap_hint) {
        r->cap_hint = r->cap_hint ? r->cap_hint * 2 : 8;
        r->hint = xrealloc(r->hint, r->cap_hint * sizeof(size_t));
    }
    r->hint[r->n_hint++] = i;
    runvec_add(&r->s->hints, r, &r->in_hints);
}

/* When task i next needs the scheduler by itself (retry due, sensor check due, timeout),
 * or -1. Each task has at most one timer entry, kept equal to this. */
static int64_t due_of(const dg_ti *ti) {
    if ((ti->state == DG_TI_SCHEDULED || ti->state == DG_TI_UP_FOR_RETRY) && ti->not_before_ms > 0)
        return ti->not_before_ms;
    if ((ti->state == DG_TI_RUNNING || ti->state == DG_TI_QUEUED) && ti->deadline_ms > 0 && !ti->stopping)
        return ti->deadline_ms;
    return -1;
}

static int less_timer(const void *a, const void *b) {
    return ((const timer *)a)->due < ((const timer *)b)->due;
}

static void timer_moved(void *e, size_t pos) {
    timer *t = e;
    t->r->tpos[t->task] = pos;
}

static void timer_drop(dg_sched *s, run_priv *r, size_t i) {
    size_t pos = r->tpos[i];
    if (pos == SIZE_MAX) return;
    r->tpos[i] = SIZE_MAX;
    heap_remove(&s->timers, pos);
}

/* Brings task i's timer entry in line with its state: added, moved or removed. */
static void sync_timer(dg_sched *s, run_priv *r, size_t i) {
    int64_t due = due_of(&r->pub.ti[i]);
    size_t pos = r->tpos[i];
    if (due < 0) {
        timer_drop(s, r, i);
    } else if (pos == SIZE_MAX) {
        timer t = {due, r, i};
        heap_push(&s->timers, &t);
    } else if (((timer *)hat(&s->timers, pos))->due != due) {
        ((timer *)hat(&s->timers, pos))->due = due;
        sift_down(&s->timers, pos);
        sift_up(&s->timers, r->tpos[i]);
    }
}

/* Every state change goes through here so that each one is reported exactly once;
 * put_state is the part that keeps the counts and says which neighbours to look at. */
static void put_state(run_priv *r, size_t i, dg_ti_state st) {
    dg_ti *ti = &r->pub.ti[i];
    bool was = dg_ti_state_finished(ti->state), is = dg_ti_state_finished(st);
    ti->state = st;
    if (was != is) {
        r->n_unfinished += was ? 1 : (size_t)-1;
        if (r->n_unfinished == 0) mark_finish_check(r);
    }
    const dg_task *t = task_of(&r->pub, i);
    /* the trigger rules of the downstream tasks count finished upstreams, by kind */
    if (was || is)
        for (size_t k = 0; k < t->n_downstream; k++) mark_dirty(r, t->downstream[k]);
    if (st == DG_TI_NONE || st == DG_TI_SCHEDULED || st == DG_TI_UP_FOR_RETRY) mark_dirty(r, i);
    /* a PREPARE hint wants every upstream in flight or succeeded */
    if (st == DG_TI_QUEUED || st == DG_TI_RUNNING || st == DG_TI_SUCCESS)
        for (size_t k = 0; k < t->n_downstream; k++) mark_hint(r, t->downstream[k]);
    if (st == DG_TI_NONE) mark_hint(r, i);
    sync_timer(r->s, r, i);
}

static void set_state(dg_sched *s, dg_run *run, size_t i, dg_ti_state st) {
    dg_ti *ti = &run->ti[i];
    if (ti->state == st) return;
    put_state(priv(run), i, st);
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

/* ---- slots ---- */

static void take_slot(dg_sched *s, dg_run *run, size_t i) {
    run_priv *r = priv(run);
    run->ti[i].holds_slot = true;
    r->held++;
    r->key->held++;
    s->running++;
    int p = pool_index(s, task_of(run, i));
    if (p >= 0) s->pool_used[p]++;
}

/* A freed slot wakes the waiting candidates: they are still in their groups, and the
 * next start pass looks at the best of them first. */
static void release_slot(dg_sched *s, dg_run *run, size_t i) {
    dg_ti *ti = &run->ti[i];
    if (!ti->holds_slot) return;
    run_priv *r = priv(run);
    ti->holds_slot = false;
    r->held--;
    r->key->held--;
    s->running--;
    int p = pool_index(s, task_of(run, i));
    if (p >= 0) s->pool_used[p]--;
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

/* Airflow's "downstream" weight rule (the model's), computed once per dg_dag. */
static void attach_info(run_priv *r) {
    dag_key *k = r->key;
    const dg_dag *dag = r->pub.dag;
    for (size_t i = 0; i < k->n_infos; i++)
        if (k->infos[i]->dag == dag) {
            r->info = k->infos[i];
            break;
        }
    if (!r->info) {
        size_t n = dag->n_tasks;
        dag_info *in = xcalloc(1, sizeof *in);
        in->dag = dag;
        in->weight = xcalloc(n ? n : 1, sizeof(int64_t));
        in->topo_pos = xcalloc(n ? n : 1, sizeof(size_t));
        for (size_t p = 0; p < n; p++) in->topo_pos[topo_at(dag, p)] = p;
        for (size_t t = 0; t < n; t++) in->weight[t] = dg_task_effective_weight(dag, t);
        k->infos = xrealloc(k->infos, (k->n_infos + 1) * sizeof(dag_info *));
        k->infos[k->n_infos++] = in;
        r->info = in;
    }
    r->info->refs++;
    r->weight = r->info->weight;
    r->topo_pos = r->info->topo_pos;
}

static void info_free(dag_info *in) {
    free(in->weight);
    free(in->topo_pos);
    free(in);
}

static void detach_info(run_priv *r) {
    dag_key *k = r->key;
    if (--r->info->refs > 0) return;
    for (size_t i = 0; i < k->n_infos; i++)
        if (k->infos[i] == r->info) {
            k->infos[i] = k->infos[--k->n_infos];
            break;
        }
    info_free(r->info);
}

/* ---- candidates: scheduled task instances waiting for a slot ---- */

/* Highest effective priority_weight first, then the older run, then topological order. */
static int cmp_cand(const cand *x, const cand *y) {
    if (x->weight != y->weight) return x->weight > y->weight ? -1 : 1;
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return x->topo_pos < y->topo_pos ? -1 : x->topo_pos > y->topo_pos;
}

static int less_cand(const void *a, const void *b) { return cmp_cand(a, b) < 0; }

static int less_group(const void *a, const void *b) {
    const group *x = *(group *const *)a, *y = *(group *const *)b;
    return cmp_cand(hat(&x->cands, 0), hat(&y->cands, 0)) < 0;
}

static void group_moved(void *e, size_t pos) { (*(group **)e)->gpos = pos; }

static group *group_of(dg_sched *s, run_priv *r, size_t i) {
    dag_key *k = r->key;
    int p = pool_index(s, task_of(&r->pub, i));
    for (size_t g = 0; g < k->n_groups; g++)
        if (k->groups[g]->dag == r->pub.dag && k->groups[g]->pool == p) return k->groups[g];
    group *g = xcalloc(1, sizeof *g);
    g->dag = r->pub.dag;
    g->pool = p;
    g->key = k;
    g->gpos = SIZE_MAX;
    heap_init(&g->cands, sizeof(cand), less_cand, NULL);
    k->groups = xrealloc(k->groups, (k->n_groups + 1) * sizeof(group *));
    k->groups[k->n_groups++] = g;
    return g;
}

static void group_reheap(dg_sched *s, group *g) {
    if (g->cands.n == 0) {
        if (g->gpos != SIZE_MAX) heap_remove(&s->groups, g->gpos);
        g->gpos = SIZE_MAX;
    } else if (g->gpos == SIZE_MAX) {
        heap_push(&s->groups, &g);
    } else {
        sift_down(&s->groups, g->gpos);
        sift_up(&s->groups, g->gpos);
    }
}

static void add_cand(dg_sched *s, run_priv *r, size_t i) {
    if (r->tflags[i] & TF_CAND) return;
    r->tflags[i] |= TF_CAND;
    group *g = group_of(s, r, i);
    cand c = {r->weight[i], r->seq, r, (uint32_t)r->topo_pos[i], (uint32_t)i};
    heap_push(&g->cands, &c);
    r->refs++;
    group_reheap(s, g);
}

static bool cand_valid(const cand *c, int64_t now) {
    const dg_ti *ti = &c->r->pub.ti[c->task];
    return run_active(&c->r->pub) && ti->state == DG_TI_SCHEDULED && ti->not_before_ms <= now;
}

static void pop_cand(group *g) {
    cand *c = hat(&g->cands, 0);
    c->r->tflags[c->task] &= (uint8_t)~TF_CAND;
    c->r->refs--;
    heap_remove(&g->cands, 0);
}

/* ---- DAG keys: per-DAG counts and the queues of queued runs ---- */

static dag_key *key_of(dg_sched *s, const dg_dag *dag) {
    for (size_t i = 0; i < s->n_keys; i++) {
        dag_key *k = s->keys[i];
        if (dag->dag_id ? k->dag_id && strcmp(k->dag_id, dag->dag_id) == 0 : !k->dag_id && k->dag == dag)
            return k;
    }
    dag_key *k = xcalloc(1, sizeof *k);
    k->dag_id = xstrdup(dag->dag_id);
    k->dag = dag;
    s->keys = xrealloc(s->keys, (s->n_keys + 1) * sizeof(dag_key *));
    s->keys[s->n_keys++] = k;
    return k;
}

static void key_act_dirty(dg_sched *s, dag_key *k) {
    if (k->act_dirty) return;
    k->act_dirty = true;
    if (s->n_act == s->cap_act) {
        s->cap_act = s->cap_act ? s->cap_act * 2 : 8;
        s->act = xrealloc(s->act, s->cap_act * sizeof(dag_key *));
    }
    s->act[s->n_act++] = k;
}

static bucket *bucket_of(dag_key *k, const dg_dag *dag) {
    for (size_t b = 0; b < k->n_buckets; b++)
        if (k->buckets[b].dag == dag) return &k->buckets[b];
    for (size_t b = 0; b < k->n_buckets; b++)
        if (!k->buckets[b].head) {
            k->buckets[b].dag = dag;
            return &k->buckets[b];
        }
    k->buckets = xrealloc(k->buckets, (k->n_buckets + 1) * sizeof(bucket));
    k->buckets[k->n_buckets] = (bucket){.dag = dag};
    return &k->buckets[k->n_buckets++];
}

/* Into its version's queue, in creation order. */
static void enqueue(dg_sched *s, run_priv *r) {
    bucket *b = bucket_of(r->key, r->pub.dag);
    run_priv *after = b->tail;
    while (after && after->seq > r->seq) after = after->q_prev;
    r->q_prev = after;
    r->q_next = after ? after->q_next : b->head;
    if (r->q_next) r->q_next->q_prev = r;
    else b->tail = r;
    if (after) after->q_next = r;
    else b->head = r;
    r->in_queue = true;
    key_act_dirty(s, r->key);
}

static void dequeue(run_priv *r) {
    if (!r->in_queue) return;
    bucket *b = bucket_of(r->key, r->pub.dag);
    if (r->q_prev) r->q_prev->q_next = r->q_next;
    else b->head = r->q_next;
    if (r->q_next) r->q_next->q_prev = r->q_prev;
    else b->tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
    r->in_queue = false;
}

/* The run became running. What changed in it while it was not active is still marked
 * (dirty tasks, hints): put it back on the lists that look at them. */
static void on_running(dg_sched *s, run_priv *r) {
    mark_finish_check(r);
    if (r->pub.cancelled) return;
    if (r->dirty.n) runvec_add(&s->work, r, &r->in_work);
    if (r->n_hint) runvec_add(&s->hints, r, &r->in_hints);
    if (r->rearm) {
        r->rearm = false;
        for (size_t i = 0; i < r->pub.dag->n_tasks; i++) sync_timer(s, r, i);
    }
}

/* Every change of a run's state goes through here, to keep the counts and queues. */
static void set_run_state(dg_sched *s, run_priv *r, dg_run_state st) {
    dg_run *run = &r->pub;
    if (run->state == st) return;
    if (run->state == DG_RUN_RUNNING) {
        r->key->running--;
        key_act_dirty(s, r->key);
    }
    dequeue(r);
    run->state = st;
    if (st == DG_RUN_RUNNING) {
        r->key->running++;
        on_running(s, r);
    }
    if (st == DG_RUN_QUEUED && !run->cancelled) enqueue(s, r);
    if (st == DG_RUN_QUEUED && run->cancelled) mark_finish_check(r);
}

/* ---- limits, runs ---- */

/* The candidates wait in groups by pool, and pools are counted by name: after new
 * limits both are rebuilt from the task instances (a config reload, not a hot path). */
static void regroup(dg_sched *s) {
    cand *all = NULL;
    size_t n = 0, cap = 0;
    for (size_t k = 0; k < s->n_keys; k++) {
        dag_key *key = s->keys[k];
        for (size_t g = 0; g < key->n_groups; g++) {
            group *gr = key->groups[g];
            for (size_t i = 0; i < gr->cands.n; i++) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    all = xrealloc(all, cap * sizeof(cand));
                }
                all[n++] = *(cand *)hat(&gr->cands, i);
            }
            heap_free(&gr->cands);
            free(gr);
        }
        free(key->groups);
        key->groups = NULL;
        key->n_groups = 0;
    }
    s->groups.n = 0;
    for (size_t i = 0; i < n; i++) {
        all[i].r->tflags[all[i].task] &= (uint8_t)~TF_CAND;
        all[i].r->refs--;
        add_cand(s, all[i].r, all[i].task);
    }
    free(all);
    for (dg_run *run = s->head; run; run = run->next)
        for (size_t i = 0; i < run->dag->n_tasks; i++) {
            if (!run->ti[i].holds_slot) continue;
            int p = pool_index(s, task_of(run, i));
            if (p >= 0) s->pool_used[p]++;
        }
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
    free(s->pool_used);
    s->pool_used = xcalloc(s->n_pools ? s->n_pools : 1, sizeof(int));
    regroup(s);
}

dg_sched *dg_sched_new(const dg_sched_opts *opts) {
    dg_sched *s = xcalloc(1, sizeof *s);
    s->retry_cap_ms = DEFAULT_RETRY_CAP_MS;
    heap_init(&s->groups, sizeof(group *), less_group, group_moved);
    heap_init(&s->timers, sizeof(timer), less_timer, timer_moved);
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
    free(r->tflags);
    free(r->tpos);
    free(r->hint);
    heap_free(&r->dirty);
    free(r);
}

void dg_sched_free(dg_sched *s) {
    if (!s) return;
    for (dg_run *r = s->head, *next; r; r = next) {
        next = r->next;
        run_free(r);
    }
    for (size_t k = 0; k < s->n_keys; k++) {
        dag_key *key = s->keys[k];
        for (size_t g = 0; g < key->n_groups; g++) {
            heap_free(&key->groups[g]->cands);
            free(key->groups[g]);
        }
        for (size_t i = 0; i < key->n_infos; i++) info_free(key->infos[i]);
        free(key->infos);
        free(key->groups);
        free(key->buckets);
        free(key->dag_id);
        free(key);
    }
    free(s->keys);
    free(s->act);
    heap_free(&s->groups);
    heap_free(&s->timers);
    free(s->work.v);
    free(s->fin.v);
    free(s->hints.v);
    for (size_t i = 0; i < s->n_pools; i++) free((char *)s->pools[i].name);
    free(s->pools);
    free(s->pool_used);
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
    r->s = s;
    r->seq = s->next_seq++;
    r->key = key_of(s, dag);
    r->n_unfinished = n;
    r->tflags = xcalloc(n ? n : 1, sizeof(uint8_t));
    r->tpos = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) r->tpos[i] = SIZE_MAX;
    heap_init(&r->dirty, sizeof(size_t), less_size, NULL);
    attach_info(r);
    /* a new run: every task is looked at once (roots start, `always` tasks too) */
    for (size_t i = 0; i < n; i++) {
        mark_dirty(r, i);
        mark_hint(r, i);
    }

    r->prev = priv(s->tail);
    if (s->tail) s->tail->next = run;
    else s->head = run;
    s->tail = run;
    enqueue(s, r);
    push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
    return run;
}

void dg_sched_set_prev_states(dg_run *run, const dg_ti_state *states) {
    free(run->prev_states);
    run->prev_states = NULL;
    size_t n = run->dag->n_tasks;
    /* depends_on_past decisions may change: look at the whole run again */
    for (size_t i = 0; i < n; i++) {
        mark_dirty(priv(run), i);
        mark_hint(priv(run), i);
    }
    if (!states) return;
    run->prev_states = xcalloc(n ? n : 1, sizeof(dg_ti_state));
    memcpy(run->prev_states, states, n * sizeof(dg_ti_state));
}

static bool keep_cand(const void *e, const void *arg) { return ((const cand *)e)->r != arg; }

void dg_sched_remove_run(dg_sched *s, dg_run *run) {
    if (!run) return;
    run_priv *r = priv(run);
    run_priv *next = priv(run->next);
    if (r->prev) r->prev->pub.next = run->next;
    else s->head = run->next;
    if (next) next->prev = r->prev;
    else s->tail = r->prev ? &r->prev->pub : NULL;
    if (run->state == DG_RUN_RUNNING) {
        r->key->running--;
        key_act_dirty(s, r->key);
    }
    dequeue(r);
    for (size_t i = 0; i < run->dag->n_tasks; i++) release_slot(s, run, i);
    if (r->in_work) runvec_drop(&s->work, r);
    if (r->in_fin) runvec_drop(&s->fin, r);
    if (r->in_hints) runvec_drop(&s->hints, r);
    for (size_t i = 0; i < run->dag->n_tasks; i++) timer_drop(s, r, i);
    if (r->refs) {
        for (size_t k = 0; k < s->n_keys; k++)
            for (size_t g = 0; g < s->keys[k]->n_groups; g++) {
                group *gr = s->keys[k]->groups[g];
                heap_filter(&gr->cands, keep_cand, r);
                group_reheap(s, gr);
            }
    }
    /* Commands not yet taken must not point at freed memory. */
    size_t w = 0;
    for (size_t i = 0; i < s->n_cmds; i++)
        if (s->cmds[i].run != run) s->cmds[w++] = s->cmds[i];
    s->n_cmds = w;
    detach_info(r);
    run_free(run);
}

dg_run *dg_sched_runs(dg_sched *s) { return s->head; }

/* ---- the tick ---- */

static int cmp_timer_order(const void *a, const void *b) {
    const timer *x = a, *y = b;
    if (x->r->seq != y->r->seq) return x->r->seq < y->r->seq ? -1 : 1;
    return x->task < y->task ? -1 : x->task > y->task;
}

/* Pops the timers that are due: retries and sensor checks make their task dirty, timeouts
 * issue their STOP (in run, then task order, as a scan would). */
static void fire_timers(dg_sched *s, int64_t now) {
    timer *fired = NULL;
    size_t n = 0, cap = 0;
    while (s->timers.n > 0) {
        timer t = *(timer *)hat(&s->timers, 0);
        if (t.due > now) break;
        timer_drop(s, t.r, t.task);
        if (run_over(&t.r->pub)) continue;
        dg_ti *ti = &t.r->pub.ti[t.task];
        if (ti->state == DG_TI_QUEUED || ti->state == DG_TI_RUNNING) {
            /* a run that is not running yet arms it again when it starts */
            if (t.r->pub.state != DG_RUN_RUNNING) {
                t.r->rearm = true;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                fired = xrealloc(fired, cap * sizeof(timer));
            }
            fired[n++] = t;
        } else {
            mark_dirty(t.r, t.task);
        }
    }
    if (n > 1) qsort(fired, n, sizeof(timer), cmp_timer_order);
    for (size_t k = 0; k < n; k++) {
        dg_run *run = &fired[k].r->pub;
        dg_ti *ti = &run->ti[fired[k].task];
        ti->stopping = ti->timed_out = true;
        dg_cmd *c = push_cmd(s, DG_CMD_STOP, run, fired[k].task);
        c->try_number = ti->try_number;
        c->reason = DG_STOP_TIMEOUT;
    }
    free(fired);
}



/* Starts the queued runs that max_active_runs lets start, oldest first, looking only at
 * the DAGs where something changed. */
static bool activate_runs(dg_sched *s, int64_t now) {
    if (s->n_act == 0) return false;
    run_priv **started = NULL;
    size_t n = 0, cap = 0;
    dag_key **keys = s->act;
    size_t n_keys = s->n_act;
    s->act = NULL;
    s->n_act = s->cap_act = 0;
    for (size_t k = 0; k < n_keys; k++) {
        dag_key *key = keys[k];
        key->act_dirty = false;
        for (;;) {
            /* the oldest queued run whose version's max_active_runs has room */
            run_priv *best = NULL;
            for (size_t b = 0; b < key->n_buckets; b++) {
                run_priv *h = key->buckets[b].head;
                if (!h) continue;
                int max = h->pub.dag->max_active_runs;
                if (max > 0 && key->running >= max) continue;
                if (!best || h->seq < best->seq) best = h;
            }
            if (!best) break;
            best->pub.start_ms = now;
            set_run_state(s, best, DG_RUN_RUNNING);
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                started = xrealloc(started, cap * sizeof(run_priv *));
            }
            started[n++] = best;
        }
    }
    free(keys);
    if (n > 1) qsort(started, n, sizeof(run_priv *), cmp_seq);
    for (size_t i = 0; i < n; i++) push_cmd(s, DG_CMD_RUN_CHANGED, &started[i]->pub, SIZE_MAX);
    free(started);
    return n > 0;
}

/* Evaluates the run's dirty tasks in topological order, so that a chain of skips settles
 * in one pass: bring due retries back and resolve trigger rules. */
static bool advance_run(dg_sched *s, run_priv *r, int64_t now) {
    bool changed = false;
    dg_run *run = &r->pub;
    const dg_dag *dag = run->dag;
    while (r->dirty.n > 0) {
        size_t i = topo_at(dag, *(size_t *)hat(&r->dirty, 0));
        heap_remove(&r->dirty, 0);
        r->tflags[i] &= (uint8_t)~TF_DIRTY;
        s->evaluations++;
        dg_ti *ti = &run->ti[i];
        switch (ti->state) {
        case DG_TI_UP_FOR_RETRY:
            if (ti->not_before_ms > now) break;
            ti->not_before_ms = 0;
            set_state(s, run, i, DG_TI_SCHEDULED);
            changed = true;
            break;
        case DG_TI_SCHEDULED:
            if (ti->not_before_ms && ti->not_before_ms <= now) {
                ti->not_before_ms = 0;
                sync_timer(s, r, i);
            }
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
        if (ti->state == DG_TI_SCHEDULED && ti->not_before_ms == 0) add_cand(s, r, i);
    }
    return changed;
}

static bool advance_runs(dg_sched *s, int64_t now) {
    if (s->work.n == 0) return false;
    run_priv **v;
    size_t n = runvec_take(&s->work, &v);
    bool changed = false;
    for (size_t k = 0; k < n; k++) v[k]->in_work = false;
    /* a run that is not active keeps its dirty tasks until it starts (on_running) */
    for (size_t k = 0; k < n; k++)
        if (run_active(&v[k]->pub)) changed |= advance_run(s, v[k], now);
    free(v);
    return changed;
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
    take_slot(s, run, i);
    set_state(s, run, i, DG_TI_QUEUED);
    push_cmd(s, DG_CMD_START, run, i)->try_number = ti->try_number;
}

/* Starts what fits the slots, best candidate first. The best group's best candidate is
 * either started or, when its pool or its DAG's max_active_tasks is full, its whole
 * group is set aside for this pass: the work is the tasks started plus the groups
 * found blocked, not the number of waiting tasks. */
static bool start_tasks(dg_sched *s, int64_t now) {
    if (s->running >= s->parallelism || s->groups.n == 0) return false;
    group **aside = NULL;
    size_t n_aside = 0, cap_aside = 0;
    bool changed = false;
    while (s->running < s->parallelism && s->groups.n > 0) {
        group *g = *(group **)hat(&s->groups, 0);
        if (!cand_valid(hat(&g->cands, 0), now)) {
            pop_cand(g);
            group_reheap(s, g);
            continue;
        }
        cand c = *(cand *)hat(&g->cands, 0);
        int mat = c.r->pub.dag->max_active_tasks;
        if ((mat > 0 && g->key->held >= mat) ||
            (g->pool >= 0 && s->pool_used[g->pool] >= s->pools[g->pool].slots)) {
            heap_remove(&s->groups, 0);
            g->gpos = SIZE_MAX;
            if (n_aside == cap_aside) {
                cap_aside = cap_aside ? cap_aside * 2 : 8;
                aside = xrealloc(aside, cap_aside * sizeof(group *));
            }
            aside[n_aside++] = g;
            continue;
        }
        pop_cand(g);
        group_reheap(s, g);
        start_try(s, &c.r->pub, c.task, now);
        changed = true;
    }
    for (size_t k = 0; k < n_aside; k++) group_reheap(s, aside[k]);
    free(aside);
    return changed;
}

static bool finish_runs(dg_sched *s, int64_t now) {
    if (s->fin.n == 0) return false;
    run_priv **v;
    size_t n = runvec_take(&s->fin, &v);
    bool changed = false;
    for (size_t k = 0; k < n; k++) v[k]->in_fin = false;
    for (size_t k = 0; k < n; k++) {
        dg_run *run = &v[k]->pub;
        if (run->state != DG_RUN_RUNNING && !(run->state == DG_RUN_QUEUED && run->cancelled))
            continue;
        if (v[k]->n_unfinished > 0) continue;
        bool failed = run->cancelled;
        for (size_t i = 0; i < run->dag->n_tasks && !failed; i++) {
            dg_ti_state st = run->ti[i].state;
            if (st == DG_TI_FAILED || st == DG_TI_UPSTREAM_FAILED) failed = true;
        }
        set_run_state(s, v[k], failed ? DG_RUN_FAILED : DG_RUN_SUCCESS);
        run->end_ms = now;
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
        if (has_names(failed ? run->dag->on_failure : run->dag->on_success))
            notify(s, run, SIZE_MAX, failed ? DG_EVENT_FAILURE : DG_EVENT_SUCCESS);
        changed = true;
    }
    free(v);
    return changed;
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Lets the driver create the container of a task whose upstreams are all on their
 * way to success, so that starting it later costs only the start call. Only tasks next
 * to a change are looked at. */
static void prepare_hints(dg_sched *s) {
    if (s->hints.n == 0) return;
    run_priv **v;
    size_t n = runvec_take(&s->hints, &v);
    for (size_t k = 0; k < n; k++) {
        run_priv *r = v[k];
        dg_run *run = &r->pub;
        const dg_dag *dag = run->dag;
        r->in_hints = false;
        if (!run_active(run)) continue; /* kept for on_running */
        if (r->n_hint > 1) qsort(r->hint, r->n_hint, sizeof(size_t), cmp_size);
        for (size_t h = 0; h < r->n_hint; h++) {
            size_t i = r->hint[h];
            r->tflags[i] &= (uint8_t)~TF_HINT;
            const dg_task *t = &dag->tasks[i];
            dg_ti *ti = &run->ti[i];
            if (ti->state != DG_TI_NONE || ti->prepared || t->kind != DG_KIND_CONTAINER) continue;
            if (t->trigger_rule != DG_TR_ALL_SUCCESS || t->n_upstream == 0) continue;
            if (blocked_by_past(run, i)) continue;
            bool ok = true, pending = false;
            for (size_t u = 0; u < t->n_upstream && ok; u++) {
                dg_ti_state st = run->ti[t->upstream[u]].state;
                if (st == DG_TI_QUEUED || st == DG_TI_RUNNING) pending = true;
                else if (st != DG_TI_SUCCESS) ok = false;
            }
            if (!ok || !pending) continue;
            ti->prepared = true;
            push_cmd(s, DG_CMD_PREPARE, run, i)->try_number = ti->try_number + 1;
        }
        r->n_hint = 0;
    }
    free(v);
}

void dg_sched_tick(dg_sched *s, int64_t now) {
    fire_timers(s, now);
    bool changed;
    do {
        changed = activate_runs(s, now);
        changed |= advance_runs(s, now);
        changed |= start_tasks(s, now);
        changed |= finish_runs(s, now);
    } while (changed);
    prepare_hints(s);
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
    release_slot(s, run, task);
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
    dequeue(priv(run));
    mark_finish_check(priv(run));
    for (size_t i = 0; i < run->dag->n_tasks; i++) {
        dg_ti *ti = &run->ti[i];
        switch (ti->state) {
        case DG_TI_QUEUED:
        case DG_TI_RUNNING: {
            if (ti->stopping) break;
            ti->stopping = true;
            sync_timer(s, priv(run), i);
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

/* The timer heap's earliest entry that still holds; stale ones are dropped on the way
 * (bookkeeping only: what the scheduler would do is unchanged). */
int64_t dg_sched_next_wakeup(const dg_sched *cs) {
    dg_sched *s = (dg_sched *)cs;
    while (s->timers.n > 0) {
        timer *t = hat(&s->timers, 0);
        if (!run_over(&t->r->pub)) return t->due;
        timer_drop(s, t->r, t->task);
    }
    return -1;
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

int dg_sched_running(const dg_sched *s) { return s->running; }

uint64_t dg_sched_evaluations(const dg_sched *s) { return s->evaluations; }

/* ---- the daemon's verbs: recovery, clear, mark ---- */

void dg_sched_restore_run(dg_sched *s, dg_run *run, dg_run_state state, int64_t start_ms, int64_t end_ms) {
    set_run_state(s, priv(run), state);
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
    if (ti->holds_slot) release_slot(s, run, i);
    switch (r->state) {
    case DG_TI_RUNNING:
    case DG_TI_QUEUED:
        /* a try in flight: it holds a slot again until the driver reports its outcome */
        put_state(priv(run), i, r->state);
        take_slot(s, run, i);
        if (r->state == DG_TI_RUNNING && t->timeout_ms > 0 && r->start_ms)
            ti->deadline_ms = sat_add(r->start_ms, t->timeout_ms);
        break;
    case DG_TI_UP_FOR_RETRY:
        put_state(priv(run), i, DG_TI_UP_FOR_RETRY);
        ti->not_before_ms = sat_add(r->end_ms ? r->end_ms : now,
                                    dg_sched_retry_delay(t, ti->try_number + 1, s->retry_cap_ms));
        break;
    case DG_TI_SCHEDULED:
        put_state(priv(run), i, DG_TI_SCHEDULED);
        break;
    default:
        put_state(priv(run), i, r->state);
        break;
    }
    sync_timer(s, priv(run), i);
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
        run->end_ms = 0;
        run->cancelled = false;
        set_run_state(s, priv(run), DG_RUN_QUEUED);
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
        release_slot(s, run, i);
    }
    unprepare(s, run, i);
    ti->stopping = ti->timed_out = false;
    ti->not_before_ms = ti->deadline_ms = 0;
    ti->end_ms = now;
    set_message(ti, xstrdup(st == DG_TI_SUCCESS ? "marked success" : "marked failed"));
    set_state(s, run, i, st);
    if (run->state == DG_RUN_SUCCESS || run->state == DG_RUN_FAILED) {
        run->end_ms = 0;
        set_run_state(s, priv(run), DG_RUN_RUNNING);
        push_cmd(s, DG_CMD_RUN_CHANGED, run, SIZE_MAX);
    }
    return 0;
}
