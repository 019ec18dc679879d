"""Where a request goes upstream and when it may go there again: targets and the retry policy.

Beside the wire: the exchange asks a target for a connection; the policy here decides retries.
"""
