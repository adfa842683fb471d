#pragma once
#include <jansson.h>

#include "dagd/cron.h"
#include "dagd/util.h"
