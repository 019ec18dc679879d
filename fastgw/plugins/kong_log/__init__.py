"""What Kong's logging plugins share, and no plugin of its own: Kong's log record (record.py, the
reference; line.py, the fast JSON line), Kong's queue (queue.py) and their config (settings.py).

file-log, http-log and tcp-log import it; it imports no plugin.
"""
