/* exec/redact — secrets out of log lines. */
#include <string.h>

#include "exec_internal.h"

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
