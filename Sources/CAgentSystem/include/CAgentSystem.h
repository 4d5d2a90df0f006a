#ifndef AGENTD_CAGENTSYSTEM_H
#define AGENTD_CAGENTSYSTEM_H

/// Raises glibc's mmap and trim thresholds (see Network/Host/MemoryTuning.swift). Returns 1 when
/// both settings were applied, 0 otherwise (and on libcs without mallopt).
int agentd_tune_malloc(int mmap_threshold, int trim_threshold);

/// Returns the heap's free memory to the system (glibc's malloc_trim(0)), so that a resident-size
/// measurement that follows counts only memory in use (agent-sim's memory per node). Returns 1 when
/// memory was released, 0 otherwise (and on libcs without malloc_trim).
int agentd_malloc_trim(void);

#endif
