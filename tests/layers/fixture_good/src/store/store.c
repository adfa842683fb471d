#include <sqlite3.h>

#include "dagd/store.h"
