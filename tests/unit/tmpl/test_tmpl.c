/* Unit tests for tmpl: rendering, errors, template variables, connection URIs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dagd/tmpl.h"

static json_t *vars;

static void setup(void) {
    vars = json_pack("{s:s, s:s, s:i, s:b, s:n, s:{s:s, s:i, s:f, s:f, s:{s:s}, s:[i,s], s:s, s:o}, "
                     "s:{s:{s:s}}, s:{s:{s:s, s:s, s:{s:s}}}}",
                     "ds", "2025-03-01", "run_id", "manual__x", "try_number", 2, "flag", 1, "nothing",
                     "params", "region", "eu-west", "n", 3, "half", 0.1, "whole", 3.0, "nested", "k",
                     "v", "list", 1, "two", "my-key", "dash", "ok", json_false(), "dag_run", "conf",
                     "x", "from-conf", "conn", "mart", "host", "db.local", "password", "s3cret",
                     "extra", "sslmode", "disable");
    cr_assert_not_null(vars);
}

static void teardown(void) { json_decref(vars); }

TestSuite(tmpl, .init = setup, .fini = teardown);

static int xcom_calls;

static int fake_xcom(void *ud, const char *task_id, char **ret, dg_error *err) {
    xcom_calls++;
    cr_assert_str_eq((const char *)ud, "userdata");
    if (strcmp(task_id, "extract") == 0) {
        *ret = strdup("s3://bucket/file.csv");
        return 0;
    }
    if (strcmp(task_id, "silent") == 0) return -ENOENT;
    return dg_error_set(err, -ENOENT, "task '%s' has no output", task_id);
}

static char *render_ok(const char *src) {
    dg_tmpl_ctx ctx = {vars, fake_xcom, "userdata"};
    char *out = NULL;
    dg_error err = {0};
    int r = dg_tmpl_render(src, &ctx, &out, &err);
    cr_assert_eq(r, 0, "render '%s' failed: %s", src, err.msg ? err.msg : "?");
    cr_assert_null(err.msg);
    return out;
}

static void expect_render(const char *src, const char *want) {
    char *out = render_ok(src);
    cr_assert_str_eq(out, want, "render '%s'", src);
    free(out);
}

static void expect_error_ctx(const dg_tmpl_ctx *ctx, const char *src, const char *want) {
    char *out = (char *)"untouched";
    dg_error err = {0};
    int r = dg_tmpl_render(src, ctx, &out, &err);
    cr_assert_eq(r, -EINVAL, "render '%s' should fail", src);
    cr_assert_str_eq(out, "untouched", "ret written on failure");
    cr_assert_not_null(err.msg);
    cr_assert_str_eq(err.msg, want, "render '%s'", src);
    cr_assert_eq(err.code, -EINVAL);
    dg_error_clear(&err);
}

static void expect_error(const char *src, const char *want) {
    dg_tmpl_ctx ctx = {vars, fake_xcom, "userdata"};
    expect_error_ctx(&ctx, src, want);
}

/* ---- plain text and names ---- */

Test(tmpl, plain_text_is_copied) {
    expect_render("", "");
    expect_render("echo hello } { }} %} {%s", "echo hello } { }} %} {%s");
    expect_render("a { {b", "a { {b");
}

Test(tmpl, names_and_whitespace) {
    expect_render("{{ds}}", "2025-03-01");
    expect_render("day={{   ds }}.", "day=2025-03-01.");
    expect_render("{{\n\tds\n}}", "2025-03-01");
    expect_render("{{ params.region }}", "eu-west");
    expect_render("{{ params . region }}", "eu-west");
    expect_render("{{ dag_run.conf.x }}", "from-conf");
    expect_render("{{ conn.mart.host }}:{{ conn.mart.extra.sslmode }}", "db.local:disable");
    expect_render("{{ params.nested.k }}", "v");
}

Test(tmpl, subscripts) {
    expect_render("{{ params['region'] }}", "eu-west");
    expect_render("{{ params[\"my-key\"] }}", "dash");
    expect_render("{{ params['nested']['k'] }}", "v");
    expect_render("{{ params.list[1] }}/{{ params.list[0] }}/{{ params.list[-1] }}", "two/1/two");
    expect_render("{{ params[params.nested.zz | default('region')] }}", "eu-west");
}

Test(tmpl, value_rendering) {
    expect_render("{{ try_number }}", "2");
    expect_render("{{ params.n }}", "3");
    expect_render("{{ params.half }}", "0.1");
    expect_render("{{ params.whole }}", "3");
    expect_render("{{ flag }} {{ params.ok }} {{ nothing }}", "True False None");
    expect_render("{{ params.nested }}", "{\"k\":\"v\"}");
    expect_render("{{ params.list }}", "[1,\"two\"]");
}

Test(tmpl, literals) {
    expect_render("{{ 'a' }}{{ \"b\" }}{{ 42 }}{{ -7 }}", "ab42-7");
    expect_render("{{ 'it\\'s' }}", "it's");
    expect_render("{{ \"tab\\there\" }}", "tab\there");
    expect_render("{{ 'back\\\\slash' }}|{{ 'keep\\q' }}", "back\\slash|keep\\q");
    expect_render("{{ true }} {{ False }} {{ none }}", "True False None");
    expect_render("{{ -9223372036854775808 }}", "-9223372036854775808");
    expect_render("{{ ('grouped') }}", "grouped");
}

Test(tmpl, braces_inside_strings) {
    expect_render("{{ '{{' }}", "{{");
    expect_render("{{ '}}' }}", "}}");
    expect_render("x{{ \"{{ ds }}\" }}y", "x{{ ds }}y");
    expect_render("{{ 'a}}b' | upper }}", "A}}B");
}

Test(tmpl, many_expressions) {
    expect_render("{{ds}}{{ds}} {{ run_id }}-{{ try_number }}-{{ params.region }}!",
                  "2025-03-012025-03-01 manual__x-2-eu-west!");
    dg_buf src = {0}, want = {0};
    for (int i = 0; i < 500; i++) {
        dg_buf_printf(&src, "<%d>{{ params.list[%d] }}", i, i % 2);
        dg_buf_printf(&want, "<%d>%s", i, i % 2 ? "two" : "1");
    }
    char *out = render_ok(src.data);
    cr_assert_str_eq(out, want.data);
    free(out);
    dg_buf_free(&src);
    dg_buf_free(&want);
}

Test(tmpl, unicode_around_templates) {
    expect_render("héllo {{ ds }} — 日本語 🚀{{ params.region }}ü", "héllo 2025-03-01 — 日本語 🚀eu-westü");
    expect_render("{{ 'grüße ✓' }}", "grüße ✓");
    expect_render("{{ 'ünïcode' | tojson }}", "\"ünïcode\"");
}

/* ---- filters ---- */

Test(tmpl, filters) {
    expect_render("{{ params.region | upper }}", "EU-WEST");
    expect_render("{{ 'MiXeD' | lower }}", "mixed");
    expect_render("{{ 'MiXeD' | lower() }}", "mixed");
    expect_render("{{ params.regoin | default('us') }}", "us");
    expect_render("{{ params.region | default('us') }}", "eu-west");
    expect_render("{{ nope | default }}", "");
    expect_render("{{ nope | default(default_value=ds) }}", "2025-03-01");
    expect_render("{{ nope.deeper['x'] | default(params.n) }}", "3");
    expect_render("{{ nothing | default('x') }}", "None");
    expect_render("{{ nope | default('a') | upper }}", "A");
    expect_render("{{ nope | default(other | default('chained')) }}", "chained");
    expect_render("{{ params.region|upper|lower }}", "eu-west");
}

Test(tmpl, tojson) {
    expect_render("{{ params.nested | tojson }}", "{\"k\":\"v\"}");
    expect_render("{{ ds | tojson }}", "\"2025-03-01\"");
    expect_render("{{ 'q\"\\\\\\n' | tojson }}", "\"q\\\"\\\\\\n\"");
    expect_render("{{ 5 | tojson }}{{ flag | tojson }}{{ nothing | tojson }}", "5truenull");
    expect_render("{{ params.half | tojson }}", "0.1");
}

/* ---- functions ---- */

Test(tmpl, ds_add) {
    expect_render("{{ macros.ds_add(ds, 1) }}", "2025-03-02");
    expect_render("{{ macros.ds_add(ds, -1) }}", "2025-02-28");
    expect_render("{{ macros.ds_add('2024-03-01', -1) }}", "2024-02-29");
    expect_render("{{ macros.ds_add('2024-12-31', 1) }}", "2025-01-01");
    expect_render("{{ macros.ds_add(ds, 0) }}", "2025-03-01");
    expect_render("{{ macros.ds_add(ds, 365) }}", "2026-03-01");
    expect_render("{{ macros.ds_add(ds=ds, days=-31) }}", "2025-01-29");
    expect_render("{{ macros.ds_add(ds, days=2) }}", "2025-03-03");
    expect_render("{{ macros.ds_add(macros.ds_add(ds, 1), 1) }}", "2025-03-03");
}

Test(tmpl, ds_format) {
    expect_render("{{ macros.ds_format(ds, '%Y-%m-%d', '%Y/%m/%d') }}", "2025/03/01");
    expect_render("{{ macros.ds_format('20240229', '%Y%m%d', '%d.%m.%Y') }}", "29.02.2024");
    expect_render("{{ macros.ds_format(ds, '%Y-%m-%d', '%a %b %j') }}", "Sat Mar 060");
    expect_render("{{ macros.ds_format(ds, '%Y-%m-%d', '') }}", "");
    expect_render("{{ macros.ds_format(macros.ds_add(ds, 1), '%Y-%m-%d', '%m') }}", "03");
}

Test(tmpl, xcom_pull) {
    xcom_calls = 0;
    expect_render("path={{ ti.xcom_pull('extract') }}", "path=s3://bucket/file.csv");
    expect_render("{{ ti.xcom_pull(task_ids='extract') | upper }}", "S3://BUCKET/FILE.CSV");
    cr_assert_eq(xcom_calls, 2);
    expect_error("{{ ti.xcom_pull('load') }}", "task 'load' has no output");
    expect_error("{{ ti.xcom_pull('load') | default('x') }}", "task 'load' has no output");
    expect_error("{{ ti.xcom_pull('silent') }}",
                 "ti.xcom_pull('silent') failed: No such file or directory");
    expect_error("{{ ti.xcom_pull(3) }}",
                 "ti.xcom_pull: task id must be a string in template '{{ ti.xcom_pull(3) }}'");
}

Test(tmpl, xcom_pull_unavailable) {
    dg_tmpl_ctx ctx = {vars, NULL, NULL};
    expect_error_ctx(&ctx, "{{ ti.xcom_pull('a') }}", "ti.xcom_pull is not available here");
    dg_tmpl_ctx none = {NULL, NULL, NULL};
    expect_error_ctx(&none, "{{ ds }}", "unknown name 'ds' in template '{{ ds }}'");
    expect_error_ctx(NULL, "x {{ ti.xcom_pull('a') }}", "ti.xcom_pull is not available here");
    char *out = NULL;
    cr_assert_eq(dg_tmpl_render("no templates", NULL, &out, NULL), 0);
    cr_assert_str_eq(out, "no templates");
    free(out);
}

/* ---- errors ---- */

Test(tmpl, unknown_names) {
    expect_error("{{ params.regoin }}", "unknown name 'params.regoin' in template '{{ params.regoin }}'");
    expect_error("echo {{ ds }} {{ dss }}", "unknown name 'dss' in template '{{ dss }}'");
    expect_error("{{ params.nested.k.deeper }}",
                 "unknown name 'params.nested.k.deeper' in template '{{ params.nested.k.deeper }}'");
    expect_error("{{ params.nope.deeper }}", "unknown name 'params.nope' in template '{{ params.nope.deeper }}'");
    expect_error("{{ params['x'] }}", "unknown name 'params['x']' in template '{{ params['x'] }}'");
    expect_error("{{ params.list[2] }}", "unknown name 'params.list[2]' in template '{{ params.list[2] }}'");
    expect_error("{{ params.list['a'] }}",
                 "unknown name 'params.list['a']' in template '{{ params.list['a'] }}'");
    expect_error("{{ ti }}", "unknown name 'ti' in template '{{ ti }}'");
    expect_error("{{ nope | upper }}", "unknown name 'nope' in template '{{ nope | upper }}'");
    expect_error("{{ macros.ds_add(nope, 1) | default('x') }}",
                 "unknown name 'nope' in template '{{ macros.ds_add(nope, 1) | default('x') }}'");
}

Test(tmpl, syntax_errors) {
    expect_error("abc {{ ds", "unterminated '{{' at offset 4 in template '{{ ds'");
    expect_error("{{ ds }} {{", "unterminated '{{' at offset 9 in template '{{'");
    expect_error("{{ 'abc }}", "unterminated string at offset 3 in template '{{ 'abc }}'");
    expect_error("{{ }}", "empty expression at offset 0 in template '{{ }}'");
    expect_error("{{ ds ds }}", "unexpected 'ds' at offset 6 in template '{{ ds ds }}'");
    expect_error("{{ params. }}", "expected a name after '.' at offset 11 in template '{{ params. }}'");
    expect_error("{{ params['a' }}", "expected ']' at offset 14 in template '{{ params['a' }}'");
    expect_error("{{ ds | }}", "expected a filter name after '|' at offset 8 in template '{{ ds | }}'");
    expect_error("{{ ds | shout }}", "unknown filter 'shout' (the filters are default, upper, lower and tojson) at "
                                     "offset 8 in template '{{ ds | shout }}'");
    expect_error("{{ ds + 1 }}", "unexpected '+' at offset 6 in template '{{ ds + 1 }}'");
    expect_error("{{ 99999999999999999999 }}",
                 "integer out of range at offset 3 in template '{{ 99999999999999999999 }}'");
    expect_error("{{ 12ab }}", "bad number at offset 3 in template '{{ 12ab }}'");
    expect_error("{{ (ds }}", "expected ')' at offset 7 in template '{{ (ds }}'");
    expect_error("{{ { ds } }}", "unexpected '{' at offset 3 in template '{{ { ds } }}'");
    expect_error("{{ '\xff' }}", "string literal is not valid UTF-8 at offset 3 in template '{{ '\xff' }}'");
    expect_error("{{ \x01 }}", "unexpected byte 0x01 at offset 3 in template '{{ \x01 }}'");
}

Test(tmpl, call_errors) {
    expect_error("{{ os.system('ls') }}",
                 "unknown function 'os.system' (the functions are ti.xcom_pull, macros.ds_add and "
                 "macros.ds_format) at offset 3 in template '{{ os.system('ls') }}'");
    expect_error("{{ params['a']('x') }}",
                 "unknown function 'params['a']' at offset 3 in template '{{ params['a']('x') }}'");
    expect_error("{{ macros.ds_add(ds) }}",
                 "macros.ds_add takes 2 arguments, got 1 at offset 3 in template '{{ macros.ds_add(ds) }}'");
    expect_error("{{ macros.ds_add(ds, 1, 2) }}",
                 "macros.ds_add takes 2 arguments at offset 24 in template '{{ macros.ds_add(ds, 1, 2) }}'");
    expect_error("{{ ti.xcom_pull() }}",
                 "ti.xcom_pull takes 1 argument, got 0 at offset 3 in template '{{ ti.xcom_pull() }}'");
    expect_error("{{ ti.xcom_pull(key='a') }}",
                 "ti.xcom_pull has no argument 'key' at offset 16 in template '{{ ti.xcom_pull(key='a') }}'");
    expect_error("{{ macros.ds_add(days=1, ds=ds, days=2) }}",
                 "macros.ds_add got argument 'days' twice at offset 32 in template "
                 "'{{ macros.ds_add(days=1, ds=ds, days=2) }}'");
    expect_error("{{ macros.ds_add(days=1, ds) }}",
                 "positional argument after keyword argument at offset 25 in template "
                 "'{{ macros.ds_add(days=1, ds) }}'");
    expect_error("{{ ds | upper('x') }}", "upper takes no arguments at offset 14 in template '{{ ds | upper('x') }}'");
    expect_error("{{ x | default('a', 'b') }}",
                 "default takes at most 1 argument at offset 20 in template '{{ x | default('a', 'b') }}'");
    expect_error("{{ ti.xcom_pull('a').b }}", "unexpected '.' at offset 20 in template '{{ ti.xcom_pull('a').b }}'");
    expect_error("{{ macros.ds_add(ds, 1 }}", "expected ',' or ')' at offset 23 in template '{{ macros.ds_add(ds, 1 }}'");
}

Test(tmpl, bad_dates) {
    expect_error("{{ macros.ds_add('2025-02-30', 1) }}",
                 "macros.ds_add: bad date '2025-02-30' (want YYYY-MM-DD) in template "
                 "'{{ macros.ds_add('2025-02-30', 1) }}'");
    expect_error("{{ macros.ds_add('2025-1-1', 1) }}",
                 "macros.ds_add: bad date '2025-1-1' (want YYYY-MM-DD) in template "
                 "'{{ macros.ds_add('2025-1-1', 1) }}'");
    expect_error("{{ macros.ds_add('0000-01-01', 1) }}",
                 "macros.ds_add: bad date '0000-01-01' (want YYYY-MM-DD) in template "
                 "'{{ macros.ds_add('0000-01-01', 1) }}'");
    expect_error("{{ macros.ds_add(5, 1) }}",
                 "macros.ds_add: bad date value (want YYYY-MM-DD) in template '{{ macros.ds_add(5, 1) }}'");
    expect_error("{{ macros.ds_add(ds, '1') }}",
                 "macros.ds_add: days must be an integer in template '{{ macros.ds_add(ds, '1') }}'");
    expect_error("{{ macros.ds_add('9999-12-31', 1) }}",
                 "macros.ds_add: date out of range in template '{{ macros.ds_add('9999-12-31', 1) }}'");
    expect_error("{{ macros.ds_add(ds, 9223372036854775807) }}",
                 "macros.ds_add: date out of range in template '{{ macros.ds_add(ds, 9223372036854775807) }}'");
    expect_error("{{ macros.ds_format(ds, '%Y%m%d', '%Y') }}",
                 "macros.ds_format: '2025-03-01' does not match format '%Y%m%d' in template "
                 "'{{ macros.ds_format(ds, '%Y%m%d', '%Y') }}'");
    expect_error("{{ macros.ds_format('2025-02-31', '%Y-%m-%d', '%Y') }}",
                 "macros.ds_format: '2025-02-31' does not match format '%Y-%m-%d' in template "
                 "'{{ macros.ds_format('2025-02-31', '%Y-%m-%d', '%Y') }}'");
    expect_error("{{ macros.ds_format(ds, '%Y-%m-%d trailing', '%Y') }}",
                 "macros.ds_format: '2025-03-01' does not match format '%Y-%m-%d trailing' in template "
                 "'{{ macros.ds_format(ds, '%Y-%m-%d trailing', '%Y') }}'");
    expect_error("{{ macros.ds_format(ds, 1, '%Y') }}",
                 "macros.ds_format: argument 2 must be a string in template '{{ macros.ds_format(ds, 1, '%Y') }}'");
}

Test(tmpl, long_block_is_shortened_in_messages) {
    dg_buf src = {0};
    dg_buf_puts(&src, "{{ nope ");
    for (int i = 0; i < 100; i++) dg_buf_puts(&src, "| upper ");
    dg_buf_puts(&src, "}}");
    dg_tmpl_ctx ctx = {vars, NULL, NULL};
    char *out = NULL;
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_render(src.data, &ctx, &out, &err), -EINVAL);
    cr_assert(strlen(err.msg) < 250, "message too long: %zu", strlen(err.msg));
    cr_assert(strstr(err.msg, "...'") != NULL, "%s", err.msg);
    dg_error_clear(&err);
    dg_buf_free(&src);
}

Test(tmpl, deep_nesting_is_refused) {
    dg_buf src = {0};
    dg_buf_puts(&src, "{{ ");
    for (int i = 0; i < 200; i++) dg_buf_puts(&src, "(");
    dg_buf_puts(&src, "ds");
    for (int i = 0; i < 200; i++) dg_buf_puts(&src, ")");
    dg_buf_puts(&src, " }}");
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_check(src.data, DG_TMPL_TASK, &err), -EINVAL);
    cr_assert(strstr(err.msg, "expression nested too deeply") == err.msg, "%s", err.msg);
    dg_error_clear(&err);
    dg_buf_free(&src);
    expect_render("{{ ((((ds)))) }}", "2025-03-01");
}

/* ---- check and uses_xcom ---- */

Test(tmpl, check_syntax_and_names) {
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_check("{{ params.no.such }} {{ params['x'] | default('y') }}", DG_TMPL_TASK, &err), 0);
    cr_assert_eq(dg_tmpl_check("{{ ti.xcom_pull('a') }} {{ macros.ds_add('bad', 1) }}", DG_TMPL_TASK, &err), 0);
    cr_assert_eq(dg_tmpl_check("plain", DG_TMPL_TASK, &err), 0);
    cr_assert_null(err.msg);
    cr_assert_eq(dg_tmpl_check("ok {{ ds }} then {{ ds", DG_TMPL_TASK, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "unterminated '{{' at offset 17 in template '{{ ds'");
    cr_assert_eq(err.code, -EINVAL);
    cr_assert_eq(dg_tmpl_check("{{ a | nope }}", DG_TMPL_TASK, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "unknown filter 'nope' (the filters are default, upper, lower and tojson) at offset 7 "
                              "in template '{{ a | nope }}'");
    cr_assert_eq(dg_tmpl_check("{{ f(1) }}", DG_TMPL_TASK, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "unknown function 'f' (the functions are ti.xcom_pull, macros.ds_add and "
                              "macros.ds_format) at offset 3 in template '{{ f(1) }}'");
    dg_error_clear(&err);
    cr_assert_eq(dg_tmpl_check("{{", DG_TMPL_TASK, NULL), -EINVAL);
}

static void expect_check(dg_tmpl_use use, const char *src, const char *want) {
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_check(src, use, &err), -EINVAL, "check '%s' should fail", src);
    cr_assert_str_eq(err.msg, want, "check '%s': %s", src, err.msg);
    dg_error_clear(&err);
}

static void expect_check_ok(dg_tmpl_use use, const char *src) {
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_check(src, use, &err), 0, "check '%s': %s", src, err.msg);
}

Test(tmpl, nearest_filter_and_function) {
    expect_error("{{ ds | uper }}", "unknown filter 'uper' (did you mean 'upper'?) at offset 8 in template "
                                    "'{{ ds | uper }}'");
    expect_error("{{ ds | to_json }}", "unknown filter 'to_json' (did you mean 'tojson'?) at offset 8 in template "
                                       "'{{ ds | to_json }}'");
    expect_check(DG_TMPL_TASK, "{{ macros.ds_ad(ds, 1) }}",
                 "unknown function 'macros.ds_ad' (did you mean 'macros.ds_add'?) at offset 3 in template "
                 "'{{ macros.ds_ad(ds, 1) }}'");
    expect_check(DG_TMPL_TASK, "{{ var.value.get('x') }}",
                 "unknown function 'var.value.get' ('var' is not provided by dagd: dagd has no Airflow Variables; "
                 "use params, dag_run.conf or conn.ID) at offset 3 in template '{{ var.value.get('x') }}'");
}

Test(tmpl, statements_are_refused) {
    static const char *const want = "'{% ... %}' statements are not supported (dagd templates have only {{ expr }}; "
                                    "for a literal '{%' write {{ '{%' }}) at offset 5 in template '{% if x %}'";
    expect_error("echo {% if x %}a{% endif %}", want);
    expect_check(DG_TMPL_TASK, "echo {% if x %}a{% endif %}", want);
    expect_check(DG_TMPL_TASK, "{{ ds }} {% for i in x %}{{ i }}{% endfor %}",
                 "'{% ... %}' statements are not supported (dagd templates have only {{ expr }}; for a literal "
                 "'{%' write {{ '{%' }}) at offset 9 in template '{% for i in x %}'");
    /* a '{%' that opens no statement, and one inside a string literal, are text */
    expect_render("printf '{%s}' {{ ds }}", "printf '{%s}' 2025-03-01");
    expect_render("{{ '{% x %}' }}", "{% x %}");
    expect_check_ok(DG_TMPL_TASK, "{{ '{%' }} if {{ '%}' }}");
}

Test(tmpl, names_dagd_does_not_provide) {
    expect_check(DG_TMPL_TASK, "{{ next_ds }}",
                 "'next_ds' is not provided by dagd (Airflow 2 deprecated it; use data_interval_end, or "
                 "macros.ds_add(ds, 1) for the next day) in template '{{ next_ds }}'");
    expect_check(DG_TMPL_TASK, "x {{ prev_ds_nodash | upper }}",
                 "'prev_ds_nodash' is not provided by dagd (Airflow 2 deprecated it; use macros.ds_add(ds, -1) for "
                 "the day before) in template '{{ prev_ds_nodash | upper }}'");
    expect_check(DG_TMPL_TASK, "{{ execution_date }}",
                 "'execution_date' is not provided by dagd (Airflow 2 deprecated it; use logical_date, or ds for "
                 "the date) in template '{{ execution_date }}'");
    expect_check(DG_TMPL_TASK, "{{ var.value.bucket }}",
                 "'var.value.bucket' is not provided by dagd (dagd has no Airflow Variables; use params, "
                 "dag_run.conf or conn.ID) in template '{{ var.value.bucket }}'");
    expect_check(DG_TMPL_TASK, "{{ ti.try_number }}",
                 "'ti.try_number' is not provided by dagd (of ti, only the call ti.xcom_pull('task_id') is; the try "
                 "is try_number) in template '{{ ti.try_number }}'");
    expect_check(DG_TMPL_TASK, "{{ macros.ds_add }}",
                 "'macros.ds_add' is not provided by dagd (the macros are macros.ds_add(ds, days) and "
                 "macros.ds_format(ds, in, out)) in template '{{ macros.ds_add }}'");
    expect_check(DG_TMPL_TASK, "{{ dag_run.start_date }}",
                 "'dag_run.start_date' is not provided by dagd (dag_run has conf, run_id and logical_date) in "
                 "template '{{ dag_run.start_date }}'");
    expect_check(DG_TMPL_TASK, "{{ logical_date.year }}",
                 "'logical_date.year' is not provided by dagd ('logical_date' is a single value, without parts) in "
                 "template '{{ logical_date.year }}'");
    expect_check(DG_TMPL_TASK, "{{ dss }}",
                 "'dss' is not a name dagd provides (did you mean 'ds'?) in template '{{ dss }}'");
    expect_check(DG_TMPL_TASK, "{{ region }}",
                 "'region' is not a name dagd provides (the names are ds, ds_nodash, ts, ts_nodash, logical_date, "
                 "data_interval_start, data_interval_end, run_id, dag_id, task_id, try_number, params, dag_run, "
                 "conn) in template '{{ region }}'");
    /* state exists only where a notification is rendered */
    expect_check(DG_TMPL_TASK, "{{ state }}", "'state' is set only in notifications in template '{{ state }}'");
    expect_check_ok(DG_TMPL_NOTIFICATION, "{{ dag_id }} {{ state }}");
    /* names inside calls, subscripts and filter arguments are checked too */
    expect_check(DG_TMPL_TASK, "{{ macros.ds_add(next_ds, 1) }}",
                 "'next_ds' is not provided by dagd (Airflow 2 deprecated it; use data_interval_end, or "
                 "macros.ds_add(ds, 1) for the next day) in template '{{ macros.ds_add(next_ds, 1) }}'");
    expect_check(DG_TMPL_TASK, "{{ params[ts_nodsh] }}",
                 "'ts_nodsh' is not a name dagd provides (did you mean 'ts_nodash'?) in template "
                 "'{{ params[ts_nodsh] }}'");
    /* what a run's conf may bring, and what `| default` stands in for, waits for rendering */
    expect_check_ok(DG_TMPL_TASK, "{{ params.anything.deep }} {{ dag_run.conf.x }} {{ conn.db.host }} "
                                  "{{ dag_run.run_id }} {{ dag_run['x'] }} {{ try_number }}");
    expect_check_ok(DG_TMPL_TASK, "{{ next_ds | default(ds) }} {{ var.value.x | upper | default('') }}");
    expect_check(DG_TMPL_TASK, "{{ nope | default(next_ds) }}",
                 "'next_ds' is not provided by dagd (Airflow 2 deprecated it; use data_interval_end, or "
                 "macros.ds_add(ds, 1) for the next day) in template '{{ nope | default(next_ds) }}'");
    expect_check(DG_TMPL_TASK, "{{ macros.ds_add(yesterday_ds, 1) | default('x') }}",
                 "'yesterday_ds' is not provided by dagd (Airflow 2 deprecated it; use macros.ds_add(ds, -1)) in "
                 "template '{{ macros.ds_add(yesterday_ds, 1) | default('x') }}'");
}

Test(tmpl, uses_xcom) {
    cr_assert(dg_tmpl_uses_xcom("{{ ti.xcom_pull('a') }}"));
    cr_assert(dg_tmpl_uses_xcom("x {{ ds }} y {{ ti.xcom_pull(task_ids='a') | upper }}"));
    cr_assert(dg_tmpl_uses_xcom("{{ nope | default(ti.xcom_pull('a')) }}"));
    cr_assert(dg_tmpl_uses_xcom("{{ params[ti.xcom_pull('a')] }}"));
    cr_assert(dg_tmpl_uses_xcom("{{ macros.ds_add(ti.xcom_pull('a'), 1) }}"));
    cr_assert_not(dg_tmpl_uses_xcom("{{ 'ti.xcom_pull(\"a\")' }}"));
    cr_assert_not(dg_tmpl_uses_xcom("ti.xcom_pull('a')"));
    cr_assert_not(dg_tmpl_uses_xcom("{{ ti.xcom_pull }}"));
    cr_assert_not(dg_tmpl_uses_xcom("{{ ds }}"));
    cr_assert_not(dg_tmpl_uses_xcom(""));
    cr_assert_not(dg_tmpl_uses_xcom("{{ ti.xcom_pull('a'"));
}

/* ---- robustness ---- */

Test(tmpl, random_garbage_never_crashes) {
    static const char alphabet[] = "{}{}{{}}()[]'\"|.,=-_ abcdsparmtix0123456789\\\n\xc3\xa9\xff";
    dg_tmpl_ctx ctx = {vars, fake_xcom, "userdata"};
    srand(12345);
    int ok = 0, failed = 0;
    for (int round = 0; round < 20000; round++) {
        char buf[64];
        int n = rand() % (int)(sizeof buf - 1);
        for (int i = 0; i < n; i++) {
            int pick = rand() % 4;
            if (pick == 0) buf[i] = (char)(1 + rand() % 255);
            else buf[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        }
        buf[n] = 0;
        /* Give the parser something to chew on more often than chance would. */
        if (round % 2 && n > 4) memcpy(buf, "{{ ", 3);
        char *out = NULL;
        dg_error err = {0};
        int r = dg_tmpl_render(buf, &ctx, &out, &err);
        if (r == 0) {
            ok++;
            cr_assert_not_null(out);
            cr_assert_null(err.msg);
        } else {
            failed++;
            cr_assert_eq(r, -EINVAL);
            cr_assert_null(out);
            cr_assert_not_null(err.msg);
        }
        int c = dg_tmpl_check(buf, DG_TMPL_TASK, &err);
        /* Rendering can only fail where checking does, or later at evaluation. */
        if (c < 0) cr_assert_neq(r, 0, "check failed but render passed: '%s'", buf);
        (void)dg_tmpl_uses_xcom(buf);
        free(out);
        dg_error_clear(&err);
    }
    cr_assert_gt(ok, 100);
    cr_assert_gt(failed, 100);
}

/* ---- template variables ---- */

Test(tmpl_vars, standard_names) {
    int64_t logical = 1735689600000; /* 2025-01-01T00:00:00Z */
    json_auto_t *params = json_pack("{s:s, s:i, s:{s:i}}", "region", "eu", "n", 1, "deep", "a", 1);
    json_auto_t *conf = json_pack("{s:s, s:s}", "region", "us", "extra", "yes");
    json_auto_t *v = dg_tmpl_vars("etl", "manual__2025", "load", 3, logical, logical,
                                  logical + 86400000, params, conf, NULL);
    cr_assert_not_null(v);
    dg_tmpl_ctx ctx = {v, NULL, NULL};
    char *out = NULL;
    dg_error err = {0};
    const char *src = "{{ds}}|{{ds_nodash}}|{{ts}}|{{ts_nodash}}|{{logical_date}}|{{data_interval_start}}|"
                      "{{data_interval_end}}|{{run_id}}|{{dag_id}}|{{task_id}}|{{try_number}}|"
                      "{{params.region}}|{{params.n}}|{{params.extra}}|{{params.deep.a}}|"
                      "{{dag_run.conf.region}}|{{dag_run.run_id}}|{{dag_run.logical_date}}";
    cr_assert_eq(dg_tmpl_render(src, &ctx, &out, &err), 0, "%s", err.msg);
    cr_assert_str_eq(out, "2025-01-01|20250101|2025-01-01T00:00:00+00:00|20250101T000000|"
                          "2025-01-01T00:00:00Z|2025-01-01T00:00:00Z|2025-01-02T00:00:00Z|"
                          "manual__2025|etl|load|3|us|1|yes|1|us|manual__2025|2025-01-01T00:00:00Z");
    free(out);
    cr_assert(json_is_integer(json_object_get(v, "try_number")));
    cr_assert_null(json_object_get(v, "state"));

    /* The result owns copies: changing it leaves the inputs alone. */
    json_object_set_new(json_object_get(json_object_get(v, "params"), "deep"), "a", json_integer(9));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(params, "deep"), "a")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(params, "region")), "eu");
}

Test(tmpl_vars, odd_times_and_no_conf) {
    /* 2024-02-29T13:45:07.250Z */
    int64_t t = 1709214307250;
    json_auto_t *v = dg_tmpl_vars("d", "r", NULL, 1, t, t - 3600000, t, NULL, NULL, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(v, "ds")), "2024-02-29");
    cr_assert_str_eq(json_string_value(json_object_get(v, "ds_nodash")), "20240229");
    cr_assert_str_eq(json_string_value(json_object_get(v, "ts")), "2024-02-29T13:45:07.250+00:00");
    cr_assert_str_eq(json_string_value(json_object_get(v, "ts_nodash")), "20240229T134507");
    cr_assert_str_eq(json_string_value(json_object_get(v, "logical_date")), "2024-02-29T13:45:07.250Z");
    cr_assert_str_eq(json_string_value(json_object_get(v, "data_interval_start")),
                     "2024-02-29T12:45:07.250Z");
    cr_assert_null(json_object_get(v, "task_id"));
    json_t *params = json_object_get(v, "params");
    cr_assert(json_is_object(params) && json_object_size(params) == 0);
    json_t *c = json_object_get(json_object_get(v, "dag_run"), "conf");
    cr_assert(json_is_object(c) && json_object_size(c) == 0);
    dg_tmpl_ctx ctx = {v, NULL, NULL};
    char *out = NULL;
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_render("{{ task_id }}", &ctx, &out, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "unknown name 'task_id' in template '{{ task_id }}'");
    dg_error_clear(&err);
}

Test(tmpl_vars, configured_connections) {
    json_auto_t *uris = json_pack("{s:s, s:s}", "mart",
                                  "postgres://etl:p%40ss@db.example:5432/warehouse?sslmode=disable", "bad",
                                  "not a uri");
    json_auto_t *conns = dg_conn_parse_all(uris);
    json_auto_t *v = dg_tmpl_vars("d", "r", "t", 1, 0, 0, 0, NULL, NULL, conns);
    dg_tmpl_ctx ctx = {v, NULL, NULL};
    char *out = NULL;
    dg_error err = {0};
    cr_assert_eq(dg_tmpl_render("{{conn.mart.login}}:{{conn.mart.password}}@{{conn.mart.host}}:"
                                "{{conn.mart.port}}/{{conn.mart.schema}}?{{conn.mart.extra.sslmode}}",
                                &ctx, &out, &err),
                 0, "%s", err.msg);
    cr_assert_str_eq(out, "etl:p@ss@db.example:5432/warehouse?disable");
    free(out);
    cr_assert_null(json_object_get(json_object_get(v, "conn"), "bad"));
    cr_assert_eq(dg_tmpl_render("{{ conn.bad.host }}", &ctx, &out, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "unknown name 'conn.bad' in template '{{ conn.bad.host }}'");
    dg_error_clear(&err);
    cr_assert_str_eq(json_string_value(json_object_get(v, "ds")), "1970-01-01");
}

/* ---- connection URIs ---- */

static json_t *parse_ok(const char *uri) {
    dg_error err = {0};
    json_t *c = dg_conn_parse_uri(uri, &err);
    cr_assert_not_null(c, "parse '%s': %s", uri, err.msg ? err.msg : "?");
    return c;
}

static void expect_field(const json_t *c, const char *key, const char *want) {
    json_t *v = json_object_get(c, key);
    cr_assert(json_is_string(v), "field %s missing", key);
    cr_assert_str_eq(json_string_value(v), want, "field %s", key);
}

static void expect_bad_uri(const char *uri, const char *want) {
    dg_error err = {0};
    cr_assert_null(dg_conn_parse_uri(uri, &err), "'%s' should not parse", uri);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(err.code, -EINVAL);
    dg_error_clear(&err);
}

Test(conn, full_uri) {
    json_auto_t *c = parse_ok("postgres://user:pass@host:5432/db?sslmode=disable&application_name=dagd");
    expect_field(c, "conn_type", "postgres");
    expect_field(c, "uri", "postgres://user:pass@host:5432/db?sslmode=disable&application_name=dagd");
    expect_field(c, "login", "user");
    expect_field(c, "password", "pass");
    expect_field(c, "host", "host");
    expect_field(c, "schema", "db");
    cr_assert_eq(json_integer_value(json_object_get(c, "port")), 5432);
    json_t *extra = json_object_get(c, "extra");
    cr_assert_eq(json_object_size(extra), 2);
    expect_field(extra, "sslmode", "disable");
    expect_field(extra, "application_name", "dagd");
}

Test(conn, missing_parts) {
    json_auto_t *a = parse_ok("redis://cache");
    expect_field(a, "host", "cache");
    expect_field(a, "login", "");
    expect_field(a, "password", "");
    expect_field(a, "schema", "");
    cr_assert_null(json_object_get(a, "port"));
    cr_assert_eq(json_object_size(json_object_get(a, "extra")), 0);

    json_auto_t *b = parse_ok("mysql://root@db/app");
    expect_field(b, "login", "root");
    expect_field(b, "password", "");
    expect_field(b, "host", "db");
    expect_field(b, "schema", "app");

    json_auto_t *c = parse_ok("http://:tok@api.local:/?flag");
    expect_field(c, "login", "");
    expect_field(c, "password", "tok");
    cr_assert_null(json_object_get(c, "port"));
    expect_field(c, "schema", "");
    expect_field(json_object_get(c, "extra"), "flag", "");

    json_auto_t *d = parse_ok("fs://");
    expect_field(d, "host", "");
    expect_field(d, "conn_type", "fs");

    json_auto_t *e = parse_ok("Google-Cloud-Platform://?a=1#frag");
    expect_field(e, "conn_type", "google_cloud_platform");
    expect_field(json_object_get(e, "extra"), "a", "1");
}

Test(conn, percent_escapes) {
    json_auto_t *c = parse_ok("postgres://us%3Aer:p%40ss%2Fw%3Ad%20x+y@h%2Dost/my%2Fdb?q=a%26b+c&k%3D=%C3%BC");
    expect_field(c, "login", "us:er");
    expect_field(c, "password", "p@ss/w:d x+y");
    expect_field(c, "host", "h-ost");
    expect_field(c, "schema", "my/db");
    json_t *extra = json_object_get(c, "extra");
    expect_field(extra, "q", "a&b c");
    expect_field(extra, "k=", "ü");
    /* An unescaped '@' in the password: userinfo ends at the last '@'. */
    json_auto_t *d = parse_ok("ftp://me:a@b@host");
    expect_field(d, "password", "a@b");
    expect_field(d, "host", "host");
}

Test(conn, ipv6_host) {
    json_auto_t *c = parse_ok("postgres://u:p@[::1]:6543/db");
    expect_field(c, "host", "::1");
    cr_assert_eq(json_integer_value(json_object_get(c, "port")), 6543);
    json_auto_t *d = parse_ok("postgres://[fe80::1%25eth0]");
    expect_field(d, "host", "fe80::1%eth0");
    cr_assert_null(json_object_get(d, "port"));
}

Test(conn, extra_as_json) {
    json_auto_t *c = parse_ok("aws://?__extra__=%7B%22region%22%3A%22eu%22%2C%22n%22%3A2%7D");
    json_t *extra = json_object_get(c, "extra");
    expect_field(extra, "region", "eu");
    cr_assert_eq(json_integer_value(json_object_get(extra, "n")), 2);
    expect_bad_uri("aws://?__extra__=%5B1%5D", "connection URI: __extra__ is not a JSON object");
}

Test(conn, bad_uris) {
    expect_bad_uri("host:5432", "connection URI: missing scheme (want type://...)");
    expect_bad_uri("://host", "connection URI: missing scheme (want type://...)");
    expect_bad_uri("postgres:/host", "connection URI: missing scheme (want type://...)");
    expect_bad_uri("postgres://u:secret@host:54x2/db", "connection URI: bad port");
    expect_bad_uri("postgres://host:99999", "connection URI: bad port");
    expect_bad_uri("postgres://u:p%zz@host", "connection URI: bad percent escape in password");
    expect_bad_uri("postgres://u:p%4@host", "connection URI: bad percent escape in password");
    expect_bad_uri("postgres://u:p%00@host", "connection URI: %00 in password");
    expect_bad_uri("postgres://h/db%ff", "connection URI: schema is not valid UTF-8");
    expect_bad_uri("postgres://[::1", "connection URI: unterminated '[' in host");
    expect_bad_uri("postgres://[::1]x", "connection URI: junk after ']' in host");
    expect_bad_uri(NULL, "connection URI: missing");
    /* The password must never show up in a message. */
    dg_error err = {0};
    cr_assert_null(dg_conn_parse_uri("postgres://u:hunter2@host:bad", &err));
    cr_assert_null(strstr(err.msg, "hunter2"));
    dg_error_clear(&err);
}

Test(tmpl, conn_env_name) {
    char *n = dg_conn_env_name("mart");
    cr_assert_str_eq(n, "DAGD_CONN_MART");
    free(n);
    n = dg_conn_env_name("my-db.1");
    cr_assert_str_eq(n, "DAGD_CONN_MY_DB_1");
    free(n);
}
