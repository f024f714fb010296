"""Policies: YAML rules that IT admins read, test and reload.

- ``rules.py`` reads and checks the files (``load``), the rule and action types;
- ``conditions.py`` is the vocabulary of ``when``;
- ``facts.py`` builds what the rules see of a message;
- ``lookalike.py`` finds domains that imitate ours;
- ``engine.py`` evaluates the rules in order (``evaluate``).
"""

from mailgw.policy.engine import Outcome, evaluate
from mailgw.policy.rules import PolicySet, Rule, load

__all__ = ["Outcome", "PolicySet", "Rule", "evaluate", "load"]
