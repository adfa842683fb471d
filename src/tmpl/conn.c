/* tmpl/conn — connections for templates (docs/dags.md): Airflow-style URIs such as
 * postgres://user:pass@host:5432/db?sslmode=disable, turned into the JSON objects that
 * `{{ conn.ID.host }}` and friends read. Error messages never repeat the URI, since it
 * usually holds a password. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "dagd/tmpl.h"


static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a JSON string; '+' means space only in query strings,
 * as in HTML forms and Python's parse_qsl. */
static int decode(const char *s, size_t n, bool plus, const char *what, json_t **ret,
                  dg_error *err) {
    dg_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                dg_buf_free(&b);
                return dg_error_set(err, -EINVAL, "connection URI: bad percent escape in %s", what);
            }
            c = (char)(hi * 16 + lo);
            if (c == 0) {
                dg_buf_free(&b);
                return dg_error_set(err, -EINVAL, "connection URI: %%00 in %s", what);
            }
            i += 2;
        } else if (plus && c == '+')
            c = ' ';
        dg_buf_append(&b, &c, 1);
    }
    char *str = dg_buf_steal(&b);
    json_t *j = json_string(str);
    free(str);
    if (!j) return dg_error_set(err, -EINVAL, "connection URI: %s is not valid UTF-8", what);
    *ret = j;
    return 0;
}

static int set_decoded(json_t *obj, const char *key, const char *s, size_t n, dg_error *err) {
    json_t *v;
    int r = decode(s, n, false, key, &v, err);
    if (r < 0) return r;
    json_object_set_new(obj, key, v);
    return 0;
}

/* The query becomes `extra`. Airflow also accepts a single `__extra__` parameter holding
 * the whole extra object as JSON; honour that too. */
static int parse_query(const char *q, size_t n, json_t *extra, dg_error *err) {
    size_t i = 0;
    while (i < n) {
        size_t amp = i;
        while (amp < n && q[amp] != '&') amp++;
        if (amp > i) {
            size_t eq = i;
            while (eq < amp && q[eq] != '=') eq++;
            json_t *k, *v;
            int r = decode(q + i, eq - i, true, "query", &k, err);
            if (r < 0) return r;
            size_t vs = eq < amp ? eq + 1 : amp;
            r = decode(q + vs, amp - vs, true, "query", &v, err);
            if (r < 0) {
                json_decref(k);
                return r;
            }
            const char *key = json_string_value(k);
            if (strcmp(key, "__extra__") == 0) {
                json_t *obj = json_loads(json_string_value(v), JSON_DECODE_ANY, NULL);
                if (!json_is_object(obj)) {
                    json_decref(obj);
                    json_decref(k);
                    json_decref(v);
                    return dg_error_set(err, -EINVAL,
                                        "connection URI: __extra__ is not a JSON object");
                }
                json_object_update(extra, obj);
                json_decref(obj);
                json_decref(v);
            } else
                json_object_set_new(extra, key, v);
            json_decref(k);
        }
        i = amp + 1;
    }
    return 0;
}

json_t *dg_conn_parse_uri(const char *uri, dg_error *err) {
    if (!uri) {
        dg_error_set(err, -EINVAL, "connection URI: missing");
        return NULL;
    }
    const char *p = uri;
    if (!isalpha((unsigned char)*p)) {
        dg_error_set(err, -EINVAL, "connection URI: missing scheme (want type://...)");
        return NULL;
    }
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '.' || *p == '-' || *p == '_') p++;
    if (strncmp(p, "://", 3) != 0) {
        dg_error_set(err, -EINVAL, "connection URI: missing scheme (want type://...)");
        return NULL;
    }
    json_auto_t *c = json_object();
    /* Airflow turns "google-cloud-platform" into conn_type "google_cloud_platform". */
    char *type = xstrndup(uri, (size_t)(p - uri));
    for (char *t = type; *t; t++) *t = *t == '-' ? '_' : (char)tolower((unsigned char)*t);
    json_object_set_new(c, "conn_type", json_string(type));
    free(type);
    json_t *full = json_string(uri);
    if (!full) {
        dg_error_set(err, -EINVAL, "connection URI: not valid UTF-8");
        return NULL;
    }
    json_object_set_new(c, "uri", full);

    p += 3;
    size_t alen = strcspn(p, "/?#");
    const char *auth = p, *rest = p + alen;
    /* userinfo ends at the last '@', so an unescaped '@' in a password still works. */
    const char *at = NULL;
    for (const char *x = auth; x < rest; x++)
        if (*x == '@') at = x;
    const char *hp = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        const char *lend = colon ? colon : at;
        if (set_decoded(c, "login", auth, (size_t)(lend - auth), err) < 0) return NULL;
        if (colon) {
            size_t plen = (size_t)(at - colon - 1);
            if (set_decoded(c, "password", colon + 1, plen, err) < 0) return NULL;
        } else if (set_decoded(c, "password", "", 0, err) < 0)
            return NULL;
        hp = at + 1;
    } else {
        json_object_set_new(c, "login", json_string(""));
        json_object_set_new(c, "password", json_string(""));
    }

    const char *hend, *port = NULL;
    const char *host = hp;
    if (*hp == '[') {
        const char *close = memchr(hp, ']', (size_t)(rest - hp));
        if (!close) {
            dg_error_set(err, -EINVAL, "connection URI: unterminated '[' in host");
            return NULL;
        }
        host = hp + 1;
        hend = close;
        if (close + 1 < rest) {
            if (close[1] != ':') {
                dg_error_set(err, -EINVAL, "connection URI: junk after ']' in host");
                return NULL;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(rest - hp));
        hend = colon ? colon : rest;
        if (colon) port = colon + 1;
    }
    if (set_decoded(c, "host", host, (size_t)(hend - host), err) < 0) return NULL;
    if (port && port < rest) {
        long v = 0;
        for (const char *x = port; x < rest; x++) {
            if (!isdigit((unsigned char)*x) || (v = v * 10 + (*x - '0')) > 65535) {
                dg_error_set(err, -EINVAL, "connection URI: bad port");
                return NULL;
            }
        }
        json_object_set_new(c, "port", json_integer(v));
    }

    size_t plen = strcspn(rest, "?#");
    if (set_decoded(c, "schema", plen ? rest + 1 : rest, plen ? plen - 1 : 0, err) < 0) return NULL;
    json_t *extra = json_object();
    json_object_set_new(c, "extra", extra);
    if (rest[plen] == '?') {
        const char *q = rest + plen + 1;
        if (parse_query(q, strcspn(q, "#"), extra, err) < 0) return NULL;
    }
    return json_incref(c);
}

json_t *dg_conn_parse_all(const json_t *uris) {
    json_t *conns = json_object();
    const char *id;
    json_t *u;
    json_object_foreach((json_t *)uris, id, u) {
        json_t *c = json_is_string(u) ? dg_conn_parse_uri(json_string_value(u), NULL) : NULL;
        if (c) json_object_set_new(conns, id, c);
    }
    return conns;
}

char *dg_conn_id(const char *id) {
    char *r = xstrdup(id);
    for (char *p = r; *p; p++) *p = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    return r;
}

char *dg_conn_env_name(const char *id) {
    char *name = xasprintf("DAGD_CONN_%s", id);
    for (char *p = name + 10; *p; p++) {
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
        else if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) *p = '_';
    }
    return name;
}
