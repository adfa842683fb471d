/* exec/cache — what the executor already checked on the engine, and log redaction. */
#include <string.h>

#include "exec_internal.h"

bool dg__exec_cache_has(dg_exec *x, const char *key) {
    for (size_t i = 0; x->cache && x->cache[i]; i++)
        if (strcmp(x->cache[i], key) == 0) return true;
    return false;
}

void dg__exec_cache_put(dg_exec *x, const char *key) {
    if (!key || dg__exec_cache_has(x, key)) return;
    size_t n = dg_strv_len(x->cache);
    x->cache = xrealloc(x->cache, (n + 2) * sizeof(char *));
    x->cache[n] = xstrdup(key);
    x->cache[n + 1] = NULL;
}

void dg__exec_cache_drop(dg_exec *x, const char *key) {
    size_t n = dg_strv_len(x->cache);
    for (size_t i = 0; key && i < n; i++)
        if (strcmp(x->cache[i], key) == 0) {
            free(x->cache[i]);
            memmove(&x->cache[i], &x->cache[i + 1], (n - i) * sizeof(char *));
            return;
        }
}

void dg__exec_cache_free(dg_exec *x) {
    dg_strv_free(x->cache);
    x->cache = NULL;
}

char *dg__exec_redact(char *const *secrets, const char *line, size_t len) {
    dg_buf b = {0};
    dg_buf_append(&b, line, len);
    for (size_t i = 0; secrets && secrets[i]; i++) {
        size_t sl = strlen(secrets[i]);
        char *p;
        size_t from = 0;
        while (from < b.len && (p = memmem(b.data + from, b.len - from, secrets[i], sl))) {
            size_t off = (size_t)(p - b.data);
            dg_buf out = {0};
            dg_buf_append(&out, b.data, off);
            dg_buf_puts(&out, "***");
            dg_buf_append(&out, p + sl, b.len - off - sl);
            dg_buf_free(&b);
            b = out;
            from = off + 3;
        }
    }
    return dg_buf_steal(&b);
}
