// The system libraries under Sources/CQuic (found through pkg-config: libngtcp2,
// libngtcp2_crypto_gnutls, gnutls). Swift code never calls them directly: CQuic wraps them.
#include <ngtcp2/version.h>
