"""The proxy owns the public entry point: every URL of the hub goes through a proxy node.

A node holds the whole route table in memory, pushed to it by a watch of the route bucket, and the
live auth/api replicas from the registry bucket; it forwards `/user/<name>/…` to user servers,
`/hub/…` to auth or api replicas, and reports per-route activity in batches. Any number of nodes run.
"""
