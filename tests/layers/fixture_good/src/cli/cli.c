#include <dagd/api.h>

#include "dagd/cli.h"
