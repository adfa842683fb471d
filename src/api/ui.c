/* api/ui — the web UI's files (src/api/ui/), built into the binary with the assembler's
 * .incbin so that one file stays the whole program, served at /ui/ (see docs/ui.md). The
 * page itself talks only to the REST API. */
#include <string.h>

#include "internal.h"

#define ASSET(sym, file)                                                                                   \
    ".section .rodata\n"                                                                                   \
    ".global " #sym "\n" #sym ":\n"                                                                        \
    ".incbin \"" file "\"\n"                                                                               \
    ".global " #sym "_end\n" #sym "_end:\n"                                                                \
    ".previous\n"

__asm__(ASSET(dg__ui_index, "src/api/ui/index.html") ASSET(dg__ui_js, "src/api/ui/app.js")
            ASSET(dg__ui_css, "src/api/ui/app.css"));

extern const char dg__ui_index[], dg__ui_index_end[], dg__ui_js[], dg__ui_js_end[], dg__ui_css[],
    dg__ui_css_end[];

static enum MHD_Result serve(struct MHD_Connection *c, const char *ctype, const char *start, const char *end) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)(end - start), (void *)start, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result dg__api_ui_index(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    return serve(c, "text/html; charset=utf-8", dg__ui_index, dg__ui_index_end);
}

enum MHD_Result dg__api_ui_js(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    return serve(c, "text/javascript; charset=utf-8", dg__ui_js, dg__ui_js_end);
}

enum MHD_Result dg__api_ui_css(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    return serve(c, "text/css; charset=utf-8", dg__ui_css, dg__ui_css_end);
}

enum MHD_Result dg__api_ui_root(dg_api *a, struct MHD_Connection *c, dg__api_req *r) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, "/ui/");
    enum MHD_Result ret = MHD_queue_response(c, 302, resp);
    MHD_destroy_response(resp);
    return ret;
}
