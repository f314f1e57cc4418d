"""`python -m rewards`: the registered rewards, open-r1's and TRL's names for them, and the code sandbox's isolation
on this machine."""

import json

from . import list_rewards
from .aliases import ALIASES
from .sandbox import isolation_report

aliases = {alias: name for alias, (name, _) in ALIASES.items()}
print(json.dumps({"rewards": list_rewards(), "aliases": aliases, "sandbox": isolation_report()}, indent=2))
