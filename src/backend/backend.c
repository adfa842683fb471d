/* backend — what every backend shares (see include/dagd/backend.h). */
#include "dagd/backend.h"

void dg_job_infos_free(dg_job_info *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        json_decref(v[i].labels);
    }
    free(v);
}
