/* Schedules in time: cron fire times in IANA zones across DST, data intervals, and
 * `dagd next`. Every expected instant below is written out in UTC, worked out from the
 * published zone rules, not by the code under test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/cli.h"
#include "dagd/cron.h"

static int64_t T(const char *s) {
    int64_t ms;
    cr_assert_eq(dg_parse_time(s, &ms), 0, "bad test time %s", s);
    return ms;
}

static void sched(dg_schedule *s, const char *expr, const char *tz) {
    dg_error err = {0};
    int r = dg_schedule_init(s, expr, tz, &err);
    cr_assert_eq(r, 0, "%s in %s: %s", expr, tz ? tz : "(null)", err.msg ? err.msg : "");
}

/* Fires strictly after `after`, one after another, must be exactly `want` (NULL-ended). */
static void expect_fires(const char *expr, const char *tz, const char *after,
                         const char *const *want) {
    dg_schedule s;
    sched(&s, expr, tz);
    int64_t t = T(after);
    for (size_t i = 0; want[i]; i++) {
        int64_t f = dg_schedule_next_fire(&s, 0, t);
        _cleanup_free_ char *got = f >= 0 ? dg_format_time(f, true) : xstrdup("none");
        cr_assert_str_eq(got, want[i], "%s (%s) fire %zu after %s", expr, tz ? tz : "UTC", i,
                         after);
        t = f;
    }
    dg_schedule_done(&s);
}

#define FIRES(expr, tz, after, ...)                                                        \
    expect_fires(expr, tz, after, (const char *const[]){__VA_ARGS__, NULL})

Test(schedule, field_forms_utc) {
    FIRES("*/15 * * * *", "UTC", "2025-01-01T00:00:00Z", "2025-01-01T00:15:00Z",
          "2025-01-01T00:30:00Z", "2025-01-01T00:45:00Z", "2025-01-01T01:00:00Z");
    FIRES("5-10/2 3 * * *", NULL, "2025-01-01T03:06:00Z", "2025-01-01T03:07:00Z",
          "2025-01-01T03:09:00Z", "2025-01-02T03:05:00Z");
    FIRES("0 1,5,22 * * *", "UTC", "2025-01-01T04:59:59Z", "2025-01-01T05:00:00Z",
          "2025-01-01T22:00:00Z", "2025-01-02T01:00:00Z");
    FIRES("0 0 1 jan-mar,DEC *", "UTC", "2025-02-15T00:00:00Z", "2025-03-01T00:00:00Z",
          "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z");
    /* 2025-01-03 is a Friday */
    FIRES("30 9 * * mon-fri", "UTC", "2025-01-03T09:30:00Z", "2025-01-06T09:30:00Z",
          "2025-01-07T09:30:00Z");
    FIRES("0 12 * * 7", "UTC", "2025-01-01T00:00:00Z", "2025-01-05T12:00:00Z",
          "2025-01-12T12:00:00Z");
    FIRES("0 12 * * fri-sun", "UTC", "2025-01-01T00:00:00Z", "2025-01-03T12:00:00Z",
          "2025-01-04T12:00:00Z", "2025-01-05T12:00:00Z", "2025-01-10T12:00:00Z");
    FIRES("5/20 0 * * *", "UTC", "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z",
          "2025-01-01T00:25:00Z", "2025-01-01T00:45:00Z", "2025-01-02T00:05:00Z");
    FIRES("59 23 31 12 *", "UTC", "2025-06-01T00:00:00Z", "2025-12-31T23:59:00Z",
          "2026-12-31T23:59:00Z");
    /* 31st: months without one are skipped */
    FIRES("0 0 31 * *", "UTC", "2025-01-31T00:00:00Z", "2025-03-31T00:00:00Z",
          "2025-05-31T00:00:00Z");
    /* strictly after, and sub-minute "after" values */
    FIRES("* * * * *", "UTC", "2025-01-01T00:00:00.500Z", "2025-01-01T00:01:00Z",
          "2025-01-01T00:02:00Z");
    FIRES("@hourly", "UTC", "2025-01-01T00:59:59.999Z", "2025-01-01T01:00:00Z");
    FIRES("@daily", "UTC", "2024-12-31T23:00:00Z", "2025-01-01T00:00:00Z");
    FIRES("@midnight", "UTC", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z");
    FIRES("@weekly", "UTC", "2025-01-01T00:00:00Z", "2025-01-05T00:00:00Z",
          "2025-01-12T00:00:00Z");
    FIRES("@monthly", "UTC", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z");
    FIRES("@yearly", "UTC", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
    FIRES("@annually", "UTC", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
}

Test(schedule, day_of_month_or_day_of_week) {
    /* January 2025: Mondays are the 6th, 13th, 20th, 27th; the 10th is a Friday */
    FIRES("0 0 10 * 1", "UTC", "2025-01-01T00:00:00Z", "2025-01-06T00:00:00Z",
          "2025-01-10T00:00:00Z", "2025-01-13T00:00:00Z", "2025-01-20T00:00:00Z",
          "2025-01-27T00:00:00Z", "2025-02-03T00:00:00Z");
    /* only one restricted: both must match (i.e. just the restricted one) */
    FIRES("0 0 10 * *", "UTC", "2025-01-01T00:00:00Z", "2025-01-10T00:00:00Z",
          "2025-02-10T00:00:00Z");
    FIRES("0 0 * * 1", "UTC", "2025-01-01T00:00:00Z", "2025-01-06T00:00:00Z",
          "2025-01-13T00:00:00Z");
    /* a full range written out is unrestricted too */
    FIRES("0 0 10 * sun-sat", "UTC", "2025-01-01T00:00:00Z", "2025-01-10T00:00:00Z");
    /* a stepped day-of-month is restricted: 1st, 16th, 31st or a Monday */
    FIRES("0 0 */15 * mon", "UTC", "2025-01-01T00:00:00Z", "2025-01-06T00:00:00Z",
          "2025-01-13T00:00:00Z", "2025-01-16T00:00:00Z", "2025-01-20T00:00:00Z");
}

/* The DST rule (docs/daemon.md, "Schedules across daylight-saving changes"), checked by hand
 * against the zone rules: Europe/Berlin changes 2025-03-30 at 01:00Z (02:00 CET -> 03:00
 * CEST) and 2025-10-26 at 01:00Z (03:00 CEST -> 02:00 CET); America/New_York changes
 * 2025-03-09 at 07:00Z (02:00 EST -> 03:00 EDT) and 2025-11-02 at 06:00Z (02:00 EDT ->
 * 01:00 EST). */

/* A fixed hour is read on the wall clock: a time in the gap moves forward by the gap, a
 * time that happens twice fires once, at its second occurrence. */
Test(schedule, berlin_daily_across_dst) {
    /* 02:30 CET, then 02:30 (no such time) -> 03:30 CEST, then 02:30 CEST */
    FIRES("30 2 * * *", "Europe/Berlin", "2025-03-28T12:00:00Z", "2025-03-29T01:30:00Z",
          "2025-03-30T01:30:00Z", "2025-03-31T00:30:00Z");
    /* asked from just after the gap: the moved 02:30 (03:30 CEST) is still ahead */
    FIRES("30 2 * * *", "Europe/Berlin", "2025-03-30T01:10:00Z", "2025-03-30T01:30:00Z",
          "2025-03-31T00:30:00Z");
    /* 02:30 CEST, then 02:30 twice: once, at 02:30 CET, then 02:30 CET */
    FIRES("30 2 * * *", "Europe/Berlin", "2025-10-24T12:00:00Z", "2025-10-25T00:30:00Z",
          "2025-10-26T01:30:00Z", "2025-10-27T01:30:00Z");
    /* asked from the first pass (02:15 CEST): the fire is the second pass, an hour on */
    FIRES("30 2 * * *", "Europe/Berlin", "2025-10-26T00:15:00Z", "2025-10-26T01:30:00Z",
          "2025-10-27T01:30:00Z");
    /* asked from the second pass after 02:30 CET: done for the day */
    FIRES("30 2 * * *", "Europe/Berlin", "2025-10-26T01:45:00Z", "2025-10-27T01:30:00Z");
    FIRES("0 3 * * *", "Europe/Berlin", "2025-03-29T12:00:00Z", "2025-03-30T01:00:00Z",
          "2025-03-31T01:00:00Z");
    /* every gap time moves by the gap and each still fires: 02:05..02:10 -> 03:05..03:10
     * CEST, six runs; the day after, 02:05 CEST */
    FIRES("5-10 2 * * *", "Europe/Berlin", "2025-03-29T12:00:00Z", "2025-03-30T01:05:00Z",
          "2025-03-30T01:06:00Z", "2025-03-30T01:07:00Z", "2025-03-30T01:08:00Z",
          "2025-03-30T01:09:00Z", "2025-03-30T01:10:00Z", "2025-03-31T00:05:00Z");
    FIRES("5-10 2 * * *", "Europe/Berlin", "2025-03-30T01:07:00Z", "2025-03-30T01:08:00Z",
          "2025-03-30T01:09:00Z", "2025-03-30T01:10:00Z", "2025-03-31T00:05:00Z");
    /* a moved gap time that lands on a named time fires once: 02:30 -> 03:30 CEST */
    FIRES("30 2,3 * * *", "Europe/Berlin", "2025-03-29T12:00:00Z", "2025-03-30T01:30:00Z",
          "2025-03-31T00:30:00Z", "2025-03-31T01:30:00Z");
    /* both passes of 02:xx name the same wall times: each fires once, in the second pass;
     * 01:45 CEST, then nothing in the first pass, then 02:00 and 02:45 CET, then 03:00 CET */
    FIRES("0,45 1-3 * * *", "Europe/Berlin", "2025-10-25T23:30:00Z", "2025-10-25T23:45:00Z",
          "2025-10-26T01:00:00Z", "2025-10-26T01:45:00Z", "2025-10-26T02:00:00Z");
}

/* An hour field that covers every hour follows real time: it fires at every instant whose
 * local time it names, so nothing in the gap and both passes of the repeated hour. */
Test(schedule, berlin_every_hour_across_dst) {
    /* spring: 00:30 CET, 01:30 CET, 03:30 CEST, 04:30 CEST — one real hour apart */
    FIRES("30 * * * *", "Europe/Berlin", "2025-03-29T22:45:00Z", "2025-03-29T23:30:00Z",
          "2025-03-30T00:30:00Z", "2025-03-30T01:30:00Z", "2025-03-30T02:30:00Z");
    /* autumn: 01:30 CEST, 02:30 CEST, 02:30 CET, 03:30 CET — one real hour apart */
    FIRES("30 * * * *", "Europe/Berlin", "2025-10-25T22:45:00Z", "2025-10-25T23:30:00Z",
          "2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z", "2025-10-26T02:30:00Z");
    /* spring: 00:00 CET, 01:00 CET, 03:00 CEST, 04:00 CEST */
    FIRES("0 * * * *", "Europe/Berlin", "2025-03-29T22:30:00Z", "2025-03-29T23:00:00Z",
          "2025-03-30T00:00:00Z", "2025-03-30T01:00:00Z", "2025-03-30T02:00:00Z");
    /* autumn: 00:00 CEST, 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET */
    FIRES("0 * * * *", "Europe/Berlin", "2025-10-25T21:30:00Z", "2025-10-25T22:00:00Z",
          "2025-10-25T23:00:00Z", "2025-10-26T00:00:00Z", "2025-10-26T01:00:00Z",
          "2025-10-26T02:00:00Z");
    /* every 30 minutes of real time: 01:30 CET, 03:00 CEST, 03:30 CEST */
    FIRES("*/30 * * * *", "Europe/Berlin", "2025-03-30T00:00:00Z", "2025-03-30T00:30:00Z",
          "2025-03-30T01:00:00Z", "2025-03-30T01:30:00Z");
    /* every minute of January's weekdays; asked in October (CEST), the first is Thursday
     * 2026-01-01 00:00 CET */
    FIRES("* * * jan 1-5", "Europe/Berlin", "2025-10-15T10:00:00Z", "2025-12-31T23:00:00Z",
          "2025-12-31T23:01:00Z");
    /* the weekend: Friday 01-02 23:59 CET, then Monday 01-05 00:00 CET */
    FIRES("* * * jan 1-5", "Europe/Berlin", "2026-01-02T22:58:00Z", "2026-01-02T22:59:00Z",
          "2026-01-04T23:00:00Z");
    /* the last one is Friday 2026-01-30 23:59 CET, then Friday 2027-01-01 00:00 CET */
    FIRES("* * * jan 1-5", "Europe/Berlin", "2026-01-30T22:58:00Z", "2026-01-30T22:59:00Z",
          "2026-12-31T23:00:00Z");
}

Test(schedule, berlin_beyond_transition_table) {
    /* 2040 is past most tables: the POSIX rule in the file's footer decides; it changes
     * 2040-03-25 and 2040-10-28, both at 01:00Z */
    FIRES("30 2 * * *", "Europe/Berlin", "2040-03-23T12:00:00Z", "2040-03-24T01:30:00Z",
          "2040-03-25T01:30:00Z", "2040-03-26T00:30:00Z");
    FIRES("30 2 * * *", "Europe/Berlin", "2040-10-27T12:00:00Z", "2040-10-28T01:30:00Z",
          "2040-10-29T01:30:00Z");
    FIRES("30 * * * *", "Europe/Berlin", "2040-03-24T23:45:00Z", "2040-03-25T00:30:00Z",
          "2040-03-25T01:30:00Z", "2040-03-25T02:30:00Z");
    FIRES("30 * * * *", "Europe/Berlin", "2040-10-27T23:45:00Z", "2040-10-28T00:30:00Z",
          "2040-10-28T01:30:00Z", "2040-10-28T02:30:00Z");
    /* Tuesday 2041-01-01 00:00 CET */
    FIRES("* * * jan 1-5", "Europe/Berlin", "2040-10-15T10:00:00Z", "2040-12-31T23:00:00Z");
}

Test(schedule, new_york_across_dst) {
    /* 02:30 EST, then 02:30 (no such time) -> 03:30 EDT, then 02:30 EDT */
    FIRES("30 2 * * *", "America/New_York", "2025-03-07T12:00:00Z", "2025-03-08T07:30:00Z",
          "2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z");
    /* 01:30 EDT, then 01:30 twice: once, at 01:30 EST, then 01:30 EST */
    FIRES("30 1 * * *", "America/New_York", "2025-10-31T12:00:00Z", "2025-11-01T05:30:00Z",
          "2025-11-02T06:30:00Z", "2025-11-03T06:30:00Z");
    /* 02:30 happens once on the autumn day (01:00-01:59 repeats): 02:30 EST */
    FIRES("30 2 * * *", "America/New_York", "2025-11-01T12:00:00Z", "2025-11-02T07:30:00Z");
    /* 02:05..02:10 -> 03:05..03:10 EDT */
    FIRES("5-10 2 * * *", "America/New_York", "2025-03-08T12:00:00Z", "2025-03-09T07:05:00Z",
          "2025-03-09T07:06:00Z", "2025-03-09T07:07:00Z", "2025-03-09T07:08:00Z",
          "2025-03-09T07:09:00Z", "2025-03-09T07:10:00Z", "2025-03-10T06:05:00Z");
    /* every hour, real time: 01:00 EST, 03:00 EDT, 04:00 EDT */
    FIRES("0 * * * *", "America/New_York", "2025-03-09T05:30:00Z", "2025-03-09T06:00:00Z",
          "2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z");
    /* 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST, 03:00 EST */
    FIRES("0 * * * *", "America/New_York", "2025-11-02T03:30:00Z", "2025-11-02T04:00:00Z",
          "2025-11-02T05:00:00Z", "2025-11-02T06:00:00Z", "2025-11-02T07:00:00Z",
          "2025-11-02T08:00:00Z");
    /* 01:30 EST, 03:30 EDT, 04:30 EDT */
    FIRES("30 * * * *", "America/New_York", "2025-03-09T05:45:00Z", "2025-03-09T06:30:00Z",
          "2025-03-09T07:30:00Z", "2025-03-09T08:30:00Z");
    /* 01:30 EDT, 01:30 EST, 02:30 EST */
    FIRES("30 * * * *", "America/New_York", "2025-11-02T04:45:00Z", "2025-11-02T05:30:00Z",
          "2025-11-02T06:30:00Z", "2025-11-02T07:30:00Z");
    /* every 15 minutes of real time through both passes of 01:xx: 01:00..01:45 EDT, then
     * 01:00..01:45 EST, then 02:00 EST */
    FIRES("*/15 * * * *", "America/New_York", "2025-11-02T04:50:00Z", "2025-11-02T05:00:00Z",
          "2025-11-02T05:15:00Z", "2025-11-02T05:30:00Z", "2025-11-02T05:45:00Z",
          "2025-11-02T06:00:00Z", "2025-11-02T06:15:00Z", "2025-11-02T06:30:00Z",
          "2025-11-02T06:45:00Z", "2025-11-02T07:00:00Z");
    /* spring: 01:45 EST, then 03:00 EDT, 15 real minutes later */
    FIRES("*/15 * * * *", "America/New_York", "2025-03-09T06:40:00Z", "2025-03-09T06:45:00Z",
          "2025-03-09T07:00:00Z", "2025-03-09T07:15:00Z");
}

Test(schedule, southern_hemisphere_rule) {
    /* Sydney 2045 (footer rule AEST-10AEDT,M10.1.0,M4.1.0/3): DST ends 2045-04-02 03:00
     * AEDT (16:00Z), starts 2045-10-01 02:00 AEST (16:00Z) */
    /* 02:30 twice: once, at 02:30 AEST; then 02:30 AEST */
    FIRES("30 2 * * *", "Australia/Sydney", "2045-04-01T12:00:00Z", "2045-04-01T16:30:00Z",
          "2045-04-02T16:30:00Z");
    /* 02:30 (no such time) -> 03:30 AEDT; then 02:30 AEDT */
    FIRES("30 2 * * *", "Australia/Sydney", "2045-09-30T12:00:00Z", "2045-09-30T16:30:00Z",
          "2045-10-01T15:30:00Z");
    /* real time: 02:30 AEDT, 02:30 AEST, 03:30 AEST */
    FIRES("30 * * * *", "Australia/Sydney", "2045-04-01T15:15:00Z", "2045-04-01T15:30:00Z",
          "2045-04-01T16:30:00Z", "2045-04-01T17:30:00Z");
    FIRES("0 12 15 1,7 *", "Australia/Sydney", "2045-01-01T00:00:00Z", "2045-01-15T01:00:00Z",
          "2045-07-15T02:00:00Z");
}

Test(schedule, seoul_and_utc) {
    FIRES("0 2 * * *", "Asia/Seoul", "2025-01-01T00:00:00Z", "2025-01-01T17:00:00Z",
          "2025-01-02T17:00:00Z");
    FIRES("0 9 1 * *", "Asia/Seoul", "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z");
    FIRES("0 2 * * *", "UTC", "2025-01-01T00:00:00Z", "2025-01-01T02:00:00Z");
    FIRES("0 2 * * *", "Etc/UTC", "2025-01-01T02:00:00Z", "2025-01-02T02:00:00Z");
}

Test(schedule, leap_day_and_impossible_dates) {
    FIRES("0 0 29 2 *", "UTC", "2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z",
          "2032-02-29T00:00:00Z");
    /* 2100 is not a leap year: 2096 -> 2104 */
    FIRES("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z");
    dg_schedule s;
    sched(&s, "0 0 29 2 *", "UTC");
    dg_interval iv;
    cr_assert_eq(dg_schedule_next_interval(&s, T("2024-01-01"), 0, NULL, &iv), 0);
    cr_assert_eq(iv.start_ms, T("2024-02-29T00:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2028-02-29T00:00:00Z"));
    dg_schedule_done(&s);

    const char *never[] = {"0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "* * 30 2 *"};
    for (size_t i = 0; i < ARRAY_SIZE(never); i++) {
        sched(&s, never[i], "Europe/Berlin");
        cr_assert_eq(dg_schedule_next_fire(&s, 0, T("2025-01-01")), -1, "%s", never[i]);
        cr_assert_eq(dg_schedule_next_interval(&s, T("2025-01-01"), 0, NULL, &iv), -ENOENT);
        cr_assert_eq(dg_schedule_interval_after(&s, T("2025-01-01"), 0, T("2026-01-01"), &iv),
                     -ENOENT);
        dg_schedule_done(&s);
    }
}

Test(schedule, daily_catchup_is_contiguous) {
    dg_schedule s;
    sched(&s, "@daily", "UTC");
    int64_t sd = T("2024-01-01"), stop = T("2025-01-01");
    dg_interval iv, prev;
    size_t n = 0;
    for (int r = dg_schedule_next_interval(&s, sd, 0, NULL, &iv); r == 0 && iv.start_ms < stop;
         r = dg_schedule_next_interval(&s, sd, 0, &prev, &iv)) {
        if (n == 0) cr_assert_eq(iv.start_ms, sd);
        else cr_assert_eq(iv.start_ms, prev.end_ms, "interval %zu not contiguous", n);
        cr_assert_eq(iv.end_ms - iv.start_ms, 86400000);
        prev = iv;
        n++;
    }
    cr_assert_eq(n, 366);
    cr_assert_eq(prev.start_ms, T("2024-12-31"));
    cr_assert_eq(prev.end_ms, stop);
    dg_schedule_done(&s);
}

Test(schedule, daily_intervals_in_berlin_across_dst) {
    /* the interval containing the spring change is 23 h long, the autumn one 25 h */
    dg_schedule s;
    sched(&s, "@daily", "Europe/Berlin");
    dg_interval iv;
    cr_assert_eq(dg_schedule_interval_after(&s, T("2025-01-01"), 0, T("2025-03-30T12:00:00Z"),
                                            &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-03-29T23:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-03-30T22:00:00Z"));
    cr_assert_eq(dg_schedule_interval_after(&s, T("2025-01-01"), 0, T("2025-10-26T12:00:00Z"),
                                            &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-10-25T22:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-10-26T23:00:00Z"));
    dg_schedule_done(&s);
}

/* Intervals are built on the fire times, so they follow the same DST rule. */
Test(schedule, intervals_across_dst) {
    dg_schedule s;
    dg_interval iv, prev;
    /* 02:30 daily: [03-29 02:30 CET, 03-30 03:30 CEST) is 24 h of real time,
     * [10-25 02:30 CEST, 10-26 02:30 CET) 25 h */
    sched(&s, "30 2 * * *", "Europe/Berlin");
    cr_assert_eq(dg_schedule_interval_after(&s, T("2025-01-01"), 0, T("2025-03-30T01:20:00Z"),
                                            &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-03-29T01:30:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-03-30T01:30:00Z"));
    cr_assert_eq(dg_schedule_next_interval(&s, T("2025-01-01"), 0, &iv, &prev), 0);
    cr_assert_eq(prev.start_ms, T("2025-03-30T01:30:00Z"));
    cr_assert_eq(prev.end_ms, T("2025-03-31T00:30:00Z"));
    cr_assert_eq(dg_schedule_interval_after(&s, T("2025-01-01"), 0, T("2025-10-26T00:45:00Z"),
                                            &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-10-25T00:30:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-10-26T01:30:00Z"));
    dg_schedule_done(&s);

    /* hourly through the autumn night: six one-hour intervals of real time, back to back,
     * two of them starting at 02:00 (CEST, then CET) */
    sched(&s, "@hourly", "Europe/Berlin");
    int64_t sd = T("2025-10-25T22:00:00Z");
    size_t n = 0;
    for (int r = dg_schedule_next_interval(&s, sd, 0, NULL, &iv); r == 0 && n < 6;
         r = dg_schedule_next_interval(&s, sd, 0, &prev, &iv)) {
        cr_assert_eq(iv.start_ms, sd + (int64_t)n * 3600000, "interval %zu", n);
        cr_assert_eq(iv.end_ms - iv.start_ms, 3600000, "interval %zu", n);
        prev = iv;
        n++;
    }
    cr_assert_eq(n, 6);
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2025-10-26T01:15:00Z"), &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-10-26T01:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-10-26T02:00:00Z"));
    dg_schedule_done(&s);
}

Test(schedule, every_duration) {
    dg_schedule s;
    sched(&s, "every 30m", "Europe/Berlin");
    int64_t sd = T("2025-01-01T00:10:00Z");
    cr_assert_eq(dg_schedule_next_fire(&s, sd, T("2024-12-31")), sd);
    cr_assert_eq(dg_schedule_next_fire(&s, sd, sd), T("2025-01-01T00:40:00Z"));
    cr_assert_eq(dg_schedule_next_fire(&s, sd, T("2025-01-01T00:55:00Z")),
                 T("2025-01-01T01:10:00Z"));
    /* plain UTC arithmetic, even across a DST change in the schedule's zone */
    cr_assert_eq(dg_schedule_next_fire(&s, sd, T("2025-03-30T00:50:00Z")),
                 T("2025-03-30T01:10:00Z"));
    dg_interval a, b;
    cr_assert_eq(dg_schedule_next_interval(&s, sd, 0, NULL, &a), 0);
    cr_assert_eq(a.start_ms, sd);
    cr_assert_eq(a.end_ms, T("2025-01-01T00:40:00Z"));
    cr_assert_eq(dg_schedule_next_interval(&s, sd, 0, &a, &b), 0);
    cr_assert_eq(b.start_ms, T("2025-01-01T00:40:00Z"));
    cr_assert_eq(b.end_ms, T("2025-01-01T01:10:00Z"));
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2025-01-02T05:00:00Z"), &b), 0);
    cr_assert_eq(b.start_ms, T("2025-01-02T04:40:00Z"));
    cr_assert_eq(b.end_ms, T("2025-01-02T05:10:00Z"));
    dg_schedule_done(&s);
}

/* @once: one interval [start_date, start_date], created at start_date. */
Test(schedule, once) {
    dg_schedule s;
    sched(&s, "@once", "UTC");
    int64_t sd = T("2025-05-05T05:05:00Z");
    cr_assert_eq(dg_schedule_next_fire(&s, sd, T("2025-01-01")), sd);
    cr_assert_eq(dg_schedule_next_fire(&s, sd, sd), -1);
    dg_interval iv, again;
    cr_assert_eq(dg_schedule_next_interval(&s, sd, 0, NULL, &iv), 0);
    cr_assert_eq(iv.start_ms, sd);
    cr_assert_eq(iv.end_ms, sd);
    cr_assert_eq(dg_schedule_next_interval(&s, sd, 0, &iv, &again), -ENOENT);
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2025-01-01"), &again), 0);
    cr_assert_eq(again.start_ms, sd);
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, sd, &again), -ENOENT);
    dg_schedule_done(&s);
}

Test(schedule, end_date_stops) {
    dg_schedule s;
    sched(&s, "@daily", "UTC");
    int64_t sd = T("2025-01-01"), ed = T("2025-01-03");
    dg_interval iv, prev;
    size_t n = 0;
    int r;
    for (r = dg_schedule_next_interval(&s, sd, ed, NULL, &iv); r == 0;
         r = dg_schedule_next_interval(&s, sd, ed, &prev, &iv)) {
        prev = iv;
        n++;
        cr_assert_lt(n, 10);
    }
    cr_assert_eq(r, -ENOENT);
    cr_assert_eq(n, 3, "intervals starting on the 1st, 2nd and 3rd (the end date itself)");
    cr_assert_eq(prev.start_ms, ed);
    cr_assert_eq(dg_schedule_interval_after(&s, sd, ed, T("2025-02-01"), &iv), -ENOENT);
    dg_schedule_done(&s);
}

Test(schedule, start_date_mid_period) {
    /* 0 2 * * * in Seoul, start 2025-01-01T05:00 KST: the 2025-01-01 02:00 fire is before
     * it, so the first interval is [2025-01-02 02:00, 2025-01-03 02:00) KST */
    dg_schedule s;
    sched(&s, "0 2 * * *", "Asia/Seoul");
    int64_t sd = T("2025-01-01T05:00:00+09:00");
    dg_interval iv;
    cr_assert_eq(dg_schedule_next_interval(&s, sd, 0, NULL, &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-01-01T17:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-01-02T17:00:00Z"));
    /* a start_date exactly on a fire time starts there */
    cr_assert_eq(dg_schedule_next_interval(&s, T("2025-01-01T17:00:00Z"), 0, NULL, &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-01-01T17:00:00Z"));
    dg_schedule_done(&s);
}

Test(schedule, interval_after_many_missed) {
    dg_schedule s;
    sched(&s, "0 9-17 * * mon-fri", "America/New_York");
    int64_t sd = T("2020-01-01");
    dg_interval iv;
    /* Sunday 2025-01-05 noon UTC: the last fire was Friday 17:00 EST, the next Monday 09:00 */
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2025-01-05T12:00:00Z"), &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-01-03T22:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-01-06T14:00:00Z"));
    /* on a fire time exactly: the interval that starts there */
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2025-01-06T14:00:00Z"), &iv), 0);
    cr_assert_eq(iv.start_ms, T("2025-01-06T14:00:00Z"));
    cr_assert_eq(iv.end_ms, T("2025-01-06T15:00:00Z"));
    /* before the start date: the first interval */
    cr_assert_eq(dg_schedule_interval_after(&s, sd, 0, T("2019-06-01"), &iv), 0);
    cr_assert_eq(iv.start_ms, T("2020-01-01T14:00:00Z"));
    dg_schedule_done(&s);
}

Test(schedule, tz_conversions) {
    int64_t v;
    cr_assert_eq(dg_tz_utc_to_local("Europe/Berlin", T("2025-07-01T12:00:00Z"), &v), 0);
    cr_assert_eq(v, T("2025-07-01T14:00:00Z"));
    cr_assert_eq(dg_tz_utc_to_local("America/New_York", T("2025-01-01T12:00:00.250Z"), &v), 0);
    cr_assert_eq(v, T("2025-01-01T07:00:00.250Z"));
    cr_assert_eq(dg_tz_local_to_utc("Asia/Seoul", T("2025-01-01T09:00:00Z"), &v), 0);
    cr_assert_eq(v, T("2025-01-01T00:00:00Z"));
    cr_assert_eq(dg_tz_local_to_utc("Europe/Berlin", T("2025-10-26T02:30:00Z"), &v), 0);
    cr_assert_eq(v, T("2025-10-26T01:30:00Z"), "second occurrence, 02:30 CET");
    cr_assert_eq(dg_tz_local_to_utc("Europe/Berlin", T("2025-03-30T02:30:00Z"), &v), 0);
    cr_assert_eq(v, T("2025-03-30T01:30:00Z"), "moved forward by the gap, 03:30 CEST");
    cr_assert_eq(dg_tz_local_to_utc("America/New_York", T("2025-03-09T02:30:00.250Z"), &v), 0);
    cr_assert_eq(v, T("2025-03-09T07:30:00.250Z"), "03:30:00.250 EDT");
    cr_assert_eq(dg_tz_local_to_utc("America/New_York", T("2025-11-02T01:59:59Z"), &v), 0);
    cr_assert_eq(v, T("2025-11-02T06:59:59Z"), "01:59:59 EST");
    cr_assert_eq(dg_tz_local_to_utc("America/New_York", T("2025-11-02T02:00:00Z"), &v), 0);
    cr_assert_eq(v, T("2025-11-02T07:00:00Z"), "02:00 EST, just after the repeated hour");
    cr_assert_eq(dg_tz_local_to_utc(NULL, 5, &v), 0);
    cr_assert_eq(v, 5);
    cr_assert_eq(dg_tz_utc_to_local("Nowhere/Special", 0, &v), -EINVAL);
    cr_assert_eq(dg_tz_utc_to_local("../etc/passwd", 0, &v), -EINVAL);
}

/* Every truncation of a real zone file is refused cleanly or read within bounds. */
Test(schedule, truncated_zone_files) {
    char *data = NULL;
    size_t len = 0;
    cr_assert_eq(dg_read_file("/usr/share/zoneinfo/Europe/Berlin", &data, &len), 0);
    char dir[] = "/tmp/test_schedule_tz.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    setenv("TZDIR", dir, 1);
    size_t refused = 0;
    for (size_t n = 0; n < len; n += 3) {
        char name[32];
        snprintf(name, sizeof name, "Cut%zu", n);
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(data, 1, n, f), n);
        fclose(f);
        int64_t v;
        if (dg_tz_utc_to_local(name, T("2025-07-01T00:00:00Z"), &v) < 0) refused++;
        unlink(path);
    }
    cr_assert_gt(refused, len / 3 / 2, "most cuts lose the data or the footer");
    unsetenv("TZDIR");
    rmdir(dir);
    free(data);
}

Test(schedule, init_errors) {
    dg_schedule s = {.tz = NULL};
    dg_error err = {0};
    cr_assert_lt(dg_schedule_init(&s, "0 2 * * *", "Mars/Olympus", &err), 0);
    cr_assert_not_null(strstr(err.msg, "Mars/Olympus"), "%s", err.msg);
    cr_assert_null(s.tz, "untouched on failure");
    dg_error_clear(&err);
    cr_assert_lt(dg_schedule_init(&s, "61 * * * *", "UTC", &err), 0);
    cr_assert_not_null(strstr(err.msg, "minute"), "%s", err.msg);
    dg_error_clear(&err);
    sched(&s, "@daily ", NULL);
    cr_assert_str_eq(s.tz, "UTC");
    dg_schedule_done(&s);
    dg_schedule_done(NULL);
}

/* ---- dagd next ---- */

typedef struct tmpdir {
    char path[64];
} tmpdir;

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Runs dg__cli_next with stdout and stderr captured. */
static int run_next(char **out, char **errout, const char *const *args) {
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)"next";
    for (size_t i = 0; args[i]; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    FILE *fo = tmpfile(), *fe = tmpfile();
    cr_assert(fo && fe);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    int rc = dg__cli_next(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    FILE *fs[2] = {fo, fe};
    char **rets[2] = {out, errout};
    for (int i = 0; i < 2; i++) {
        long n = ftell(fs[i]);
        rewind(fs[i]);
        char *b = xcalloc((size_t)n + 1, 1);
        cr_assert_eq(fread(b, 1, (size_t)n, fs[i]), (size_t)n);
        fclose(fs[i]);
        *rets[i] = b;
    }
    return rc;
}

#define NEXT(out, err, ...) run_next(out, err, (const char *const[]){__VA_ARGS__, NULL})

static void make_dags(tmpdir *d) {
    strcpy(d->path, "/tmp/test_schedule.XXXXXX");
    cr_assert_not_null(mkdtemp(d->path));
    _cleanup_free_ char *a = xasprintf("%s/sales.yml", d->path);
    write_file(a, "dag: daily_sales\n"
                  "schedule: \"0 2 * * *\"\n"
                  "timezone: Asia/Seoul\n"
                  "start_date: 2025-01-01T05:00:00+09:00\n"
                  "end_date: 2025-01-04\n"
                  "tasks:\n  a: {image: busybox}\n");
    _cleanup_free_ char *b = xasprintf("%s/manual.yml", d->path);
    write_file(b, "dag: manual_only\ntasks:\n  a: {image: busybox}\n");
    _cleanup_free_ char *c = xasprintf("%s/often.yaml", d->path);
    write_file(c, "dag: often\nschedule: every 30m\nstart_date: 2025-01-01T00:10:00Z\n"
                  "tasks:\n  a: {image: busybox}\n");
}

static void rm_dags(tmpdir *d) {
    const char *names[] = {"sales.yml", "manual.yml", "often.yaml"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", d->path, names[i]);
        unlink(p);
    }
    rmdir(d->path);
}

Test(next, lines_from_file_and_by_id) {
    tmpdir d;
    make_dags(&d);
    _cleanup_free_ char *file = xasprintf("%s/sales.yml", d.path);
    char *out, *err;
    int rc = NEXT(&out, &err, file, "--from", "2024-06-01T00:00:00Z", "-n", "2");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_eq(out, "2025-01-01T17:00:00Z 2025-01-02T17:00:00Z\n"
                          "2025-01-02T17:00:00Z 2025-01-03T17:00:00Z\n");
    free(out);
    free(err);

    /* by id; the run whose interval holds --from comes first; end_date stops the list */
    rc = NEXT(&out, &err, "daily_sales", "--dags", d.path, "--from=2025-01-03T00:00:00Z");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_eq(out, "2025-01-02T17:00:00Z 2025-01-03T17:00:00Z\n"
                          "2025-01-03T17:00:00Z 2025-01-04T17:00:00Z\n");
    free(out);
    free(err);

    setenv("DAGD_DAGS_FOLDER", d.path, 1);
    rc = NEXT(&out, &err, "often", "--from", "2025-01-01T01:00:00Z", "-n3");
    unsetenv("DAGD_DAGS_FOLDER");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_eq(out, "2025-01-01T00:40:00Z 2025-01-01T01:10:00Z\n"
                          "2025-01-01T01:10:00Z 2025-01-01T01:40:00Z\n"
                          "2025-01-01T01:40:00Z 2025-01-01T02:10:00Z\n");
    free(out);
    free(err);
    rm_dags(&d);
}

Test(next, json) {
    tmpdir d;
    make_dags(&d);
    char *out, *err;
    int rc = NEXT(&out, &err, "--json", "daily_sales", "--dags", d.path, "--from",
                  "2025-01-01T00:00:00Z", "-n", "1");
    cr_assert_eq(rc, 0, "%s", err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert_not_null(j, "%s: %s", je.text, out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "dag_id")), "daily_sales");
    json_t *next = json_object_get(j, "next");
    cr_assert_eq(json_array_size(next), 1);
    json_t *r = json_array_get(next, 0);
    cr_assert_str_eq(json_string_value(json_object_get(r, "logical_date")),
                     "2025-01-01T17:00:00Z");
    cr_assert_str_eq(json_string_value(json_object_get(r, "data_interval_start")),
                     "2025-01-01T17:00:00Z");
    cr_assert_str_eq(json_string_value(json_object_get(r, "data_interval_end")),
                     "2025-01-02T17:00:00Z");
    cr_assert_str_eq(json_string_value(json_object_get(r, "run_after")),
                     "2025-01-02T17:00:00Z");
    json_decref(j);
    free(out);
    free(err);
    rm_dags(&d);
}

Test(next, no_schedule_and_errors) {
    tmpdir d;
    make_dags(&d);
    char *out, *err;
    cr_assert_eq(NEXT(&out, &err, "manual_only", "--dags", d.path), 0);
    cr_assert_str_eq(out, "");
    cr_assert_not_null(strstr(err, "no schedule"), "%s", err);
    free(out);
    free(err);

    const char *const bad[][5] = {
        {"daily_sales", "--dags", "", "-n", "0"},
        {"daily_sales", "--dags", "", "-n", "x"},
        {"daily_sales", "--dags", "", "--from", "yesterday"},
        {"daily_sales", "--dags", "", "--bogus", NULL},
        {"nosuchdag", "--dags", "", NULL, NULL},
        {"--dags", "", NULL, NULL, NULL},
        {"daily_sales", "often", "--dags", "", NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *args[6] = {0};
        for (size_t k = 0; k < 5 && bad[i][k]; k++)
            args[k] = bad[i][k][0] ? bad[i][k] : d.path;
        cr_assert_eq(run_next(&out, &err, args), 2, "case %zu", i);
        cr_assert_str_eq(out, "", "case %zu", i);
        cr_assert_neq(err[0], 0, "case %zu says why", i);
        free(out);
        free(err);
    }
    rm_dags(&d);
}
