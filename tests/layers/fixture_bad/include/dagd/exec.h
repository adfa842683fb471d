#pragma once
#include "dagd/docker.h" /* wrong: exec reaches the engine only through a backend */
#include "dagd/sched.h"
