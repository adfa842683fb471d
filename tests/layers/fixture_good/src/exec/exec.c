/* What is commented out does not count:
#include "dagd/docker.h"
#include <curl/curl.h>
*/
// #include "../docker/internal.h"
#include <jansson.h>

#include "dagd/exec.h"
#include "dagd/log.h"
#include "dagd/tmpl.h"

static const char *not_an_include = "#include <sqlite3.h>";
