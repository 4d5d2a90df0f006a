#ifndef AGENTD_CAGENTSYSTEM_H
#define AGENTD_CAGENTSYSTEM_H

/// Raises glibc's mmap and trim thresholds (see Network/Host/MemoryTuning.swift). Returns 1 when
/// both settings were applied, 0 otherwise (and on libcs without mallopt).
int agentd_tune_malloc(int mmap_threshold, int trim_threshold);

#endif
