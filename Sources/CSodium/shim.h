#ifndef AGENTD_CSODIUM_SHIM_H
#define AGENTD_CSODIUM_SHIM_H
#include <sodium.h>
#endif
