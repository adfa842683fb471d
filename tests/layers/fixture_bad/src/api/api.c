#include <microhttpd.h>
/* wrong: only log talks to systemd */
#include <systemd/sd-daemon.h>

#include "dagd/api.h"
