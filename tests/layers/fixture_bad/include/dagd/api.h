#pragma once
#include "dagd/server.h"
