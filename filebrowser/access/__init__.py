"""Who may do what: accounts, sessions and tokens, the path jail, login limits."""

from .auth import AdminUser, Authenticator, CurrentUser, Principal, current_user
from .jail import Jail, Scope, check_name, clean
from .ratelimit import FailureLimit
from .users import User, UserStore

__all__ = ["AdminUser", "Authenticator", "CurrentUser", "FailureLimit", "Jail", "Principal",
           "Scope", "User", "UserStore", "check_name", "clean", "current_user"]
