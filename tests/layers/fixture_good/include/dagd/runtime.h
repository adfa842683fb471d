#pragma once
#include "dagd/config.h"
#include "dagd/exec.h"
