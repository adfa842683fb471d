#include "dagd/sched.h"
