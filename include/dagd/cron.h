/* cron — schedule expressions (docs/dags.md): 5-field cron with lists, ranges, steps and
 * month/day names; presets (@once @hourly @daily @weekly @monthly @yearly); "every <duration>".
 * This header is the parse/validate surface; next-time computation builds on dg_cron. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "dagd/util.h"

typedef enum { DG_SCHED_CRON = 0, DG_SCHED_ONCE, DG_SCHED_EVERY } dg_sched_type;

typedef struct dg_cron {
    dg_sched_type type;
    int64_t every_ms;  /* DG_SCHED_EVERY */
    uint64_t minutes;  /* bit i = minute i (0-59) */
    uint32_t hours;    /* 0-23 */
    uint32_t mdays;    /* bit d = day of month d (1-31) */
    uint16_t months;   /* bit m = month m (1-12) */
    uint8_t wdays;     /* bit w = weekday w (0 = Sunday .. 6) */
    bool mday_star, wday_star; /* for the classic day-of-month OR day-of-week rule */
} dg_cron;

/* err gets a message naming the bad field, e.g. "minute field: 61 is out of range 0-59". */
int dg_cron_parse(const char *expr, dg_cron *ret, dg_error *err);

/* ---- schedules in time (docs/daemon.md: Airflow 2 data intervals) ---- */

/* A parsed `schedule:` with its timezone. */
typedef struct dg_schedule {
    dg_cron cron;
    char *tz; /* IANA name, "UTC" by default */
} dg_schedule;

int dg_schedule_init(dg_schedule *s, const char *expr, const char *tz, dg_error *err);
void dg_schedule_done(dg_schedule *s);

/* The first cron fire time strictly after `after_ms` (UTC ms), evaluating the cron fields
 * in the schedule's local time. DST (docs/daemon.md, "Schedules across daylight-saving
 * changes"): when the hour field covers every hour the schedule follows real time, firing
 * at every instant whose local time it names (none in the spring-forward gap, both passes
 * of the repeated hour). Otherwise each named wall time fires once, made real as
 * dg_tz_local_to_utc does: a gap time moves forward by the gap, a repeated time fires at
 * its second occurrence. For DG_SCHED_EVERY: start + k*every, real time. Returns -1 when
 * there is none (e.g. @once after its single run, or an impossible date like Feb 30). */
int64_t dg_schedule_next_fire(const dg_schedule *s, int64_t start_ms, int64_t after_ms);

/* Data intervals: the run for [start, end) is created at `end`; its logical date is
 * `start`. The first interval starts at the first fire time >= start_date. */
typedef struct dg_interval {
    int64_t start_ms, end_ms;
} dg_interval;

/* The interval following `prev` (or the first one when prev is NULL), or -ENOENT when
 * the schedule has no more (end_date passed, @once done). end_date_ms 0 = none. */
int dg_schedule_next_interval(const dg_schedule *s, int64_t start_date_ms, int64_t end_date_ms,
                              const dg_interval *prev, dg_interval *ret);

/* The first data interval whose end is after t_ms: the one containing t_ms, or the first
 * one when t_ms precedes it. This is what "the next run" means with catchup off, and where
 * `dagd next --from` starts. -ENOENT when there is none (end_date passed, @once done). */
int dg_schedule_interval_after(const dg_schedule *s, int64_t start_date_ms, int64_t end_date_ms,
                               int64_t t_ms, dg_interval *ret);

/* The data interval of a run made by hand (`dagd run`, trigger) for logical date
 * logical_ms, as Airflow 2.10 infers it (docs/dags.md, "Schedules and data intervals"): for a
 * cron expression or preset, the latest complete interval ending at or before the logical
 * date; for `every D`, [logical - D, logical); for @once, or s NULL (no schedule), the
 * empty interval [logical, logical]. */
void dg_schedule_manual_interval(const dg_schedule *s, int64_t logical_ms, dg_interval *ret);

/* Timezone conversions through the same cached tz database zones (NULL = UTC). Local times
 * are milliseconds counted as if the wall clock were UTC. As in Airflow 2 (pendulum), a
 * local time that happens twice maps to its second occurrence (after the clocks went back),
 * and one that does not exist is read with the offset before the gap, which moves it
 * forward by the gap's length (Berlin 02:30 on the spring-forward day is 03:30 CEST).
 * -EINVAL for an unknown zone. */
int dg_tz_utc_to_local(const char *tz, int64_t utc_ms, int64_t *ret_local_ms);
int dg_tz_local_to_utc(const char *tz, int64_t local_ms, int64_t *ret_utc_ms);
