#pragma once
#include "dagd/dag.h"
