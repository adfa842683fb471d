/* cron — schedule expressions (SPEC §1): 5-field cron with lists, ranges, steps and
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
