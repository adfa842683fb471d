#include "exec_internal.h"
/* wrong: no such header in src/exec/ */
#include "missing.h"
