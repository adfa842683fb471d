/* wrong: the server may not use the API above it */
#include "dagd/api.h"
#include "dagd/server.h"
