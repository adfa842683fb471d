#include <microhttpd.h>

#include "dagd/api.h"
