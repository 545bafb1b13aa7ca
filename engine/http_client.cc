#include "engine/http_client.h"

namespace auterity {}  // implementation: see the connectors issue
