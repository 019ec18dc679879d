"""Balancing policy, pure: the target choice (wheel, ring, least-connections), target health and
the retry rules. No sockets, no clock, no config: fastgw.proxy.forwarding applies them per request.
"""
