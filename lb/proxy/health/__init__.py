"""Health checks: probes, verdicts, and the channel that shares them between processes."""
