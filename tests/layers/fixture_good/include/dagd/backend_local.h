#pragma once
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/docker.h"
