"""The wire layer: sockets, httptools parsing, framing, keep-alive, flow control, limits, timeouts.

It knows nothing of routes, plugins or OAuth; a handler callable decides what each request gets.
"""
