"""The run's machinery, below everything else (imports nothing of ugrad but
itself): checkpoints, the gradient log, metrics files, the workdir lock,
preemption, several processes as one run, paths, profiling, the compilation
cache and the host allocator."""
