#pragma once
#include "dagd/exec.h"
