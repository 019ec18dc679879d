"""Code two or more plugins share, which is no plugin itself: the client address as Kong computes
it, the Redis client. A plugin never imports another plugin; both import from here."""
