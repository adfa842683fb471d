#include "dagd/log.h"
#include "local_internal.h"
