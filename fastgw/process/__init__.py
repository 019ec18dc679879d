"""The process model: the supervisor and its workers, their control sockets, open-file limits."""
