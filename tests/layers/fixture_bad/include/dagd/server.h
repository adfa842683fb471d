#pragma once
#include <uv.h>

#include "dagd/util.h"
