"""The password accounts, moved to `fleethub.shared.accounts` (the api and `fleethub up` use them too).

This name stays for code that imports the old path (tests/support).
"""

from __future__ import annotations

from fleethub.shared.accounts import check_password, create_account, ensure_user, set_password

__all__ = ["check_password", "create_account", "ensure_user", "set_password"]
