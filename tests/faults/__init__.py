"""The fault suite: the scenarios F1-F25 of the reliability plan, each against real processes, real NATS
and real PostgreSQL, with crash points (`fleethub.shared.faults`) switched on where a scenario names one."""
