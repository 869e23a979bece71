// Only the parts of hiredis that 0.14 (Debian 12) and 1.x share: the RESP2 reply reader
// with its default reply objects. Macros with arguments are wrapped as inline functions
// because Swift cannot call them.
#ifndef SLUICE_CHIREDIS_SHIM_H
#define SLUICE_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>

static inline const char *sluice_reader_error(redisReader *reader) {
    return reader->errstr;
}

static inline int sluice_reader_has_error(redisReader *reader) {
    return reader->err != 0;
}

// hiredis keeps up to `maxbuf` bytes of spent buffer around; 0 means "never shrink",
// which keeps the hot path free of reallocations on a connection that sees large values.
static inline void sluice_reader_set_maxbuf(redisReader *reader, size_t maxbuf) {
    reader->maxbuf = maxbuf;
}
#endif
