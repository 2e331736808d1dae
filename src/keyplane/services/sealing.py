"""The master key's side of the secrets: re-sealing every stored secret under a new key."""

from __future__ import annotations

from keyplane import crypto
from keyplane.services._context import ServiceContext


class SealingService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def reseal_secrets(self, new_master_key: crypto.MasterKey | None = None, *, only_stale: bool = False) -> int:
        """Re-seals stored secrets under the newest key of ``new_master_key`` (default: the keys in force) in one
        transaction; returns how many. With ``only_stale``, only those the newest key alone cannot open.

        ``new_master_key`` must still open the old seals (a key ring with the old key after the new one). Each
        row is replaced only if it still holds what was read, so a secret reset meanwhile is never overwritten.
        """
        ctx = self._ctx
        ring = new_master_key or ctx.master_key
        with ctx.store.transaction() as tx:
            count = 0
            # the current secrets, then the ones rotations replaced (still in, or past, their grace period)
            for previous in (False, True):
                for key_id, secret in tx.sealed_secrets(previous=previous):
                    if only_stale and ring.sealed_under_newest(secret, key_id):
                        continue
                    resealed = ring.seal(ring.unseal(secret, key_id), key_id)
                    count += tx.reseal(key_id, secret, resealed, previous=previous)
            tx.add_audit(
                action="masterkey.rotate", target="*", account_uid=None, actor_uid=None, actor_key=None,
                ip=None, detail={"resealed": count},
            )
        if new_master_key is not None and not ctx.master_keys.from_file:
            ctx.master_keys.replace(new_master_key)
        return count
