/*
 * train.h - the umbrella over train/'s headers: the projection head, the
 * losses, the optimizers and schedules, the sampler, the retrieval metrics
 * and the trainer. Include the one you need, or this one for all of them.
 */
#ifndef FEATCACHE_TRAIN_H
#define FEATCACHE_TRAIN_H

#include "head.h"
#include "loss.h"
#include "metrics.h"
#include "optim.h"
#include "sampler.h"
#include "trainer.h"

#endif /* FEATCACHE_TRAIN_H */
