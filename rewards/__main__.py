"""`python -m rewards`: the registered rewards and the code sandbox's isolation on this machine."""

import json

from . import list_rewards
from .sandbox import isolation_report

print(json.dumps({"rewards": list_rewards(), "sandbox": isolation_report()}, indent=2))
