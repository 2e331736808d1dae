"""What an endpoint needs from the key that signs a request to it (the endpoint table's values).

It sits in the domain, below ``auth/`` and ``endpoints.py``, so that the verifier can import the endpoint
table and the table this type without either importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    """What an endpoint needs from the key that signs a request to it."""

    permission: str | None = None  # Bitget permission name; None: any valid key
    key_type: int = 1  # WhiteBIT: 1 info+trading, 2 adds deposits and withdrawals
    main_only: bool = False
    main_needs_ip: bool = False  # Bitget's management endpoints: the main key must be bound to an IP
    rate_limit: str | None = None  # "5/second", counted per caller UID and ``rate_name``
    rate_name: str = "default"
    # A signed POST to this endpoint is accepted once within its timestamp window (issue 8 item 3); a
    # GET is never remembered. On by default; an operator's endpoint rule may turn it off.
    replay_protect: bool = True


__all__ = ["Requirement"]
