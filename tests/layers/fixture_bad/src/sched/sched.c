#include <uv.h>
/* wrong: only the store talks to SQLite */
#include <sqlite3.h>

#include "dagd/sched.h"
