/* util: durations, sizes, times, word splitting, suggestions, buffers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "dagd/util.h"

static int64_t dur(const char *s) {
    int64_t v = -1;
    cr_assert_eq(dg_parse_duration(s, &v), 0, "%s should parse", s);
    return v;
}

Test(util, durations) {
    cr_assert_eq(dur("500ms"), 500);
    cr_assert_eq(dur("30s"), 30000);
    cr_assert_eq(dur("5m"), 300000);
    cr_assert_eq(dur("2h"), 7200000);
    cr_assert_eq(dur("1d"), 86400000);
    cr_assert_eq(dur("1h30m"), 5400000);
    cr_assert_eq(dur("1d2h3m4s5ms"), 86400000 + 7200000 + 180000 + 4000 + 5);
    cr_assert_eq(dur("0s"), 0);
}

Test(util, bad_durations) {
    const char *bad[] = {"", "5", "5x", "m", "1.5h", "-5s", "30m1h", "1h1h", "5 m", "5s ", "99999999999999999999s"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int64_t v = 42;
        cr_assert_lt(dg_parse_duration(bad[i], &v), 0, "'%s' must be refused", bad[i]);
        cr_assert_eq(v, 42, "output untouched on failure");
    }
    int64_t v;
    cr_assert_lt(dg_parse_duration(NULL, &v), 0);
}

Test(util, format_duration_roundtrip) {
    int64_t cases[] = {1, 500, 1000, 59000, 60000, 5400000, 86400000 + 61000, 90061001};
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *s = dg_format_duration(cases[i]);
        cr_assert_eq(dur(s), cases[i], "%s", s);
        free(s);
    }
    char *s = dg_format_duration(5400000);
    cr_assert_str_eq(s, "1h30m");
    free(s);
}

Test(util, sizes) {
    int64_t v;
    cr_assert_eq(dg_parse_size("512m", &v), 0);
    cr_assert_eq(v, 512LL * 1024 * 1024);
    cr_assert_eq(dg_parse_size("2g", &v), 0);
    cr_assert_eq(v, 2LL * 1024 * 1024 * 1024);
    cr_assert_eq(dg_parse_size("2G", &v), 0);
    cr_assert_eq(v, 2LL * 1024 * 1024 * 1024);
    cr_assert_eq(dg_parse_size("1024k", &v), 0);
    cr_assert_eq(v, 1024LL * 1024);
    cr_assert_eq(dg_parse_size("100", &v), 0);
    cr_assert_eq(v, 100);
    cr_assert_eq(dg_parse_size("64mb", &v), 0);
    cr_assert_eq(v, 64LL * 1024 * 1024);
    const char *bad[] = {"", "m", "1.5g", "-1m", "12q", "1 g", "99999999999999999999g", "4gg"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        v = 7;
        cr_assert_lt(dg_parse_size(bad[i], &v), 0, "'%s' must be refused", bad[i]);
        cr_assert_eq(v, 7);
    }
}

Test(util, times) {
    int64_t ms;
    cr_assert_eq(dg_parse_time("1970-01-01", &ms), 0);
    cr_assert_eq(ms, 0);
    cr_assert_eq(dg_parse_time("2025-01-01", &ms), 0);
    cr_assert_eq(ms, 1735689600000LL);
    cr_assert_eq(dg_parse_time("2025-01-01T02:00:00Z", &ms), 0);
    cr_assert_eq(ms, 1735689600000LL + 7200000);
    cr_assert_eq(dg_parse_time("2025-01-01T11:00:00+09:00", &ms), 0);
    cr_assert_eq(ms, 1735689600000LL + 7200000);
    cr_assert_eq(dg_parse_time("2024-12-31T20:00:00-06:00", &ms), 0);
    cr_assert_eq(ms, 1735689600000LL + 7200000);
    cr_assert_eq(dg_parse_time("2025-01-01T00:00:00.250Z", &ms), 0);
    cr_assert_eq(ms, 1735689600250LL);
    cr_assert_eq(dg_parse_time("2024-02-29", &ms), 0);
    const char *bad[] = {"2025-02-29", "2025-13-01", "2025-01-32", "2025-1-1", "20250101", "2025-01-01T25:00:00Z",
                         "2025-01-01T00:00:00+24:00", "yesterday", "", "2025-01-01T00:00:00.Z", "2025-01-01junk"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        ms = 5;
        cr_assert_lt(dg_parse_time(bad[i], &ms), 0, "'%s' must be refused", bad[i]);
        cr_assert_eq(ms, 5);
    }
    char *s = dg_format_time(1735689600000LL + 7200000, false);
    cr_assert_str_eq(s, "2025-01-01T02:00:00Z");
    free(s);
    s = dg_format_time(1735689600250LL, true);
    cr_assert_str_eq(s, "2025-01-01T00:00:00.250Z");
    free(s);
    cr_assert_eq(dg_parse_time("0377-08-31T22:01:42Z", &ms), 0);
    s = dg_format_time(ms, false);
    cr_assert_str_eq(s, "0377-08-31T22:01:42Z");
    free(s);
    /* the API's form: milliseconds always, ".000" included */
    s = dg_format_time_ms(1735689600000LL + 7200000);
    cr_assert_str_eq(s, "2025-01-01T02:00:00.000Z");
    free(s);
    s = dg_format_time_ms(1735689600250LL);
    cr_assert_str_eq(s, "2025-01-01T00:00:00.250Z");
    free(s);
    s = dg_format_time_ms(-1);
    cr_assert_str_eq(s, "1969-12-31T23:59:59.999Z");
    free(s);
    /* every formatted time parses back to itself */
    for (int64_t t = -86400000LL * 400; t < 86400000LL * 365 * 200; t += 86400000LL * 37 + 1234567) {
        s = dg_format_time(t, true);
        cr_assert_eq(dg_parse_time(s, &ms), 0, "%s", s);
        cr_assert_eq(ms, t, "%s", s);
        free(s);
        s = dg_format_time_ms(t);
        cr_assert_eq(dg_parse_time(s, &ms), 0, "%s", s);
        cr_assert_eq(ms, t, "%s", s);
        free(s);
    }
}

static void check_words(const char *in, const char *const *want, size_t n) {
    char **v = NULL;
    size_t got = 0;
    cr_assert_eq(dg_split_words(in, &v, &got), 0, "%s", in);
    cr_assert_eq(got, n, "%s: %zu words", in, got);
    for (size_t i = 0; i < n; i++) cr_assert_str_eq(v[i], want[i]);
    cr_assert_null(v[n]);
    dg_strv_free(v);
}

Test(util, split_words) {
    check_words("spark-submit /apps/job.py --date 2025-01-01",
                (const char *const[]){"spark-submit", "/apps/job.py", "--date", "2025-01-01"}, 4);
    check_words("sh -c 'echo hello; exit 3'", (const char *const[]){"sh", "-c", "echo hello; exit 3"}, 3);
    check_words("echo \"a \\\"b\\\" c\" d\\ e", (const char *const[]){"echo", "a \"b\" c", "d e"}, 3);
    check_words("  a\t\tb\n", (const char *const[]){"a", "b"}, 2);
    check_words("x''y \"\"", (const char *const[]){"xy", ""}, 2);
    check_words("", NULL, 0);
    char **v = NULL;
    size_t n;
    cr_assert_lt(dg_split_words("echo 'open", &v, &n), 0);
    cr_assert_lt(dg_split_words("echo \"open", &v, &n), 0);
    cr_assert_null(v);
}

Test(util, suggestions) {
    const char *keys[] = {"image", "command", "entrypoint", "retries", "retry_delay", "depends_on"};
    cr_assert_str_eq(dg_suggest("imgae", keys, ARRAY_SIZE(keys)), "image");
    cr_assert_str_eq(dg_suggest("retires", keys, ARRAY_SIZE(keys)), "retries");
    cr_assert_str_eq(dg_suggest("depend_on", keys, ARRAY_SIZE(keys)), "depends_on");
    cr_assert_null(dg_suggest("zzzzzzzz", keys, ARRAY_SIZE(keys)));
    cr_assert_eq(dg_edit_distance("kitten", "sitting"), 3);
    cr_assert_eq(dg_edit_distance("", "abc"), 3);
    cr_assert_eq(dg_edit_distance("same", "same"), 0);
}

Test(util, buffers) {
    dg_buf b = {0};
    for (int i = 0; i < 10000; i++) dg_buf_printf(&b, "%d,", i);
    cr_assert_eq(b.data[b.len], 0);
    cr_assert(dg_str_has_prefix(b.data, "0,1,2,"));
    size_t before = b.len;
    dg_buf_consume(&b, 2);
    cr_assert_eq(b.len, before - 2);
    cr_assert(dg_str_has_prefix(b.data, "1,2,"));
    dg_buf_consume(&b, b.len + 5);
    cr_assert_eq(b.len, 0);
    char *s = dg_buf_steal(&b);
    cr_assert_str_eq(s, "");
    free(s);
    cr_assert_null(b.data);
    dg_buf_free(&b);
    dg_buf_free(NULL);
}

Test(util, errors) {
    dg_error e = {0};
    cr_assert_eq(dg_error_set(&e, -EINVAL, "bad %s", "thing"), -EINVAL);
    cr_assert_str_eq(e.msg, "bad thing");
    dg_error_set(&e, -ENOENT, "again");
    cr_assert_eq(e.code, -ENOENT);
    cr_assert_str_eq(e.msg, "again");
    dg_error_clear(&e);
    cr_assert_null(e.msg);
    cr_assert_eq(dg_error_set(NULL, -EIO, "ignored"), -EIO);
}

Test(util, random_hex) {
    char *a = NULL, *b = NULL;
    cr_assert_eq(dg_random_hex(24, &a), 0);
    cr_assert_eq(dg_random_hex(24, &b), 0);
    cr_assert_eq(strlen(a), 48);
    for (const char *p = a; *p; p++) cr_assert(strchr("0123456789abcdef", *p), "%s", a);
    cr_assert_str_neq(a, b, "two draws differ");
    free(a);
    free(b);
}
