#pragma once
#include "dagd/runtime.h"
