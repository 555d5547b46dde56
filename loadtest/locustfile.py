"""What `locust -f` loads: the msgctl protocol user and the profile's load shape.

Run through `msgctl load run PROFILE`, which sets MSGCTL_LOAD_CONFIG; see loadtest.config
for running Locust by hand.
"""

from loadtest.user import MsgctlUser, ProfileShape

__all__ = ["MsgctlUser", "ProfileShape"]
