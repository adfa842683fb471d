/* api/session — the web UI's sign-in sessions (see docs/ui.md, Sessions): signing in with
 * the API token makes a session whose id travels in an HttpOnly, SameSite=Strict cookie,
 * with a second random value, the CSRF token, that the page must send back in an
 * X-CSRF-Token header on every request that changes state. Both are 32 random bytes from
 * the kernel, held in memory only (a restart signs everybody out), compared in constant
 * time, and expire DG_API_SESSION_TTL_MS after sign-in. The table is fixed in size; when
 * it is full the session closest to expiry gives way. */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define COOKIE_NAME "dagd_session"

bool dg__api_const_eq(const char *a, size_t alen, const char *b, size_t blen) {
    /* Runs over the expected value's length whatever the candidate is, so timing tells
     * nothing about how much of it matched. */
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++) {
        unsigned char ca = i < alen ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(ca ^ (unsigned char)b[i]);
    }
    return diff == 0;
}

static bool fill_random(char dst[DG_API_SESSION_HEX + 1]) {
    _cleanup_free_ char *hex = NULL;
    if (dg_random_hex(DG_API_SESSION_HEX / 2, &hex) < 0) return false;
    memcpy(dst, hex, DG_API_SESSION_HEX + 1);
    return true;
}

dg__api_session *dg__api_session_new(dg_api *a) {
    int64_t now = dg_now_ms();
    dg__api_session *slot = NULL;
    for (size_t i = 0; i < DG_API_SESSION_MAX; i++) {
        dg__api_session *s = &a->sessions[i];
        if (s->expires_ms <= now) {
            slot = s;
            break;
        }
        if (!slot || s->expires_ms < slot->expires_ms) slot = s;
    }
    if (!fill_random(slot->id) || !fill_random(slot->csrf)) {
        memset(slot, 0, sizeof(*slot));
        return NULL;
    }
    slot->expires_ms = now + DG_API_SESSION_TTL_MS;
    return slot;
}

dg__api_session *dg__api_session_find(dg_api *a, struct MHD_Connection *c) {
    const char *v = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE_NAME);
    if (!v) return NULL;
    size_t n = strlen(v);
    int64_t now = dg_now_ms();
    dg__api_session *found = NULL;
    /* every live slot is compared, so the time taken does not depend on which matched */
    for (size_t i = 0; i < DG_API_SESSION_MAX; i++) {
        dg__api_session *s = &a->sessions[i];
        if (s->expires_ms <= now) continue;
        if (dg__api_const_eq(v, n, s->id, DG_API_SESSION_HEX)) found = s;
    }
    return found;
}

bool dg__api_session_csrf_ok(const dg__api_session *s, struct MHD_Connection *c) {
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    return v && dg__api_const_eq(v, strlen(v), s->csrf, DG_API_SESSION_HEX);
}

void dg__api_session_end(dg__api_session *s) { memset(s, 0, sizeof(*s)); }

char *dg__api_session_cookie(const dg__api_session *s) {
    if (!s) return xstrdup(COOKIE_NAME "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    return xasprintf(COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d", s->id,
                     (int)(DG_API_SESSION_TTL_MS / 1000));
}
