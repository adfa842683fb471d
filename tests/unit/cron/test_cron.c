/* Unit tests for cron: 5-field expressions, names, presets, "every", and error messages. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "dagd/cron.h"

static dg_cron parse_ok(const char *expr) {
    dg_cron c;
    dg_error e = {0};
    int r = dg_cron_parse(expr, &c, &e);
    cr_assert_eq(r, 0, "'%s': %s", expr, e.msg ? e.msg : "");
    return c;
}

static void parse_bad(const char *expr, const char *msg) {
    dg_cron c = {.every_ms = 12345};
    dg_error e = {0};
    cr_assert_eq(dg_cron_parse(expr, &c, &e), -EINVAL, "'%s' parsed", expr);
    cr_assert_eq(e.code, -EINVAL);
    cr_assert_not_null(e.msg);
    cr_assert(strstr(e.msg, msg), "'%s': got \"%s\", want \"%s\"", expr, e.msg, msg);
    cr_assert_eq(c.every_ms, 12345, "output written on failure");
    dg_error_clear(&e);
}

static uint64_t bits(int lo, int hi, int step) {
    uint64_t b = 0;
    for (int i = lo; i <= hi; i += step) b |= (uint64_t)1 << i;
    return b;
}

Test(cron, fields) {
    dg_cron c = parse_ok("0 2 * * *");
    cr_assert_eq(c.type, DG_SCHED_CRON);
    cr_assert_eq(c.minutes, 1);
    cr_assert_eq(c.hours, 1u << 2);
    cr_assert_eq(c.mdays, (uint32_t)bits(1, 31, 1));
    cr_assert_eq(c.months, (uint16_t)bits(1, 12, 1));
    cr_assert_eq(c.wdays, 0x7f);
    cr_assert(c.mday_star && c.wday_star);

    c = parse_ok("*/5 1-10/2 1,15,31 jan-mar,DEC mon-fri");
    cr_assert_eq(c.minutes, bits(0, 59, 5));
    cr_assert_eq(c.hours, (uint32_t)bits(1, 10, 2));
    cr_assert_eq(c.mdays, (1u << 1) | (1u << 15) | (1u << 31));
    cr_assert_eq(c.months, (uint16_t)((1 << 1) | (1 << 2) | (1 << 3) | (1 << 12)));
    cr_assert_eq(c.wdays, (uint8_t)bits(1, 5, 1));
    cr_assert_not(c.mday_star);
    cr_assert_not(c.wday_star);

    c = parse_ok("5/15 0 * * 7");
    cr_assert_eq(c.minutes, bits(5, 59, 15));
    cr_assert_eq(c.wdays, 1, "7 is Sunday");
    c = parse_ok("0 0 * * fri-sun");
    cr_assert_eq(c.wdays, (1 << 5) | (1 << 6) | 1);
    c = parse_ok("0 0 * * 5-7");
    cr_assert_eq(c.wdays, (1 << 5) | (1 << 6) | 1);
    c = parse_ok("59 23 31 12 0");
    cr_assert_eq(c.minutes, (uint64_t)1 << 59);
    cr_assert_eq(c.hours, 1u << 23);
    c = parse_ok("  0\t0  * * *  ");
    cr_assert_eq(c.hours, 1);
}

Test(cron, presets) {
    cr_assert_eq(parse_ok("@once").type, DG_SCHED_ONCE);
    dg_cron c = parse_ok("@hourly");
    cr_assert_eq(c.minutes, 1);
    cr_assert_eq(c.hours, (uint32_t)bits(0, 23, 1));
    c = parse_ok("@daily");
    cr_assert_eq(c.hours, 1);
    cr_assert_eq(parse_ok("@midnight").hours, 1);
    c = parse_ok("@weekly");
    cr_assert_eq(c.wdays, 1);
    cr_assert_not(c.wday_star);
    c = parse_ok("@monthly");
    cr_assert_eq(c.mdays, 1u << 1);
    c = parse_ok("@yearly");
    cr_assert_eq(c.months, 1u << 1);
    cr_assert_eq(parse_ok("@annually").months, 1u << 1);
}

Test(cron, every) {
    dg_cron c = parse_ok("every 30m");
    cr_assert_eq(c.type, DG_SCHED_EVERY);
    cr_assert_eq(c.every_ms, 30 * 60000);
    cr_assert_eq(parse_ok("every 1h30m").every_ms, 90 * 60000);
    parse_bad("every", "'every' needs a duration");
    parse_bad("every 30", "every: bad duration '30'");
    parse_bad("every 500ms", "at least 1s");
}

Test(cron, errors) {
    parse_bad("", "empty schedule");
    parse_bad(NULL, "empty schedule");
    parse_bad("* * * *", "expected 5 fields");
    parse_bad("* * * * * *", "got more than 5");
    parse_bad("61 * * * *", "minute field: 61 is out of range 0-59");
    parse_bad("0 24 * * *", "hour field: 24 is out of range 0-23");
    parse_bad("0 0 0 * *", "day-of-month field: 0 is out of range 1-31");
    parse_bad("0 0 * 13 *", "month field: 13 is out of range 1-12");
    parse_bad("0 0 * * 8", "day-of-week field: 8 is out of range 0-7");
    parse_bad("0 0 * foo *", "month field: unknown name 'foo'");
    parse_bad("0 0 * * monday", "day-of-week field: unknown name 'monday'");
    parse_bad("*/0 * * * *", "minute field: step 0 is out of range");
    parse_bad("*/ * * * *", "minute field: step must be a positive number");
    parse_bad("10-5 * * * *", "minute field: range 10-5 goes backwards");
    parse_bad("1,,2 * * * *", "minute field: empty list item");
    parse_bad("1- * * * *", "minute field: missing a value");
    parse_bad("1x * * * *", "minute field: unexpected 'x'");
    parse_bad("? * * * *", "minute field: unexpected character '?'");
    parse_bad("@dayly", "unknown preset '@dayly' (did you mean '@daily'?)");
    parse_bad("@sometimes", "unknown preset '@sometimes'");
}
