/* The data interval of a run made by hand (dg_schedule_manual_interval), as Airflow 2.10's
 * infer_manual_data_interval gives it. Every expected interval is written out in UTC. */
#include <criterion/criterion.h>

#include "dagd/cron.h"

static int64_t T(const char *s) {
    int64_t ms;
    cr_assert_eq(dg_parse_time(s, &ms), 0, "bad test time %s", s);
    return ms;
}

/* expr NULL: a DAG without a schedule. */
static void expect(const char *expr, const char *tz, const char *logical, const char *start,
                   const char *end) {
    dg_schedule s;
    dg_error err = {0};
    if (expr) cr_assert_eq(dg_schedule_init(&s, expr, tz, &err), 0, "%s: %s", expr, err.msg);
    dg_interval iv = {-1, -1};
    dg_schedule_manual_interval(expr ? &s : NULL, T(logical), &iv);
    _cleanup_free_ char *got_start = dg_format_time(iv.start_ms, true);
    _cleanup_free_ char *got_end = dg_format_time(iv.end_ms, true);
    cr_assert_str_eq(got_start, start, "%s (%s) at %s: start", expr ? expr : "no schedule",
                     tz ? tz : "UTC", logical);
    cr_assert_str_eq(got_end, end, "%s (%s) at %s: end", expr ? expr : "no schedule",
                     tz ? tz : "UTC", logical);
    if (expr) dg_schedule_done(&s);
}

/* `dagd run examples/daily_sales.yml --date 2025-01-15`: the day before, not an empty
 * interval; any time later that day gives the same complete interval. */
Test(manual_interval, daily) {
    expect("@daily", "UTC", "2025-01-15", "2025-01-14T00:00:00Z", "2025-01-15T00:00:00Z");
    expect("@daily", "UTC", "2025-01-15T13:30:00Z", "2025-01-14T00:00:00Z",
           "2025-01-15T00:00:00Z");
    expect("@daily", "UTC", "2025-01-15T00:00:00.001Z", "2025-01-14T00:00:00Z",
           "2025-01-15T00:00:00Z");
    expect("@daily", "UTC", "2025-01-14T23:59:59.999Z", "2025-01-13T00:00:00Z",
           "2025-01-14T00:00:00Z");
    expect("0 0 * * *", NULL, "2025-03-01T06:00:00Z", "2025-02-28T00:00:00Z",
           "2025-03-01T00:00:00Z");
}

Test(manual_interval, other_crons) {
    expect("@hourly", "UTC", "2025-01-15T13:30:15.250Z", "2025-01-15T12:00:00Z",
           "2025-01-15T13:00:00Z");
    expect("30 2 * * *", "UTC", "2025-01-15T02:30:00Z", "2025-01-14T02:30:00Z",
           "2025-01-15T02:30:00Z");
    expect("30 2 * * *", "UTC", "2025-01-15T02:29:59Z", "2025-01-13T02:30:00Z",
           "2025-01-14T02:30:00Z");
    /* 2025-01-15 is a Wednesday; @weekly fires on Sundays */
    expect("@weekly", "UTC", "2025-01-15T00:00:00Z", "2025-01-05T00:00:00Z",
           "2025-01-12T00:00:00Z");
    expect("@monthly", "UTC", "2025-01-15", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z");
    expect("@yearly", "UTC", "2025-01-01", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
    expect("0 9 * * mon-fri", "UTC", "2025-01-13T08:00:00Z", "2025-01-09T09:00:00Z",
           "2025-01-10T09:00:00Z");
}

/* A cron schedule in a zone with daylight saving: the interval is built on the local fire
 * times, so the day that holds the change is 23 or 25 real hours long. */
Test(manual_interval, dst_zone) {
    /* Berlin, 2025-03-30: 02:00 CET becomes 03:00 CEST */
    expect("@daily", "Europe/Berlin", "2025-03-31T12:00:00Z", "2025-03-29T23:00:00Z",
           "2025-03-30T22:00:00Z");
    expect("@daily", "Europe/Berlin", "2025-03-30T22:00:00Z", "2025-03-29T23:00:00Z",
           "2025-03-30T22:00:00Z");
    expect("@daily", "Europe/Berlin", "2025-03-30T21:59:59Z", "2025-03-28T23:00:00Z",
           "2025-03-29T23:00:00Z");
    /* 2025-10-26: 03:00 CEST becomes 02:00 CET */
    expect("@daily", "Europe/Berlin", "2025-10-27T12:00:00Z", "2025-10-25T22:00:00Z",
           "2025-10-26T23:00:00Z");
    /* 02:30 does not exist on 2025-03-30 and fires at 03:30 CEST (01:30 UTC) */
    expect("30 2 * * *", "Europe/Berlin", "2025-03-30T12:00:00Z", "2025-03-29T01:30:00Z",
           "2025-03-30T01:30:00Z");
    /* New York, 2025-03-09: 02:00 EST becomes 03:00 EDT */
    expect("0 0 * * *", "America/New_York", "2025-03-10T12:00:00Z", "2025-03-09T05:00:00Z",
           "2025-03-10T04:00:00Z");
}

/* `every D`: [logical - D, logical), whatever start_date is. */
Test(manual_interval, every) {
    expect("every 1d", "UTC", "2025-01-15", "2025-01-14T00:00:00Z", "2025-01-15T00:00:00Z");
    expect("every 6h", "UTC", "2025-01-15T13:30:00Z", "2025-01-15T07:30:00Z",
           "2025-01-15T13:30:00Z");
    expect("every 90m", "Europe/Berlin", "2025-03-30T02:00:00Z", "2025-03-30T00:30:00Z",
           "2025-03-30T02:00:00Z");
}

/* No schedule, or @once: the instant alone. */
Test(manual_interval, no_schedule) {
    expect(NULL, NULL, "2025-01-15", "2025-01-15T00:00:00Z", "2025-01-15T00:00:00Z");
    expect(NULL, NULL, "2025-01-15T13:30:00Z", "2025-01-15T13:30:00Z", "2025-01-15T13:30:00Z");
    expect("@once", "UTC", "2025-01-15T13:30:00Z", "2025-01-15T13:30:00Z",
           "2025-01-15T13:30:00Z");
}
