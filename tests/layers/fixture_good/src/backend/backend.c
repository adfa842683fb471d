#include "dagd/backend.h"
