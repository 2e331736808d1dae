"""Pure rules of keyplane: accounts, sub-accounts, keys, scopes, IP rules and limits. No I/O."""
