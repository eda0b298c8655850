"""Queue offload's shell: the consumers that run jobs (in `lb worker`, or inside each `lb run`
worker when there is no Redis), the `lb worker` command, and the queue stats publisher.

The decisions are in lb.core.offload; accepting a request and answering about a job are the
filters lb.filters.offload and lb.filters.jobs; the queues themselves are lb.stores.
"""
