#include "dagd/server.h"
/* wrong: exec's private header belongs to exec */
#include "../exec/exec_internal.h"
