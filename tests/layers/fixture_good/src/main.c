#include "dagd/cli.h"
