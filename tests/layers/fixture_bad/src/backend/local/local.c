/* wrong: a backend reports to exec through callbacks, it never calls exec */
#include "dagd/exec.h"
