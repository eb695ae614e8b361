"""`kubectl llmquota`: the kubectl plugin that answers "who spends, and why is this key refused".

It reads what the operator writes (statuses of Teams and ApiKeys, their Budgets, the
global budget named in the operator's Deployment) through the kubeconfig, as kubectl
does, and never talks to Redis: what it shows is as fresh as the last status sync.
The decisions (which scope refuses a key, what would lift it) are pure functions over
the objects as read; `cluster` is the only module that does I/O.
"""

from llmquota.kubectl_plugin.command import main

__all__ = ["main"]
