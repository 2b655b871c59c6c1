"""Outbound calls: the agent dials out (`POST /calls`, `gateway dial`, `gateway campaign run`).

The rules are pure and tested without sockets: where a call may go (`destinations`), what a request's
variables may hold and how they fill an agent's templates (`variables`), and how a campaign is paced
(`campaign`). Who answered a call is a rule of the call itself: `gateway.call.answering`.
"""
