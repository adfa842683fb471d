#include "dagd/backend_local.h"
#include "dagd/runtime.h"
