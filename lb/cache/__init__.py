"""The response cache's shell: its in-process tier, the shared tier through a `CacheStore`,
background refreshes, and purges (the filter is lb.filters.cache; the rules lb.core.cache_*)."""
