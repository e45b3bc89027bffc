"""The culler owns the idle policy: it stops servers idle longer than `culler.timeout` seconds.

It reads each running server's last activity (recorded by the api from the proxies' activity
batches, and seen live on the bus) and publishes stop commands; it writes no table.
"""
