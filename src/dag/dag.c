/* dag/dag — the parts of the DAG model that do not parse: diagnostics, trigger-rule names,
 * lookups, the downstream weight rule, and freeing. The loader (dag/load.c) builds a dg_dag;
 * after that it is read-only and everything it points to is freed by dg_dag_free. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "dagd/dag.h"

static const char *const tr_names[_DG_TR_MAX] = {
    [DG_TR_ALL_SUCCESS] = "all_success",
    [DG_TR_ALL_FAILED] = "all_failed",
    [DG_TR_ALL_DONE] = "all_done",
    [DG_TR_ONE_SUCCESS] = "one_success",
    [DG_TR_ONE_FAILED] = "one_failed",
    [DG_TR_NONE_FAILED] = "none_failed",
    [DG_TR_NONE_FAILED_MIN_ONE_SUCCESS] = "none_failed_min_one_success",
    [DG_TR_NONE_SKIPPED] = "none_skipped",
    [DG_TR_ALWAYS] = "always",
    [DG_TR_ONE_DONE] = "one_done",
    [DG_TR_ALL_SKIPPED] = "all_skipped",
};

const char *dg_trigger_rule_name(dg_trigger_rule r) {
    if ((unsigned)r >= _DG_TR_MAX) return NULL;
    return tr_names[r];
}

int dg_trigger_rule_from_name(const char *s) {
    if (!s) return -EINVAL;
    for (int i = 0; i < _DG_TR_MAX; i++)
        if (strcmp(s, tr_names[i]) == 0) return i;
    return -EINVAL;
}

ssize_t dg_dag_task_index(const dg_dag *dag, const char *id) {
    if (!dag || !id) return -1;
    for (size_t i = 0; i < dag->n_tasks; i++)
        if (strcmp(dag->tasks[i].id, id) == 0) return (ssize_t)i;
    return -1;
}

const dg_notification *dg_dag_notification(const dg_dag *dag, const char *name) {
    if (!dag || !name) return NULL;
    for (size_t i = 0; i < dag->n_notifications; i++)
        if (strcmp(dag->notifications[i].name, name) == 0) return &dag->notifications[i];
    return NULL;
}

/* Each downstream task counts once even when reachable by several paths (diamonds). */
int64_t dg_task_effective_weight(const dg_dag *dag, size_t task) {
    if (!dag || task >= dag->n_tasks) return 0;
    _cleanup_free_ bool *seen = xcalloc(dag->n_tasks, sizeof(bool));
    _cleanup_free_ size_t *stack = xcalloc(dag->n_tasks, sizeof(size_t));
    size_t sp = 0;
    int64_t w = dag->tasks[task].priority_weight;
    seen[task] = true;
    stack[sp++] = task;
    while (sp > 0) {
        const dg_task *t = &dag->tasks[stack[--sp]];
        for (size_t i = 0; i < t->n_downstream; i++) {
            size_t d = t->downstream[i];
            if (seen[d]) continue;
            seen[d] = true;
            w += dag->tasks[d].priority_weight;
            stack[sp++] = d;
        }
    }
    return w;
}

static void kv_free(dg_kv *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].key);
        free(v[i].value);
    }
    free(v);
}

static void task_clear(dg_task *t) {
    free(t->id);
    free(t->image);
    dg_strv_free(t->command);
    dg_strv_free(t->entrypoint);
    kv_free(t->env, t->n_env);
    free(t->env_file);
    free(t->working_dir);
    free(t->user);
    free(t->network);
    dg_strv_free(t->volumes);
    free(t->skip_on_exit_code);
    kv_free(t->labels, t->n_labels);
    free(t->hostname);
    dg_strv_free(t->extra_hosts);
    dg_strv_free(t->placement_constraints);
    dg_strv_free(t->placement_preferences);
    dg_strv_free(t->connections);
    free(t->output_file);
    free(t->sensor.file);
    free(t->sensor.dag_id);
    free(t->sensor.task_id);
    dg_strv_free(t->sensor.allowed_states);
    dg_strv_free(t->sensor.failed_states);
    free(t->sensor.url);
    free(t->sensor.body);
    free(t->notify);
    dg_strv_free(t->depends_on);
    free(t->upstream);
    free(t->downstream);
    free(t->pool);
    dg_strv_free(t->on_failure);
    dg_strv_free(t->on_success);
    dg_strv_free(t->on_retry);
    free(t->doc);
}

void dg_dag_free(dg_dag *dag) {
    if (!dag) return;
    free(dag->file);
    free(dag->dag_id);
    free(dag->description);
    free(dag->schedule);
    free(dag->timezone);
    dg_strv_free(dag->tags);
    json_decref(dag->params);
    for (size_t i = 0; i < dag->n_notifications; i++) {
        dg_notification *n = &dag->notifications[i];
        free(n->name);
        dg_strv_free(n->email_to);
        free(n->email_subject);
        free(n->email_body);
        free(n->webhook_url);
        free(n->webhook_body);
    }
    free(dag->notifications);
    dg_strv_free(dag->on_failure);
    dg_strv_free(dag->on_success);
    for (size_t i = 0; i < dag->n_tasks; i++) task_clear(&dag->tasks[i]);
    free(dag->tasks);
    free(dag->topo);
    free(dag);
}
