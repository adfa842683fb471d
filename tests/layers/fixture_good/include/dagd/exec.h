#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/sched.h"
#include "dagd/store.h"
