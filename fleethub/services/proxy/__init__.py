"""The proxy owns the public entry point: every URL of the hub goes through a proxy node.

A node holds the whole route table in memory, pushed to it by a watch of the route bucket, and the
live auth/api replicas from the registry bucket. It forwards `/user/<name>/…` to user servers by
longest prefix, `/hub/…` round-robin to auth or api replicas, streams HTTP/1.1 bodies and websockets
both ways on a raw asyncio protocol (httptools, uvloop) with pooled keep-alive upstream connections,
and reports per-route activity in batches. It needs NATS only, and any number of nodes may run.
"""
