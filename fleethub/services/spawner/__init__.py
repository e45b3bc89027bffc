"""The spawner owns the actual state of servers (`server_states`): it takes spawn and stop commands from
the shared work queue, claims each server with a lease in PostgreSQL so that one worker at a time acts
on it, starts, polls and stops servers through a pluggable backend, keeps the route table in step, and
announces every state change through the transactional outbox. Any number of workers may run; when one
dies, the others adopt its servers once its leases expire.
"""
