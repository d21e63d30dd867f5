/*
 * calibrate.h - the calibration table's JSON form (private to extract/):
 * {"method": "...", "images": N, "ranges": [[tensor, lo, hi], ...]}, in the
 * extractor descriptor under "calibration" (extract.c).
 */
#ifndef FC_CALIBRATE_H
#define FC_CALIBRATE_H

#include <jansson.h>

#include "featcache/engine.h"

/* A new JSON object for c (NULL when out of memory). */
json_t *fci_calib_json(const fc_calib *c);

/* The table a descriptor's "calibration" object j holds: 0 and *out (free
 * with fc_calib_free), or FC_ERR_CORRUPT / FC_ERR_NOMEM with err saying why. */
int fci_calib_parse(fc_calib **out, const json_t *j, char *err, size_t errcap);

#endif /* FC_CALIBRATE_H */
