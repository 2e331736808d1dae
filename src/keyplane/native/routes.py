"""Every route of the native management API: method, path, scope, body and answer (the OpenAPI document is
generated from this table)."""

from __future__ import annotations

from keyplane.domain.tokens import Need
from keyplane.native import accounts, audit, keys
from keyplane.native.api import Route
from keyplane.native.schemas import (
    AccountListQuery,
    AccountPage,
    AccountView,
    AuditListQuery,
    AuditPage,
    CreateAccount,
    CreateKey,
    CreateSubAccount,
    Deleted,
    KeyCreated,
    KeyListQuery,
    KeyPage,
    KeyRotated,
    KeyView,
    RotateKey,
    SubAccountListQuery,
    SubAccountPage,
    SubAccountView,
    UpdateKey,
    UpdateSubAccount,
)

PREFIXES = ("/v1/accounts", "/v1/sub-accounts", "/v1/keys", "/v1/audit-events")
R_ACC, W_ACC, R_KEYS, W_KEYS = Need.READ_ACCOUNTS, Need.WRITE_ACCOUNTS, Need.READ_KEYS, Need.WRITE_KEYS

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts", "accounts.create", W_ACC, accounts.create_account, "Create a main account",
          AccountView, status=201, body=CreateAccount, idempotent=True),
    Route("GET", "/v1/accounts", "accounts.list", R_ACC, accounts.list_accounts, "List main accounts, oldest first",
          AccountPage, query=AccountListQuery),
    Route("GET", "/v1/accounts/{uid}", "accounts.get", R_ACC, accounts.get_account, "Show a main account",
          AccountView),
    Route("POST", "/v1/accounts/{uid}/freeze", "accounts.freeze", W_ACC, accounts.freeze_account,
          "Freeze a main account: its own keys stop verifying", AccountView),
    Route("POST", "/v1/accounts/{uid}/unfreeze", "accounts.unfreeze", W_ACC, accounts.unfreeze_account,
          "Unfreeze a main account", AccountView),
    Route("DELETE", "/v1/accounts/{uid}", "accounts.delete", W_ACC, accounts.delete_account,
          "Delete a main account that holds no keys and no sub-accounts", Deleted),
    Route("POST", "/v1/sub-accounts", "sub_accounts.create", W_ACC, accounts.create_sub_account,
          "Create a sub-account of a main account", SubAccountView, status=201, body=CreateSubAccount,
          idempotent=True),
    Route("GET", "/v1/sub-accounts", "sub_accounts.list", R_ACC, accounts.list_sub_accounts,
          "List sub-accounts, oldest first", SubAccountPage, query=SubAccountListQuery),
    Route("GET", "/v1/sub-accounts/{uid}", "sub_accounts.get", R_ACC, accounts.get_sub_account,
          "Show a sub-account", SubAccountView),
    Route("PATCH", "/v1/sub-accounts/{uid}", "sub_accounts.update", W_ACC, accounts.update_sub_account,
          "Rename a sub-account or change its permissions", SubAccountView, body=UpdateSubAccount),
    Route("POST", "/v1/sub-accounts/{uid}/freeze", "sub_accounts.freeze", W_ACC, accounts.freeze_sub_account,
          "Freeze a sub-account: its keys stop verifying", SubAccountView),
    Route("POST", "/v1/sub-accounts/{uid}/unfreeze", "sub_accounts.unfreeze", W_ACC,
          accounts.unfreeze_sub_account, "Unfreeze a sub-account", SubAccountView),
    Route("DELETE", "/v1/sub-accounts/{uid}", "sub_accounts.delete", W_ACC, accounts.delete_sub_account,
          "Delete a sub-account and its keys", Deleted),
    Route("POST", "/v1/keys", "keys.create", W_KEYS, keys.create_key,
          "Create a key of a main account or a sub-account; its secret is in this answer only", KeyCreated,
          status=201, body=CreateKey, idempotent=True),
    Route("GET", "/v1/keys", "keys.list", R_KEYS, keys.list_keys, "List keys, newest first", KeyPage,
          query=KeyListQuery),
    Route("GET", "/v1/keys/{id}", "keys.get", R_KEYS, keys.get_key, "Show a key (never its secret)", KeyView),
    Route("PATCH", "/v1/keys/{id}", "keys.update", W_KEYS, keys.update_key,
          "Change a key's label, permissions, IP allowlist or expiry", KeyView, body=UpdateKey),
    Route("POST", "/v1/keys/{id}/disable", "keys.disable", W_KEYS, keys.disable_key,
          "Turn a key off; every server refuses it within 0.25 s", KeyView),
    Route("POST", "/v1/keys/{id}/enable", "keys.enable", W_KEYS, keys.enable_key, "Turn a key on again", KeyView),
    Route("DELETE", "/v1/keys/{id}", "keys.delete", W_KEYS, keys.delete_key, "Delete a key", Deleted),
    Route("POST", "/v1/keys/{id}/rotate", "keys.rotate", W_KEYS, keys.rotate_key,
          "Give a key a new secret; the replaced one keeps verifying for grace_seconds (0 to 7 days)", KeyRotated,
          body=RotateKey, idempotent=True),
    Route("GET", "/v1/audit-events", "audit.list", Need.READ_AUDIT, audit.list_events,
          "List audit events, newest first", AuditPage,
          query=AuditListQuery),
)
