#include "dagd/server.h"
