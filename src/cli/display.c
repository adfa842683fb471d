/* cli/display — progress of a foreground run: a live table redrawn in place on a
 * terminal, plain timestamped lines otherwise (one per state change). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_internal.h"

static const char *state_color(dg_ti_state s) {
    switch (s) {
    case DG_TI_SUCCESS: return "\033[32m";
    case DG_TI_FAILED:
    case DG_TI_UPSTREAM_FAILED: return "\033[31m";
    case DG_TI_RUNNING: return "\033[36m";
    case DG_TI_UP_FOR_RETRY: return "\033[33m";
    case DG_TI_SKIPPED: return "\033[35m";
    case DG_TI_QUEUED:
    case DG_TI_SCHEDULED: return "\033[34m";
    default: return "\033[2m";
    }
}

void dg__display_init(dg_display *d, FILE *out, bool tty) {
    memset(d, 0, sizeof *d);
    d->out = out;
    d->tty = tty;
    d->last_run_state = -1;
}

void dg__display_free(dg_display *d) {
    free(d->last_state);
    free(d->last_try);
    d->last_state = d->last_try = NULL;
}

/* True when (task, state, try) differs from what was printed last for that task. */
static bool changed(dg_display *d, const dg_run *run, size_t task) {
    if (!d->last_state) {
        d->n_tasks = run->dag->n_tasks;
        d->last_state = xcalloc(d->n_tasks, sizeof(int));
        d->last_try = xcalloc(d->n_tasks, sizeof(int));
        for (size_t i = 0; i < d->n_tasks; i++) d->last_state[i] = -1;
    }
    const dg_ti *ti = &run->ti[task];
    if (task >= d->n_tasks || (d->last_state[task] == (int)ti->state && d->last_try[task] == ti->try_number))
        return false;
    d->last_state[task] = (int)ti->state;
    d->last_try[task] = ti->try_number;
    return true;
}

static void fmt_elapsed(char *b, size_t n, int64_t ms) {
    if (ms < 0) ms = 0;
    if (ms < 60000) snprintf(b, n, "%.1fs", (double)ms / 1000.0);
    else snprintf(b, n, "%lldm%02llds", (long long)(ms / 60000), (long long)(ms / 1000 % 60));
}

/* Redraw the table: move the cursor up over the previous drawing and overwrite it. */
void dg__display_draw(dg_display *d, dg_run *run, dg_exec *x, int64_t now) {
    if (!d->tty || !run) return;
    const dg_dag *dag = run->dag;
    FILE *f = d->out;
    if (d->drawn_lines) fprintf(f, "\033[%dA", d->drawn_lines);
    int lines = 0;
    size_t w = 4;
    for (size_t i = 0; i < dag->n_tasks; i++)
        if (strlen(dag->tasks[i].id) > w) w = strlen(dag->tasks[i].id);
    if (w > 40) w = 40;
    char el[32];
    fmt_elapsed(el, sizeof el, (run->end_ms ? run->end_ms : now) - (run->start_ms ? run->start_ms : now));
    fprintf(f, "\033[2K\033[1m%s\033[0m  %s  %s%s\033[0m  %s\n", dag->dag_id, run->run_id,
            run->state == DG_RUN_SUCCESS ? "\033[32m" : run->state == DG_RUN_FAILED ? "\033[31m" : "\033[36m",
            dg_run_state_name(run->state), el);
    lines++;
    fprintf(f, "\033[2K  %-*s  %-16s %-5s %-8s %s\n", (int)w, "TASK", "STATE", "TRY", "TIME", "DETAIL");
    lines++;
    for (size_t k = 0; k < dag->n_tasks; k++) {
        size_t i = dag->topo[k];
        const dg_ti *ti = &run->ti[i];
        char tm[32] = "";
        if (ti->start_ms) fmt_elapsed(tm, sizeof tm, (ti->end_ms ? ti->end_ms : now) - ti->start_ms);
        char tr[16] = "";
        if (ti->try_number) snprintf(tr, sizeof tr, "%d/%d", ti->try_number, ti->max_tries);
        const char *detail = ti->message ? ti->message : "";
        const char *out = dg_exec_output(x, run, i);
        _cleanup_free_ char *od = NULL;
        if (!ti->message && out && ti->state == DG_TI_SUCCESS) detail = od = xasprintf("→ %.40s", out);
        fprintf(f, "\033[2K  %-*.*s  %s%-16s\033[0m %-5s %-8s %.70s\n", (int)w, (int)w,
                dag->tasks[i].id, state_color(ti->state), dg_ti_state_name(ti->state), tr, tm, detail);
        lines++;
    }
    d->drawn_lines = lines;
    fflush(f);
}

void dg__display_ti(dg_display *d, dg_run *run, size_t task) {
    if (d->tty || !changed(d, run, task)) return;
    const dg_ti *ti = &run->ti[task];
    _cleanup_free_ char *ts = dg_format_time_ms(dg_now_ms());
    fprintf(d->out, "%s %s %s try=%d", ts, run->dag->tasks[task].id, dg_ti_state_name(ti->state),
            ti->try_number);
    if (ti->has_exit_code && dg_ti_state_finished(ti->state)) fprintf(d->out, " exit=%d", ti->exit_code);
    if (ti->message && ti->state != DG_TI_RUNNING) fprintf(d->out, " — %s", ti->message);
    fputc('\n', d->out);
    fflush(d->out);
}

void dg__display_run(dg_display *d, dg_run *run) {
    if (d->tty || d->last_run_state == (int)run->state) return;
    d->last_run_state = (int)run->state;
    _cleanup_free_ char *ts = dg_format_time_ms(dg_now_ms());
    fprintf(d->out, "%s run %s %s\n", ts, run->run_id, dg_run_state_name(run->state));
    fflush(d->out);
}
