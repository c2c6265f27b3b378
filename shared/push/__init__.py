"""Push sending: send requests -> ``message_schedule`` (``schedule``), the scheduler tick (``tick``), policy, claims,
typed provider credentials and one adapter per provider (``providers``).

Deliberately empty of imports: ``shared.config`` reads ``shared.push.names``, and must not load the adapters.
"""
