"""Account trust: how much each listener's feedback counts in training (resistance to fake accounts).

See docs/fake-accounts.md for the attack it answers, how it was chosen and its limits.
"""
