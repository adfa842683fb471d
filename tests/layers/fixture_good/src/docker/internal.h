#pragma once
#include <curl/curl.h>

#include "dagd/docker.h"
