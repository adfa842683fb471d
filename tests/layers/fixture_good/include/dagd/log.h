#pragma once
#include "dagd/util.h"
