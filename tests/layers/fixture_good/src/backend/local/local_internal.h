#pragma once
#include "dagd/backend_local.h"
